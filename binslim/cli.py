"""The ``binslim`` command: parse, call the library, print. No logic of its own.

Only what every run needs is imported here; each stage is imported when a command reaches it, so that
``binslim --version`` and a plain strip start close to the interpreter's own start-up.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ._version import __version__
from .cliargs import CONST, FLAG, MULTIPLE, Command, Option, UsageError
from .cliargs import choice as _choice
from .cliargs import existing_file as _existing_file
from .cliargs import int_range as _int_range
from .cliargs import name_value as _name_value
from .cliargs import not_a_folder as _not_a_folder
from .cliargs import number as _number
from .cliargs import positive_float as _positive_float
from .errors import BinslimError
from .interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, interrupted, sigterm_as_interrupt

if TYPE_CHECKING:
    from .slim import SlimResult

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3
__all__ = ["BUNDLE", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "INSPECT", "SLIM", "main"]

SLIM_OPTIONS = (
    Option(["-o", "--output"], "output", "Write here instead of in place (one input).", metavar="PATH"),
    Option(
        ["--strip-all"],
        "level",
        "Remove symbols, debug info, .comment and unloaded notes (default).",
        how=CONST,
        const="all",
        default="all",
    ),
    Option(["--strip-debug"], "level", "Remove debug sections only.", how=CONST, const="debug"),
    Option(
        ["--strip-section-headers"],
        "level",
        "Also drop the section header table and all unmapped bytes, as sstrip does; gdb, objdump,"
        " patchelf and libbacktrace no longer work on the result.",
        how=CONST,
        const="sections",
    ),
    Option(
        ["--keep-debug"],
        "keep_debug",
        "First write the debug information to FILE (as objcopy --only-keep-debug does), then link"
        " the result to it with .gnu_debuglink (one input).",
        convert=_not_a_folder,
        metavar="FILE",
    ),
    Option(
        ["--force"], "force", "Drop the section headers of shared libraries too.", how=FLAG, default=False
    ),
    Option(
        ["--keep-section"],
        "keep_sections",
        "Keep matching sections.",
        how=MULTIPLE,
        default=(),
        metavar="GLOB",
    ),
    Option(
        ["--remove-section"],
        "remove_sections",
        "Also remove matching (unloaded) sections.",
        how=MULTIPLE,
        default=(),
        metavar="GLOB",
    ),
    Option(
        ["-p", "--preserve-dates"],
        "preserve_dates",
        "Keep access and modification times.",
        how=FLAG,
        default=False,
    ),
    Option(
        ["--upx"],
        "upx",
        "Pack the stripped binary with UPX. [env var: BINSLIM_UPX=1; any other value names the UPX program]",
        how=FLAG,
        default=False,
        env=False,  # BINSLIM_UPX is also the UPX program's path: read by hand (envvars.is_set)
    ),
    Option(
        ["--upx-method"],
        "upx_method",
        "UPX method; auto picks the smallest within --max-startup-ms.",
        convert=_choice("nrv", "lzma", "auto"),
        metavar="[nrv|lzma|auto]",
    ),
    Option(
        ["--upx-level"], "upx_level", "UPX compression level 1..9.", convert=_int_range(1, 9), metavar="N"
    ),
    Option(
        ["--upx-args"],
        "upx_args",
        "Extra UPX arguments (split like a shell, never run by one).",
        default="",
        metavar="ARGS",
    ),
    Option(
        ["--upx-timeout"],
        "upx_timeout",
        "Seconds before a UPX run is killed.",
        convert=_positive_float,
        default=600.0,
        show_default=True,
        metavar="S",
    ),
    Option(
        ["--upx-force"],
        "upx_force",
        "Pack even shared libraries, objects and foreign binaries.",
        how=FLAG,
        default=False,
    ),
    Option(
        ["--upx-required"], "upx_required", "Fail (exit 1) when UPX does not pack.", how=FLAG, default=False
    ),
    Option(
        ["--max-startup-ms"],
        "max_startup_ms",
        "Startup latency budget for --upx-method auto.",
        convert=_number,
        metavar="MS",
    ),
    Option(
        ["--verify"],
        "verify",
        "Check and run the result against the original before installing it.",
        how=FLAG,
        negation="--no-verify",
        default=True,
        show_default=True,
    ),
    Option(
        ["--verify-args"],
        "verify_args",
        "Arguments for the verification runs ('' for none).",
        default="--version",
        show_default=True,
        metavar="ARGS",
    ),
    Option(
        ["--verify-cmd"],
        "verify_cmd",
        "Script that gets the binary's path and exercises it.",
        convert=_existing_file,
        metavar="FILE",
    ),
    Option(
        ["--verify-timeout"],
        "verify_timeout",
        "Seconds before a verification run is killed.",
        convert=_positive_float,
        default=10.0,
        show_default=True,
        metavar="S",
    ),
    Option(
        ["--verify-runs"],
        "verify_runs",
        "Timed runs per side for the latency figures.",
        convert=_int_range(1, 1000),
        default=9,
        show_default=True,
        metavar="N",
    ),
    Option(
        ["--verify-env"],
        "verify_env",
        "Add NAME=VALUE to the verification runs' environment (e.g. LD_LIBRARY_PATH=DIR); repeatable; the"
        " variable takes NAME=VALUE words separated by spaces.",
        how=MULTIPLE,
        convert=_name_value,
        metavar="NAME=VALUE",
    ),
    Option(
        ["-r", "--recursive"],
        "recursive",
        "Slim every ELF file under each INPUT folder, in place; symlinks are not followed.",
        how=FLAG,
        default=False,
    ),
    Option(
        ["-j", "--jobs"],
        "jobs",
        "Files slimmed at once with -r (default: the CPUs available).",
        convert=_int_range(1),
        metavar="N",
    ),
    Option(
        ["--dry-run"],
        "dry_run",
        "Report what would be removed and saved; write nothing.",
        how=FLAG,
        default=False,
    ),
    Option(["--json"], "as_json", "Print the JSON report on stdout, nothing else.", how=FLAG, default=False),
)

SLIM = Command(
    "binslim",
    "Strip (and optionally pack and verify) ELF binaries. Without -o, each INPUT is rewritten in place.\n\n"
    "Every option can also be set as BINSLIM_<OPTION> in the environment (--upx-level: BINSLIM_UPX_LEVEL);\n"
    "the command line wins.",
    SLIM_OPTIONS,
    [("inputs", "INPUT", "+")],
    usage="%(prog)s [OPTIONS] INPUT...",
    epilog="binslim inspect FILE [--json] shows what makes FILE big and what each level saves.\n"
    "binslim bundle PROG... -o ROOT builds the smallest root filesystem in which PROG still runs.",
    version=__version__,
)

INSPECT = Command(
    "binslim inspect",
    "What makes FILE big: bytes by kind, the largest sections and symbols, and what each binslim level\n"
    "(and UPX) would save.",
    (
        Option(
            ["--top"],
            "top",
            "How many of the largest sections and symbols to list.",
            convert=_int_range(1, 10000),
            default=10,
            show_default=True,
            metavar="N",
        ),
        Option(["--json"], "as_json", "Print the report as JSON.", how=FLAG, default=False),
    ),
    [("path", "FILE", None)],
    usage="%(prog)s [--top N] [--json] FILE",
)

BUNDLE = Command(
    "binslim bundle",
    "The smallest root filesystem in which each PROG (dynamically linked) still runs: its loader, its\n"
    "libraries and the symlinks the loader looks for, every ELF file slimmed, each PROG run inside the root\n"
    "and compared with the original before ROOT (a folder, or ROOT.tar) is written.",
    (
        Option(
            ["-o", "--output"],
            "output",
            "The root: a new or empty folder, or a file ending in .tar.",
            metavar="ROOT",
            env=False,
        ),
        Option(
            ["--include"],
            "includes",
            "An extra file or folder (its ELF dependencies too); repeatable.",
            how=MULTIPLE,
            metavar="PATH",
            env=False,
        ),
        Option(
            ["--with"],
            "with_",
            "Comma-separated: certs, tz, nss, gconv.",
            how=MULTIPLE,
            metavar="LIST",
            env=False,
        ),
        Option(
            ["--gconv"],
            "gconv_charsets",
            "Only the gconv modules for this charset (ISO-8859-15, CP1252...), not all of them; repeatable;"
            " implies --with gconv.",
            how=MULTIPLE,
            metavar="CHARSET",
            env=False,
        ),
        Option(
            ["--no-auto-dlopen"],
            "no_auto",
            "Do not add libgcc_s or the NSS files when the imported symbols call for them.",
            how=FLAG,
            default=False,
            env=False,
        ),
        Option(
            ["--library-path"],
            "library_path",
            "Search these folders as LD_LIBRARY_PATH would (colon-separated).",
            metavar="DIRS",
            env=False,
        ),
        Option(
            ["--keep-section-headers"],
            "keep_section_headers",
            "Strip at the default level instead of cutting every ELF file to what the loader maps.",
            how=FLAG,
            default=False,
            env=False,
        ),
        Option(["--upx"], "upx", "Pack the programs with UPX.", how=FLAG, default=False, env=False),
        Option(
            ["--verify"],
            "verify",
            "Run each PROG inside the root and compare it with the original (default on).",
            how=FLAG,
            default=True,
            negation="--no-verify",
            env=False,
        ),
        Option(
            ["--verify-args"],
            "verify_args",
            "Arguments for the runs (default --version; '' for none).",
            default="--version",
            metavar="ARGS",
            env=False,
        ),
        Option(
            ["--verify-cmd"],
            "verify_cmd",
            "A script given the program's path (on the root side, a launcher that runs it inside the root).",
            convert=_existing_file,
            metavar="SCRIPT",
            env=False,
        ),
        Option(
            ["--verify-timeout"],
            "verify_timeout",
            "Seconds per run.",
            convert=_positive_float,
            default=10.0,
            metavar="S",
            env=False,
        ),
        Option(
            ["--verify-runs"],
            "verify_runs",
            "Timed runs per side.",
            convert=_int_range(1, 1000),
            default=3,
            metavar="N",
            env=False,
        ),
        Option(
            ["--json"],
            "as_json",
            "Print the JSON report on stdout, nothing else.",
            how=FLAG,
            default=False,
            env=False,
        ),
    ),
    [("programs", "PROG", "+")],
    usage="%(prog)s PROG... -o ROOT [OPTIONS]",
)

# The command's options that are not slim()'s.
_COMMAND_ONLY = ("inputs", "output", "as_json", "recursive", "jobs", "verify_args")


def main(args: Sequence[str] | None = None, prog_name: str | None = None) -> NoReturn:
    """The ``binslim`` console script: ``binslim INPUT...`` slims; ``binslim inspect FILE`` reports (a file
    named inspect: ./inspect)."""
    del prog_name  # always "binslim"; accepted for the console script and python -m
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv[:1] == ["inspect"]:
            code = _inspect(argv[1:])
        else:
            with sigterm_as_interrupt():
                code = _command(argv)
    except KeyboardInterrupt as exc:
        # Outside the work itself (a stage being imported, the report being printed): the commands say
        # more where they can.
        what, code = interrupted(exc)
        _echo(f"binslim: {what}", err=True)
    sys.exit(code)


def _command(argv: list[str]) -> int:
    if argv[:1] == ["bundle"]:
        return _bundle(argv[1:])
    try:
        values = SLIM.parse(argv)
        return _slim_command(values)
    except UsageError as exc:
        SLIM.usage_error(str(exc))
    except BrokenPipeError:
        _stdout_gone()
        _echo("error: standard output closed; the report could not be written", err=True)
        return EXIT_ERROR


def _inspect(argv: list[str]) -> int:
    try:
        values = INSPECT.parse(argv)
        if os.path.isdir(values["path"]):
            raise UsageError(f"{values['path']!r} is a directory")
    except UsageError as exc:
        INSPECT.usage_error(str(exc))
    from .inspect import format_inspection, inspect, to_json

    try:
        inspection = inspect(values["path"], top=values["top"])
    except BinslimError as exc:
        _echo(f"error: {exc}", err=True)
        return exc.exit_code
    _echo(to_json(inspection) if values["as_json"] else format_inspection(inspection))
    return EXIT_OK


def _bundle(argv: list[str]) -> int:
    import shlex

    try:
        values = BUNDLE.parse(argv)
        if values["output"] is None:
            raise UsageError("-o/--output ROOT is required")
        if values["output"] == "":  # an unset shell variable; as a folder it would be the current one
            raise UsageError("-o/--output: the path is empty")
        verify_args = tuple(shlex.split(values["verify_args"]))
    except (UsageError, ValueError) as exc:
        BUNDLE.usage_error(str(exc))
    from .bundler import bundle as make_bundle
    from .bundler import render_text, to_json_bytes

    with_ = tuple(word for item in values["with_"] or () for word in item.split(",") if word)
    try:
        result = make_bundle(
            values["programs"],
            values["output"],
            includes=values["includes"] or (),
            with_=with_,
            gconv_charsets=values["gconv_charsets"] or (),
            auto_dlopen=not values["no_auto"],
            library_path=tuple(d for d in (values["library_path"] or "").split(":") if d),
            keep_section_headers=values["keep_section_headers"],
            upx=values["upx"],
            verify=values["verify"],
            verify_args=verify_args,
            verify_cmd=values["verify_cmd"],
            verify_timeout=values["verify_timeout"],
            verify_runs=values["verify_runs"],
        )
    except BinslimError as exc:
        _echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what, code = interrupted(exc)
        _echo(f"binslim: {what}; nothing was installed", err=True)
        return code
    if values["as_json"]:
        sys.stdout.buffer.write(to_json_bytes(result) + b"\n")
        sys.stdout.flush()
    else:
        _echo(render_text(result))
    return EXIT_OK


def _echo(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _slim_command(values: dict[str, Any]) -> int:
    import shlex

    inputs, output = values["inputs"], values["output"]
    for flag, path in (("-o/--output", output), ("--keep-debug", values["keep_debug"])):
        if path == "":  # an unset shell variable: no file to name, and "" would mean the current folder
            raise UsageError(f"{flag}: the path is empty")
    if output is not None and len(inputs) != 1:
        raise UsageError("-o/--output takes exactly one input")
    if values["keep_debug"] is not None and (len(inputs) != 1 or values["recursive"]):
        raise UsageError("--keep-debug takes exactly one input")
    try:
        verify_args = tuple(shlex.split(values["verify_args"]))
    except ValueError as exc:
        raise UsageError(f"--verify-args: {exc}") from exc
    from . import envvars

    if values["upx"] is False:
        values["upx"] = envvars.is_set(os.environ, "--upx")
    values["verify_env"] = dict(values["verify_env"] or ()) or None
    options = {name: value for name, value in values.items() if name not in _COMMAND_ONLY}
    if values["recursive"]:
        return _slim_tree(inputs, values, verify_args, options)
    return _slim_files(inputs, output, values["as_json"], verify_args, options)


def _slim_files(
    inputs: Sequence[str],
    output: str | None,
    as_json: bool,
    verify_args: tuple[str, ...],
    options: dict[str, Any],
) -> int:
    """Each input on its own: one line each (or the JSON report), a summary for several. The exit code is
    the worst of them."""
    from .options import SlimOptions
    from .slim import failed_result, try_slim

    try:
        slim_options = SlimOptions(verify_args=verify_args, **options).checked()
    except BinslimError as exc:  # a combination slim() refuses (--upx-method auto without a budget)
        _echo(f"error: {exc}", err=True)
        if as_json:
            _print_report([failed_result(path, output, str(exc)) for path in inputs], as_json=True)
        return exc.exit_code
    results: list[SlimResult] = []
    exit_code = EXIT_OK
    # -o /dev/stdout: the binary goes to standard output, so the report goes to standard error.
    report_to_stderr = output is not None and _writes_to_stdout(output)
    for path in inputs:
        error: BinslimError | None
        if os.path.isdir(path):
            error = BinslimError(f"{path}: is a directory; use -r to slim every ELF file under it")
            result = failed_result(path, output, str(error))
        else:
            try:
                result, error = try_slim(path, output, slim_options)
            except KeyboardInterrupt as exc:
                what, code = interrupted(exc)
                _echo(f"error: {path}: {what}; nothing was changed", err=True)
                return code
        if error is not None:
            _show_error(error)
            exit_code = max(exit_code, error.exit_code)
        results.append(result)
        if not as_json and result.status != "failed":
            from .report import format_result

            _echo(format_result(result), err=report_to_stderr)
    _print_report(results, as_json=as_json, err=report_to_stderr)
    return exit_code


def _show_error(error: BinslimError) -> None:
    cause = error.__cause__
    if cause is not None and os.environ.get("BINSLIM_DEBUG"):
        import traceback

        traceback.print_exception(type(cause), cause, cause.__traceback__)
    _echo(f"error: {error}", err=True)


def _writes_to_stdout(output: str) -> bool:
    from .fileops import writes_to_stdout

    return writes_to_stdout(output)


def _print_report(results: Sequence[SlimResult], *, as_json: bool, err: bool = False) -> None:
    if as_json:
        from .report import dumps

        _echo(dumps(results), err=err)
    elif len(results) > 1:
        from .report import format_summary

        _echo(format_summary(results))


def _slim_tree(
    roots: Sequence[str], values: dict[str, Any], verify_args: tuple[str, ...], options: dict[str, Any]
) -> int:
    """-r: slim every ELF file under ``roots``; one line per ELF file, then the summary. Exit 1 when any
    file failed."""
    for refused, flag in (
        (values["output"], "-o/--output"),
        (options["upx_force"], "--upx-force"),
        (options["upx_required"], "--upx-required"),
    ):
        if refused:
            raise UsageError(f"{flag} cannot be used with -r (in a tree, only executables are packed)")
    del options["upx_force"], options["upx_required"]
    from .progress import Progress
    from .report import dumps, format_tree_line, format_tree_summary
    from .tree import slim_tree

    as_json = values["as_json"]
    progress = Progress(enabled=not as_json)

    def show(result: SlimResult) -> None:
        if result.status == "failed":
            progress.echo(f"error: {format_tree_line(result)}", err=True)
        elif not as_json:
            progress.echo(format_tree_line(result))

    try:
        tree = slim_tree(
            roots,
            jobs=values["jobs"],
            on_result=show,
            on_progress=progress.update,
            verify_args=verify_args,
            **options,
        )
    except KeyboardInterrupt as exc:
        progress.close()
        what, code = interrupted(exc)
        _echo(f"error: {what}; files reported above are done, the rest are as they were", err=True)
        return code
    except BrokenPipeError:  # binslim -r . | head: the reader went away, so the tree stopped between files
        progress.close()
        _stdout_gone()
        _echo(
            "error: standard output closed; files reported before are done, the rest are as they were",
            err=True,
        )
        return EXIT_ERROR
    except BinslimError as exc:
        progress.close()
        _echo(f"error: {exc}", err=True)
        return exc.exit_code
    progress.close()
    _echo(dumps(tree.results, tree.summary) if as_json else format_tree_summary(tree.summary))
    return EXIT_ERROR if tree.summary.failed else EXIT_OK


def _stdout_gone() -> None:
    """Standard output's reader went away: send what is still buffered for it to /dev/null, so that exiting
    does not fail on it too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
