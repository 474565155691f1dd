"""The ``binslim`` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import click

from . import __version__, envvars
from .errors import BinslimError
from .report import dumps, format_result, format_summary
from .slim import SlimResult, failed_result, slim

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup on the way out runs (temporary files, workers)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def terminate(signum: int, frame: object) -> None:
        if os.getpid() == owner:  # forked -r workers ignore it: the parent stops them between files
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(exc: KeyboardInterrupt) -> tuple[str, int]:
    """(what happened, exit code) for Ctrl-C or SIGTERM."""
    if isinstance(exc, Terminated):
        return "terminated", EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED


class _BinslimCommand(click.Command):
    """``binslim INPUT...`` slims; ``binslim inspect FILE`` reports (a file named inspect: ./inspect)."""

    def main(
        self, args: Sequence[str] | None = None, prog_name: str | None = None, *rest: Any, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] == ["inspect"]:
            return inspect_command.main(argv[1:], f"{prog_name or 'binslim'} inspect", *rest, **extra)
        with _sigterm_as_interrupt():
            return super().main(argv, prog_name, *rest, **extra)


@click.command("inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--top",
    type=click.IntRange(1, 10000),
    default=10,
    show_default=True,
    help="How many of the largest sections and symbols to list.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_command(path: str, top: int, as_json: bool) -> None:
    """What makes FILE big: bytes by kind, the largest sections and symbols, and what each binslim level
    (and UPX) would save."""
    from .inspect import format_inspection, inspect, to_json

    try:
        inspection = inspect(path, top=top)
    except BinslimError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(to_json(inspection) if as_json else format_inspection(inspection))


@click.command(
    cls=_BinslimCommand,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="binslim inspect FILE [--json] shows what makes FILE big and what each level saves.",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "-o", "--output", type=click.Path(path_type=str), help="Write here instead of in place (one input)."
)
@click.option(
    "--strip-all",
    "level",
    flag_value="all",
    default=True,
    help="Remove symbols, debug info, .comment and unloaded notes (default).",
)
@click.option("--strip-debug", "level", flag_value="debug", help="Remove debug sections only.")
@click.option(
    "--strip-section-headers",
    "level",
    flag_value="sections",
    help="Also drop the section header table and all unmapped bytes, as sstrip does; gdb, objdump,"
    " patchelf and libbacktrace no longer work on the result.",
)
@click.option(
    "--keep-debug",
    type=click.Path(dir_okay=False, path_type=str),
    metavar="FILE",
    help="First write the debug information to FILE (as objcopy --only-keep-debug does), then link"
    " the result to it with .gnu_debuglink (one input).",
)
@click.option("--force", is_flag=True, help="Drop the section headers of shared libraries too.")
@click.option(
    "--keep-section", "keep_sections", multiple=True, metavar="GLOB", help="Keep matching sections."
)
@click.option(
    "--remove-section",
    "remove_sections",
    multiple=True,
    metavar="GLOB",
    help="Also remove matching (unloaded) sections.",
)
@click.option("-p", "--preserve-dates", is_flag=True, help="Keep access and modification times.")
@click.option(
    "--upx",
    is_flag=True,
    help="Pack the stripped binary with UPX. [env var: BINSLIM_UPX=1; any other value names the UPX program]",
)
@click.option(
    "--upx-method",
    type=click.Choice(["nrv", "lzma", "auto"]),
    help="UPX method; auto picks the smallest within --max-startup-ms.",
)
@click.option("--upx-level", type=click.IntRange(1, 9), help="UPX compression level 1..9.")
@click.option(
    "--upx-args",
    default="",
    metavar="ARGS",
    help="Extra UPX arguments (split like a shell, never run by one).",
)
@click.option(
    "--upx-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds before a UPX run is killed.",
)
@click.option("--upx-force", is_flag=True, help="Pack even shared libraries, objects and foreign binaries.")
@click.option("--upx-required", is_flag=True, help="Fail (exit 1) when UPX does not pack.")
@click.option("--max-startup-ms", type=float, help="Startup latency budget for --upx-method auto.")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check and run the result against the original before installing it.",
)
@click.option(
    "--verify-args",
    default="--version",
    show_default=True,
    metavar="ARGS",
    help="Arguments for the verification runs ('' for none).",
)
@click.option(
    "--verify-cmd",
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="Script that gets the binary's path and exercises it.",
)
@click.option(
    "--verify-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True
)
@click.option("--verify-runs", type=click.IntRange(1, 1000), default=9, show_default=True)
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Slim every ELF file under each INPUT folder, in place; symlinks are not followed.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="Files slimmed at once with -r (default: the CPUs available).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be removed and saved; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout, nothing else.")
@click.version_option(__version__, "-V", "--version", prog_name="binslim")
def main(
    inputs: tuple[str, ...],
    output: str | None,
    as_json: bool,
    verify_args: str,
    recursive: bool,
    jobs: int | None,
    dry_run: bool,
    **options: Any,
) -> None:
    """Strip (and optionally pack and verify) ELF binaries. Without -o, each INPUT is rewritten in place.

    Every option can also be set as BINSLIM_<OPTION> in the environment (--upx-level: BINSLIM_UPX_LEVEL);
    the command line wins.
    """
    if output is not None and len(inputs) != 1:
        raise click.UsageError("-o/--output takes exactly one input")
    if options.get("keep_debug") is not None and (len(inputs) != 1 or recursive):
        raise click.UsageError("--keep-debug takes exactly one input")
    try:
        args = tuple(shlex.split(verify_args))
    except ValueError as exc:
        raise click.UsageError(f"--verify-args: {exc}") from exc
    _switches_from_env(click.get_current_context(), options)
    if recursive:
        sys.exit(_main_tree(inputs, output, as_json, args, jobs, dry_run, options))

    results: list[SlimResult] = []
    exit_code = EXIT_OK
    for path in inputs:
        if os.path.isdir(path):
            message = f"{path}: is a directory; use -r to slim every ELF file under it"
            click.echo(f"error: {message}", err=True)
            exit_code = max(exit_code, EXIT_ERROR)
            results.append(failed_result(path, output, message))
            continue
        try:
            result = slim(path, output, verify_args=args, dry_run=dry_run, **options)
        except BinslimError as exc:
            click.echo(f"error: {exc}", err=True)
            exit_code = max(exit_code, exc.exit_code)
            result = failed_result(path, output, str(exc))
        except KeyboardInterrupt as exc:
            what, code = _interrupted(exc)
            click.echo(f"error: {path}: {what}; nothing was changed", err=True)
            sys.exit(code)
        except OSError as exc:
            click.echo(f"error: {path}: {exc.strerror or exc}", err=True)
            exit_code = max(exit_code, EXIT_ERROR)
            result = failed_result(path, output, str(exc))
        except Exception as exc:  # a bug: still one line, no traceback unless asked for
            if os.environ.get("BINSLIM_DEBUG"):
                traceback.print_exc()
            click.echo(f"error: {path}: internal error: {type(exc).__name__}: {exc}", err=True)
            exit_code = max(exit_code, EXIT_ERROR)
            result = failed_result(path, output, f"internal error: {exc}")
        results.append(result)
        if not as_json and result.status != "failed":
            click.echo(format_result(result))
    if as_json:
        click.echo(dumps(results))
    elif len(results) > 1:
        click.echo(format_summary(results))
    sys.exit(exit_code)


# Options read from the environment by hand: the strip levels share one parameter (click would read one
# variable for all of them), and BINSLIM_UPX is also the UPX program's path (see envvars).
_ENV_BY_HAND = ("level", "upx")


def _env_name(option: click.Option) -> str:
    return envvars.name_for(next(name for name in option.opts if name.startswith("--")))


def _env_options(command: click.Command) -> list[click.Option]:
    return [
        p
        for p in command.params
        if isinstance(p, click.Option) and p.expose_value and any(name.startswith("--") for name in p.opts)
    ]


def _read_options_from_env(command: click.Command) -> None:
    """Let every option come from BINSLIM_<OPTION> as well, shown in --help."""
    for option in _env_options(command):
        if option.name == "level":
            option.help = f"{option.help or ''}  [env var: {_env_name(option)}=1]"
        elif option.name not in _ENV_BY_HAND and option.envvar is None:
            option.envvar = _env_name(option)
            option.show_envvar = True


for _command in (main, inspect_command):
    _read_options_from_env(_command)


def _switches_from_env(ctx: click.Context, options: dict[str, Any]) -> None:
    if ctx.get_parameter_source("upx") is click.core.ParameterSource.DEFAULT:
        options["upx"] = envvars.switch(os.environ.get(envvars.name_for("--upx"))) is True
    if ctx.get_parameter_source("level") is click.core.ParameterSource.DEFAULT:
        levels = [
            option
            for option in _env_options(ctx.command)
            if option.name == "level" and envvars.switch(os.environ.get(_env_name(option)))
        ]
        if len(levels) > 1:
            raise click.UsageError(f"{' and '.join(_env_name(o) for o in levels)} are all set: choose one")
        if levels:
            options["level"] = levels[0].flag_value


class _Progress:
    """A one-line progress bar on stderr: only on a terminal, never in a pipe, in --json or in CI logs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = (
            enabled
            and sys.stdout.isatty()
            and sys.stderr.isatty()
            and not _in_ci()
            and os.environ.get("TERM", "dumb") != "dumb"
        )
        self._line = ""

    def update(self, done: int, total: int) -> None:
        if not self.enabled or not total:
            return
        width = max(10, min(40, shutil.get_terminal_size().columns - 30))
        filled = width * done // total
        self._line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ELF files"
        sys.stderr.write("\r" + self._line)
        sys.stderr.flush()

    def echo(self, text: str, *, err: bool = False) -> None:
        """Print a line above the bar."""
        if self._line:
            sys.stderr.write("\r" + " " * len(self._line) + "\r")
            sys.stderr.flush()
        click.echo(text, err=err)
        if self._line:
            sys.stderr.write(self._line)
            sys.stderr.flush()

    def close(self) -> None:
        if self._line:
            sys.stderr.write("\r" + " " * len(self._line) + "\r")
            sys.stderr.flush()
            self._line = ""


def _in_ci() -> bool:
    if envvars.switch(os.environ.get("CI")) is not False and os.environ.get("CI"):
        return True
    return any(
        os.environ.get(name)
        for name in (
            "GITHUB_ACTIONS",
            "GITLAB_CI",
            "BUILDKITE",
            "TF_BUILD",
            "JENKINS_URL",
            "TEAMCITY_VERSION",
        )
    )


def _main_tree(
    roots: tuple[str, ...],
    output: str | None,
    as_json: bool,
    verify_args: tuple[str, ...],
    jobs: int | None,
    dry_run: bool,
    options: dict[str, Any],
) -> int:
    """-r: slim every ELF file under ``roots``; one line per ELF file, then the summary. Exit 1 when any
    file failed."""
    from .report import format_tree_line, format_tree_summary
    from .tree import slim_tree

    for refused, flag in (
        (output, "-o/--output"),
        (options["upx_force"], "--upx-force"),
        (options["upx_required"], "--upx-required"),
    ):
        if refused:
            raise click.UsageError(f"{flag} cannot be used with -r (in a tree, only executables are packed)")
    del options["upx_force"], options["upx_required"]
    progress = _Progress(enabled=not as_json)

    def show(result: SlimResult) -> None:
        if result.status == "failed":
            progress.echo(f"error: {format_tree_line(result)}", err=True)
        elif not as_json:
            progress.echo(format_tree_line(result))

    try:
        tree = slim_tree(
            roots,
            jobs=jobs,
            dry_run=dry_run,
            on_result=show,
            on_progress=progress.update,
            verify_args=verify_args,
            **options,
        )
    except KeyboardInterrupt as exc:
        progress.close()
        what, code = _interrupted(exc)
        click.echo(f"error: {what}; files reported above are done, the rest are as they were", err=True)
        return code
    except BinslimError as exc:
        progress.close()
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    progress.close()
    if as_json:
        click.echo(dumps(tree.results, tree.summary))
    else:
        click.echo(format_tree_summary(tree.summary))
    return EXIT_ERROR if tree.summary.failed else EXIT_OK
