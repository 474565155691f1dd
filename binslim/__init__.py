"""binslim: shrink Linux ELF binaries without breaking them.

Public API: ``slim`` (the whole job), ``strip``, ``compress`` and ``verify`` (one stage each), their frozen
result types, and the ``BinslimError`` hierarchy. Everything else is private.
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

if TYPE_CHECKING:
    from .upx import UpxResult, compress
    from .verify import VerifyResult, verify

__all__ = [
    "BinslimError",
    "MalformedELFError",
    "NotELFError",
    "RemovedSection",
    "SlimResult",
    "StripResult",
    "ToolFailedError",
    "ToolNotFoundError",
    "UnsupportedError",
    "UpxResult",
    "VerificationError",
    "VerifyResult",
    "__version__",
    "compress",
    "slim",
    "strip",
    "verify",
]


def __getattr__(name: str) -> Any:
    # The UPX and verify stages load on first use, keeping `import binslim` fast.
    if name in ("compress", "UpxResult"):
        from . import upx

        return getattr(upx, name)
    if name in ("verify", "VerifyResult"):
        from . import verify as verify_module

        return getattr(verify_module, name)
    raise AttributeError(f"module 'binslim' has no attribute {name!r}")
