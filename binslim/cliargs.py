"""Command-line parsing for ``binslim``: a table of options, read from argv and then from ``BINSLIM_*``.

argparse from the standard library rather than click: click's import alone costs more than half of the
start-up budget of a command that is called once per file by build systems. Each option is one
:class:`Option` row; every option that has a long name can also come from the environment (``--upx-level``:
``BINSLIM_UPX_LEVEL``), and the command line wins. Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from . import envvars

EXIT_USAGE = 2

# How an option takes its value: "value" (one argument), "multiple" (repeatable), "flag" (a switch),
# "const" (a switch that stores ``const`` into a destination shared with others, as --strip-all/--strip-debug
# share ``level``; its variable is BINSLIM_<OPTION>=1 and setting two of them is an error).
VALUE, MULTIPLE, FLAG, CONST = "value", "multiple", "flag", "const"


class UsageError(Exception):
    """A bad command line or variable: printed with the usage line, exit 2."""


class Option:
    """One command-line option."""

    __slots__ = (
        "flags",
        "dest",
        "help",
        "how",
        "convert",
        "default",
        "const",
        "metavar",
        "show_default",
        "env",
        "negation",
    )

    def __init__(
        self,
        flags: Sequence[str],
        dest: str,
        help: str,
        *,
        how: str = VALUE,
        convert: Callable[[str], Any] = str,
        default: Any = None,
        const: Any = None,
        metavar: str | None = None,
        show_default: bool = False,
        env: bool = True,
        negation: str | None = None,
    ) -> None:
        self.flags = tuple(flags)
        self.dest = dest
        self.help = help
        self.how = how
        self.convert = convert
        self.default = default
        self.const = const
        self.metavar = metavar
        self.show_default = show_default
        self.env = env  # read BINSLIM_<OPTION> for it here (False: the command reads it by hand)
        self.negation = negation  # a FLAG's "off" form: --no-verify

    @property
    def long_name(self) -> str:
        return next(flag for flag in self.flags if flag.startswith("--"))

    @property
    def env_name(self) -> str:
        return envvars.name_for(self.long_name)

    def help_text(self) -> str:
        text = self.help
        if self.show_default:
            shown = self.default if self.how != FLAG else self.long_name.lstrip("-")
            text += f"  [default: {shown}]"
        if self.how == CONST:
            text += f"  [env var: {self.env_name}=1]"
        elif self.env:
            text += f"  [env var: {self.env_name}]"
        return text.replace("%", "%%")

    def from_env(self, env: Mapping[str, str]) -> Any:
        """The value ``env`` gives this option, or None when its variable is unset or empty."""
        raw = env.get(self.env_name, "")
        if not raw.strip():
            return None
        if self.how == FLAG:
            value = envvars.switch(raw)
            if value is None:
                raise UsageError(
                    f"{self.env_name}={raw!r} is not a switch word (1/true/yes/on, 0/false/no/off)"
                )
            return value
        if self.how == MULTIPLE:
            return tuple(self.convert(word) for word in raw.split())
        try:
            return self.convert(raw)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{self.env_name}={raw!r}: {exc}") from exc


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is not in the range {bounds}")
        return value

    return convert


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def name_value(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (an environment assignment) as ``(NAME, VALUE)``."""
    name, equals, value = text.partition("=")
    if not equals or not name or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def choice(*names: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(names)}")
        return text

    return convert


def not_a_folder(text: str) -> str:
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    return text


def existing_file(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return not_a_folder(text)


def _formatter(prog: str) -> argparse.HelpFormatter:
    # argparse makes a formatter for every add_argument() and measures the terminal each time; measure once.
    return argparse.RawDescriptionHelpFormatter(prog, width=_help_width())


@functools.cache
def _help_width() -> int:
    import shutil

    return shutil.get_terminal_size().columns - 2  # what argparse itself would use


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class Command:
    """A command: positional arguments, the option table, --help (and --version when given)."""

    def __init__(
        self,
        prog: str,
        description: str,
        options: Sequence[Option],
        positionals: Sequence[tuple[str, str, str | None]],  # (dest, metavar, nargs)
        *,
        usage: str | None = None,
        epilog: str | None = None,
        version: str | None = None,
    ) -> None:
        self.usage = usage
        self.prog = prog
        self.description = description
        self.options = tuple(options)
        self.positionals = tuple(positionals)
        self.epilog = epilog
        self.version = version

    def _parser(self) -> _Parser:
        parser = _Parser(
            prog=self.prog,
            usage=self.usage,
            description=self.description,
            epilog=self.epilog,
            add_help=False,
            allow_abbrev=False,
            formatter_class=_formatter,
        )
        for dest, metavar, nargs in self.positionals:
            parser.add_argument(dest, metavar=metavar, nargs=nargs)
        for option in self.options:
            kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help_text(), "default": None}
            if option.how == FLAG and option.negation is not None:
                parser.add_argument(
                    option.negation,
                    dest=option.dest,
                    action="store_false",
                    default=None,
                    help=argparse.SUPPRESS,
                )
                kwargs.update(action="store_true")
                kwargs["help"] = f"(and {option.negation}) {kwargs['help']}"
            elif option.how == FLAG:
                kwargs.update(action="store_true")
            elif option.how == CONST:
                kwargs.update(action="store_const", const=option.const)
            else:
                kwargs.update(type=option.convert, metavar=option.metavar)
                if option.how == MULTIPLE:
                    kwargs.update(action="append")
            parser.add_argument(*option.flags, **kwargs)
        parser.add_argument("-h", "--help", action="help", help="Show this message and exit.")
        if self.version is not None:
            parser.add_argument(
                "-V",
                "--version",
                action="version",
                version=f"{self.prog.split()[0]}, version {self.version}",
                help="Show the version and exit.",
            )
        return parser

    def parse(self, argv: Sequence[str], env: Mapping[str, str] = os.environ) -> dict[str, Any]:
        """Parsed values by destination: the command line, else the environment, else the default.

        UsageError for a bad command line or variable. --help and --version print and exit 0.
        """
        parser = self._parser()
        values = vars(parser.parse_intermixed_args(list(argv)))
        consts: dict[str, list[Option]] = {}
        for option in self.options:
            if option.how == CONST:
                consts.setdefault(option.dest, []).append(option)
            elif values[option.dest] is None:
                from_env = option.from_env(env) if option.env else None
                values[option.dest] = option.default if from_env is None else from_env
            elif option.how == MULTIPLE:
                values[option.dest] = tuple(values[option.dest])
        for dest, group in consts.items():
            if values[dest] is not None:
                continue
            chosen = [option for option in group if envvars.is_set(env, option.long_name)]
            if len(chosen) > 1:
                raise UsageError(f"{' and '.join(o.env_name for o in chosen)} are all set: choose one")
            values[dest] = chosen[0].const if chosen else next(o.default for o in group)
        return values

    def usage_error(self, message: str) -> NoReturn:
        """Print ``message`` with the usage line and exit 2."""
        sys.stderr.write(self._parser().format_usage())
        sys.stderr.write(f"Try '{self.prog} --help' for help.\n\nerror: {message}\n")
        sys.exit(EXIT_USAGE)
