"""binslim: shrink Linux ELF binaries without breaking them.

Public API: ``slim`` (the whole job), ``slim_tree`` (it for every ELF file of a tree), ``strip``, ``compress``
and ``verify`` (one stage each), ``bundle`` (a minimal root for dynamically linked programs), their frozen
result types, and the ``BinslimError`` hierarchy.
Everything else is private. LIEF is never imported here.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    BinslimError,
    MalformedELFError,
    NotELFError,
    ToolFailedError,
    ToolNotFoundError,
    UnsupportedError,
    VerificationError,
)

if TYPE_CHECKING:
    from .bundler import BundleFile, BundleResult, ProgramCheck, bundle
    from .slim import SlimResult, slim
    from .strip import RemovedSection, StripResult, strip
    from .tree import TreeResult, TreeSummary, slim_tree
    from .upx import UpxResult, compress
    from .verifier import Timing, VerifyResult, verify

__all__ = [
    "BinslimError",
    "BundleFile",
    "BundleResult",
    "MalformedELFError",
    "NotELFError",
    "ProgramCheck",
    "RemovedSection",
    "SlimResult",
    "StripResult",
    "Timing",
    "ToolFailedError",
    "ToolNotFoundError",
    "TreeResult",
    "TreeSummary",
    "UnsupportedError",
    "UpxResult",
    "VerificationError",
    "VerifyResult",
    "__version__",
    "bundle",
    "compress",
    "slim",
    "slim_tree",
    "strip",
    "verify",
]

# Every stage loads on first use: a command pays only for the stages it runs (pyelftools alone, which the
# verifier needs, adds ~25 ms to a start).
_LAZY = {
    "slim": "slim",
    "SlimResult": "slim",
    "strip": "strip",
    "StripResult": "strip",
    "RemovedSection": "strip",
    "slim_tree": "tree",
    "TreeResult": "tree",
    "TreeSummary": "tree",
    "compress": "upx",
    "UpxResult": "upx",
    "verify": "verifier",
    "VerifyResult": "verifier",
    "Timing": "verifier",
    "bundle": "bundler",
    "BundleResult": "bundler",
    "BundleFile": "bundler",
    "ProgramCheck": "bundler",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'binslim' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``binslim.slim`` and ``binslim.strip`` name the functions, although submodules of the same names
    exist: importing a submodule binds its name on the package, which must not replace the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name and name in __all__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
