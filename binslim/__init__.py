"""binslim: shrink Linux ELF binaries without breaking them.

Public API: ``slim`` (the whole job), ``slim_tree`` (it for every ELF file of a tree), ``strip``, ``compress``
and ``verify`` (one stage each), their frozen result types, and the ``BinslimError`` hierarchy. Everything else is private. LIEF is never imported here.
"""

from __future__ import annotations


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

from .upx import UpxResult, compress
from .verify import Timing, VerifyResult, verify

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

