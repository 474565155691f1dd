"""The ``binslim`` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from typing import Any, Optional

import click

from . import __version__
from .errors import BinslimError
from .report import dumps, format_result, format_summary
from .slim import SlimResult, slim

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY = 0, 1, 2, 3


def _failed(path: str, output: Optional[str], message: str) -> SlimResult:
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    return SlimResult(input=path, output=output or path, status="failed", message=message,
                      original_size=size, stripped_size=size, packed_size=None, final_size=size)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("-o", "--output", type=click.Path(path_type=str), help="Write here instead of in place (one input).")
@click.option("--strip-all", "level", flag_value="all", default=True,
              help="Remove symbols, debug info, .comment and unloaded notes (default).")
@click.option("--strip-debug", "level", flag_value="debug", help="Remove debug sections only.")
@click.option("--keep-section", "keep_sections", multiple=True, metavar="GLOB", help="Keep matching sections.")
@click.option("--remove-section", "remove_sections", multiple=True, metavar="GLOB",
              help="Also remove matching (unloaded) sections.")
@click.option("-p", "--preserve-dates", is_flag=True, help="Keep access and modification times.")
@click.option("--upx", is_flag=True, help="Pack the stripped binary with UPX.")
@click.option("--upx-method", type=click.Choice(["nrv", "lzma", "auto"]),
              help="UPX method; auto picks the smallest within --max-startup-ms.")
@click.option("--upx-level", type=click.IntRange(1, 9), help="UPX compression level 1..9.")
@click.option("--upx-args", default="", metavar="ARGS", help="Extra UPX arguments (split like a shell, never run by one).")
@click.option("--upx-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Seconds before a UPX run is killed.")
@click.option("--upx-force", is_flag=True, help="Pack even shared libraries, objects and foreign binaries.")
@click.option("--upx-required", is_flag=True, help="Fail (exit 1) when UPX does not pack.")
@click.option("--max-startup-ms", type=float, help="Startup latency budget for --upx-method auto.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check and run the result against the original before installing it.")
@click.option("--verify-args", default="--version", show_default=True, metavar="ARGS",
              help="Arguments for the verification runs ('' for none).")
@click.option("--verify-cmd", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Script that gets the binary's path and exercises it.")
@click.option("--verify-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--verify-runs", type=click.IntRange(1, 1000), default=9, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report on stdout, nothing else.")
@click.version_option(__version__, "-V", "--version", prog_name="binslim")
def main(inputs: tuple[str, ...], output: Optional[str], as_json: bool, verify_args: str, **options: Any) -> None:
    """Strip (and optionally pack and verify) ELF binaries. Without -o, each INPUT is rewritten in place."""
    if output is not None and len(inputs) != 1:
        raise click.UsageError("-o/--output takes exactly one input")
    try:
        args = tuple(shlex.split(verify_args))
    except ValueError as exc:
        raise click.UsageError(f"--verify-args: {exc}") from exc

    results: list[SlimResult] = []
    exit_code = EXIT_OK
    for path in inputs:
        try:
            result = slim(path, output, verify_args=args, **options)
        except BinslimError as exc:
            click.echo(f"error: {exc}", err=True)
            exit_code = max(exit_code, exc.exit_code)
            result = _failed(path, output, str(exc))
        except KeyboardInterrupt:
            click.echo(f"error: {path}: interrupted; nothing was changed", err=True)
            sys.exit(130)
        except OSError as exc:
            click.echo(f"error: {path}: {exc.strerror or exc}", err=True)
            exit_code = max(exit_code, EXIT_ERROR)
            result = _failed(path, output, str(exc))
        except Exception as exc:  # a bug: still one line, no traceback unless asked for
            if os.environ.get("BINSLIM_DEBUG"):
                traceback.print_exc()
            click.echo(f"error: {path}: internal error: {type(exc).__name__}: {exc}", err=True)
            exit_code = max(exit_code, EXIT_ERROR)
            result = _failed(path, output, f"internal error: {exc}")
        results.append(result)
        if not as_json and result.status != "failed":
            click.echo(format_result(result))
    if as_json:
        click.echo(dumps(results))
    elif len(results) > 1:
        click.echo(format_summary(results))
    sys.exit(exit_code)
