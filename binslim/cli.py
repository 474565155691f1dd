"""The ``binslim`` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from . import __version__, envvars
from .errors import BinslimError
from .interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, interrupted, sigterm_as_interrupt
from .options import SlimOptions
from .report import dumps, format_result, format_summary
from .slim import SlimResult, failed_result, try_slim

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3
__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "inspect_command", "main"]


class _BinslimCommand(click.Command):
    """``binslim INPUT...`` slims; ``binslim inspect FILE`` reports (a file named inspect: ./inspect)."""

    def main(
        self, args: Sequence[str] | None = None, prog_name: str | None = None, *rest: Any, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if argv[:1] == ["inspect"]:
            return inspect_command.main(argv[1:], f"{prog_name or 'binslim'} inspect", *rest, **extra)
        with sigterm_as_interrupt():
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

    try:
        slim_options = SlimOptions(verify_args=args, dry_run=dry_run, **options)
    except BinslimError as exc:  # a combination slim() refuses (--upx-method auto without a budget)
        click.echo(f"error: {exc}", err=True)
        if as_json:
            click.echo(dumps([failed_result(path, output, str(exc)) for path in inputs]))
        sys.exit(exc.exit_code)
    results: list[SlimResult] = []
    exit_code = EXIT_OK
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
                click.echo(f"error: {path}: {what}; nothing was changed", err=True)
                sys.exit(code)
        if error is not None:
            if error.__cause__ is not None and os.environ.get("BINSLIM_DEBUG"):
                traceback.print_exception(
                    type(error.__cause__), error.__cause__, error.__cause__.__traceback__
                )
            click.echo(f"error: {error}", err=True)
            exit_code = max(exit_code, error.exit_code)
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
        options["upx"] = envvars.is_set(os.environ, "--upx")
    if ctx.get_parameter_source("level") is click.core.ParameterSource.DEFAULT:
        levels = {
            name: option.flag_value
            for option in _env_options(ctx.command)
            if option.name == "level"
            for name in option.opts
        }
        chosen = envvars.chosen_flags(os.environ, levels)
        if len(chosen) > 1:
            names = " and ".join(envvars.name_for(flag) for flag in chosen)
            raise click.UsageError(f"{names} are all set: choose one")
        if chosen:
            options["level"] = levels[chosen[0]]


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
    from .progress import Progress
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
    progress = Progress(enabled=not as_json)

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
        what, code = interrupted(exc)
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
