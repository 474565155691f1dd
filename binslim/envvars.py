"""Options from the environment, for Dockerfiles and build systems that cannot easily change a command line.

Every option ``--some-option`` of the ``binslim`` command can also be set as ``BINSLIM_SOME_OPTION``; the
command line wins. Switches take a boolean word. ``BINSLIM_UPX`` is older than the rest: it names the UPX
program, so only a boolean word there is read as the ``--upx`` switch (and is then not a program name).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

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


def is_set(env: Mapping[str, str], option: str) -> bool:
    """Whether the switch ``--option`` is turned on in ``env`` (a boolean word that says yes)."""
    return switch(env.get(name_for(option))) is True


def chosen_flags(env: Mapping[str, str], options: Iterable[str]) -> list[str]:
    """Those of the switches ``options`` (``--strip-debug``...) that ``env`` turns on, in order."""
    return [option for option in options if is_set(env, option)]


# CI services that do not set CI=true, by the variable each one sets.
_CI_VARIABLES = ("GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "TF_BUILD", "JENKINS_URL", "TEAMCITY_VERSION")


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """Whether we run in a CI job (CI set to anything but a false word, or a CI service's own variable)."""
    if env.get("CI") and switch(env.get("CI")) is not False:
        return True
    return any(env.get(name) for name in _CI_VARIABLES)
