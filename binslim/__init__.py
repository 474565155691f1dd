"""binslim: shrink Linux ELF binaries without breaking them.

Public API: ``slim`` (the whole job), ``slim_tree`` (it for every ELF file of a tree), ``strip``, ``compress``
and ``verify`` (one stage each), their frozen result types, and the ``BinslimError`` hierarchy.
Everything else is private. LIEF is never imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import (
    BinslimError,
    MalformedELFError,
    NotELFError,
    ToolFailedError,
    ToolNotFoundError,
    UnsupportedError,
    VerificationError,
)
from .slim import SlimResult, slim
from .strip import RemovedSection, StripResult, strip
from .tree import TreeResult, TreeSummary, slim_tree

if TYPE_CHECKING:
    from .upx import UpxResult, compress
    from .verifier import Timing, VerifyResult, verify

__all__ = [
    "BinslimError",
    "MalformedELFError",
    "NotELFError",
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
    "compress",
    "slim",
    "slim_tree",
    "strip",
    "verify",
]

# The UPX and verification stages load on first use: pyelftools alone would add ~25 ms to every start.
_LAZY = {
    "compress": "upx",
    "UpxResult": "upx",
    "verify": "verifier",
    "VerifyResult": "verifier",
    "Timing": "verifier",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'binslim' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value
