"""Options from the environment, for Dockerfiles and build systems that cannot easily change a command line.

Every option ``--some-option`` of the ``binslim`` command can also be set as ``BINSLIM_SOME_OPTION``; the
command line wins. Switches take a boolean word. ``BINSLIM_UPX`` is older than the rest: it names the UPX
program, so only a boolean word there is read as the ``--upx`` switch (and is then not a program name).
"""

from __future__ import annotations

PREFIX = "BINSLIM_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def switch(value: str | None) -> bool | None:
    """True or False for a boolean word (1/true/yes/on, 0/false/no/off, any case); None for anything else."""
    word = (value or "").strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def name_for(option: str) -> str:
    """``--upx-level`` -> ``BINSLIM_UPX_LEVEL``."""
    return PREFIX + option.lstrip("-").replace("-", "_").upper()
