"""Low-level ELF layout: reading headers (reader), streaming bytes (copy), writing a new layout (writer)."""

from .reader import ElfFile, Section, Segment

__all__ = ["ElfFile", "Section", "Segment"]
