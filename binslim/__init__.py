"""binslim: shrink Linux ELF binaries without breaking them."""

__version__ = "0.1.0"
