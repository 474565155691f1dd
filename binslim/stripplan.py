"""Which sections go at each level, and the output sections that stay: the plan the strip stage writes.

Below the writers of the strip stage (strip, sstrip, debuginfo), which all ask it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ._record import Record
from .elf import constants as c
from .elf.reader import ElfFile, Section
from .elf.symbols import (
    SymbolRewrite,
    group_members,
    pack_group,
    referenced_symbols,
    sections_defining_globals,
)
from .elf.writer import LoadedBlock, OutputSection
from .errors import BinslimError, UnsupportedError, file_error

if TYPE_CHECKING:
    from .debuginfo import DebugFile

Level = Literal["all", "debug", "sections"]
# "sections" (--strip-section-headers) also drops the section header table; see sstrip.py.
LEVELS: tuple[str, ...] = ("all", "debug", "sections")

# A symbol string table larger than this is kept as it is rather than rebuilt in memory.
STRTAB_REBUILD_LIMIT = 8 << 20

# Kinds a removed section is reported under.
SYMBOLS, DEBUG, NOTES, OTHER, HEADERS = "symbols", "debug", "notes", "other", "headers"
# File bytes of loaded segments nothing uses (stale patchelf copies; see ElfFile.unused_tails).
ORPHANS = "unused_segments"

DEBUG_PATTERNS = (
    ".debug*",
    ".zdebug*",
    ".line*",
    ".stab",
    ".stab.*",
    ".stabstr",
    ".gdb_index",
    ".gnu.debuglto_*",
    ".gnu_debugdata",
)
# Never removed by default: they point debuggers at separate debug files.
DEBUG_LINKS = (".gnu_debuglink", ".gnu_debugaltlink")
# Never removed by default either: USDT probes, which SystemTap, bpftrace and perf read from the file (GNU
# strip keeps them too). --remove-section removes them.
KEPT_NOTES = (".note.stapsdt",)
# Allocated notes the loader or tools rely on; reported with their cost.
LOADER_NOTES = (
    ".note.gnu.build-id",
    ".note.gnu.property",
    ".note.ABI-tag",
    ".note.go.buildid",
    ".note.package",
    ".note.stapsdt",
)


class RemovedSection(Record):
    name: str
    kind: str
    size: int  # bytes this removal saved in the output

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "size": self.size}


class KeptNote(Record):
    name: str
    size: int


class StripResult(Record):
    input: str
    output: str
    level: str
    original_size: int
    stripped_size: int
    removed: tuple[RemovedSection, ...]
    overlay: int
    kept_notes: tuple[KeptNote, ...] = ()
    messages: tuple[str, ...] = ()
    relocatable: bool = False
    changed: bool = True
    debug_file: DebugFile | None = None  # the companion written by keep_debug
    # When unchanged: whether no symbol table or debug section was there to remove at all.
    fully_stripped: bool = False

    @property
    def saved(self) -> int:
        return self.original_size - self.stripped_size

    def removed_by_kind(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for removed in self.removed:
            totals[removed.kind] = totals.get(removed.kind, 0) + removed.size
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "level": self.level,
            "size": {"original": self.original_size, "stripped": self.stripped_size},
            "removed": [r.to_dict() for r in self.removed],
            "overlay": self.overlay,
            "kept_notes": [{"name": n.name, "size": n.size} for n in self.kept_notes],
            "messages": list(self.messages),
            "debug_file": self.debug_file.to_dict() if self.debug_file is not None else None,
        }


class StripPlan:
    """Which sections go (index -> kind) and what to tell the user; filled in by plan_strip."""

    __slots__ = ("elf", "level", "removed", "messages")

    def __init__(self, elf: ElfFile, level: str) -> None:
        self.elf = elf
        self.level = level
        self.removed: dict[int, str] = {}  # section index -> kind
        self.messages: list[str] = []

    def kept(self) -> list[Section]:
        return [s for s in self.elf.sections if s.index not in self.removed]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return bool(patterns) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


# DEBUG_PATTERNS as plain string tests: fnmatch compiles a regular expression per pattern, which costs a
# small strip more time than the strip itself.
_DEBUG_PREFIXES = tuple(p[:-1] for p in DEBUG_PATTERNS if p.endswith("*") and "*" not in p[:-1])
_DEBUG_NAMES = frozenset(p for p in DEBUG_PATTERNS if "*" not in p)
assert len(_DEBUG_PREFIXES) + len(_DEBUG_NAMES) == len(DEBUG_PATTERNS), "a pattern needs fnmatch"


def is_debug_section(section: Section) -> bool:
    name = section.name
    return not section.is_alloc and (name in _DEBUG_NAMES or name.startswith(_DEBUG_PREFIXES))


def classify(section: Section, level: str, relocatable: bool) -> str | None:
    """The kind under which ``section`` is removed at ``level``, or None when it stays."""
    if section.index == 0 or section.is_alloc:
        return None
    if section.name in DEBUG_LINKS or section.name in KEPT_NOTES:
        return None
    if is_debug_section(section):
        return DEBUG
    if level == "debug" or relocatable:
        return None
    if section.sh_type in (c.SHT_SYMTAB, c.SHT_SYMTAB_SHNDX):
        return SYMBOLS
    if section.name == ".comment":
        return OTHER
    if section.sh_type == c.SHT_NOTE or section.name.startswith(".note"):
        return NOTES
    return None


def plan_strip(
    elf: ElfFile,
    level: str = "all",
    keep_sections: Sequence[str] = (),
    remove_sections: Sequence[str] = (),
) -> StripPlan:
    if level not in LEVELS:
        raise BinslimError(f"unknown strip level {level!r} (choose from {', '.join(LEVELS)})")
    plan = StripPlan(elf, level)
    if elf.is_relocatable and level != "debug":
        plan.messages.append("relocatable object: only debug sections removed, so it still links")
    needed = _needed_by_loaded(elf)
    explicit = _choose(plan, needed, keep_sections, remove_sections)
    if elf.is_relocatable:
        _keep_symbol_homes(plan)
    _drop_unused_string_tables(plan, needed, keep_sections)
    _follow_removed(plan, needed)
    _keep_link_targets(plan, explicit)
    return plan


def _choose(
    plan: StripPlan, needed: set[int], keep_sections: Sequence[str], remove_sections: Sequence[str]
) -> set[int]:
    """Each section's fate by its own name and type, and the options; returns those removed on request."""
    elf = plan.elf
    relocatable = elf.is_relocatable
    explicit: set[int] = set()
    for section in elf.sections:
        kind = classify(section, plan.level, relocatable)
        if section.index in needed:
            kind = None
        if section.index and _matches(section.name, remove_sections):
            if section.is_alloc:
                raise file_error(
                    elf.path,
                    f"refusing to remove loaded section {section.name} (it is part of the running program)",
                    UnsupportedError,
                )
            if section.index == elf.header.e_shstrndx:
                raise file_error(
                    elf.path, f"refusing to remove {section.name}: it names the sections", UnsupportedError
                )
            kind = kind or (NOTES if section.sh_type == c.SHT_NOTE else OTHER)
            explicit.add(section.index)
        if kind and _matches(section.name, keep_sections):
            kind = None
        if kind:
            plan.removed[section.index] = kind
    return explicit


def _drop_unused_string_tables(plan: StripPlan, needed: set[int], keep_sections: Sequence[str]) -> None:
    """The string table of a removed symbol table goes too, unless something kept still uses it."""
    sections = plan.elf.sections
    for section in sections:
        if section.index in plan.removed and section.sh_type == c.SHT_SYMTAB:
            strtab = section.sh_link
            if (
                strtab
                and not sections[strtab].is_alloc
                and not _matches(sections[strtab].name, keep_sections)
            ):
                users = [
                    s
                    for s in sections
                    if s.sh_link == strtab and s.index not in plan.removed and s.index != strtab
                ]
                if not users and strtab not in needed:
                    plan.removed[strtab] = SYMBOLS


def _follow_removed(plan: StripPlan, needed: set[int]) -> None:
    """Relocations for removed sections, index tables of removed symtabs and emptied groups follow what
    they belong to, until nothing changes."""
    elf = plan.elf
    sections = elf.sections
    changed = True
    while changed:
        changed = False
        for section in sections:
            if section.index in plan.removed or section.index in needed:
                continue
            kind = None
            if (
                section.sh_type in (c.SHT_REL, c.SHT_RELA) or section.sh_flags & c.SHF_INFO_LINK
            ) and not section.is_alloc:
                target = section.sh_info
                if 0 < target < len(sections) and target in plan.removed:
                    kind = plan.removed[target]
            if section.sh_type in (c.SHT_REL, c.SHT_RELA, c.SHT_GROUP) and section.sh_link in plan.removed:
                kind = plan.removed[section.sh_link]  # their symbol table is gone: they mean nothing
            elif section.sh_type == c.SHT_SYMTAB_SHNDX and section.sh_link in plan.removed:
                kind = plan.removed[section.sh_link]
            elif section.sh_type == c.SHT_GROUP:
                _, members = group_members(elf, section)
                if members and all(m in plan.removed for m in members):
                    kind = plan.removed[members[0]]
            if kind:
                plan.removed[section.index] = kind
                changed = True


def _keep_link_targets(plan: StripPlan, explicit: set[int]) -> None:
    """What a kept section links to stays (a string table named like debug info, say) unless asked to go.
    Loaded sections were seen to by _needed_by_loaded."""
    changed = True
    while changed:
        changed = False
        for section in plan.elf.sections:
            if not section.index or section.is_alloc or section.index in plan.removed:
                continue
            targets = [section.sh_link]
            if section.sh_type in (c.SHT_REL, c.SHT_RELA) or section.sh_flags & c.SHF_INFO_LINK:
                targets.append(section.sh_info)
            for target in targets:
                if target in plan.removed and target not in explicit:
                    del plan.removed[target]
                    changed = True


def _keep_symbol_homes(plan: StripPlan) -> None:
    """Keep the removable sections of an object in which a global or weak symbol is defined: other objects
    may refer to it. Fat LTO objects (-ffat-lto-objects) define such symbols in their early debug info
    (.gnu.debuglto_*), which the link-time optimizer's output refers to; those sections refer to each other,
    so they stay together."""
    elf = plan.elf
    homes: set[int] = set()
    for symtab in elf.sections:
        if symtab.sh_type == c.SHT_SYMTAB:
            homes |= sections_defining_globals(elf, symtab) & plan.removed.keys()
    if not homes:
        return
    if any(elf.sections[i].name.startswith(".gnu.debuglto_") for i in homes):
        homes |= {i for i in plan.removed if elf.sections[i].name.startswith(".gnu.debuglto_")}
    for index in sorted(homes):
        del plan.removed[index]
    names = sorted({elf.sections[i].name or "?" for i in homes})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    plan.messages.append(f"kept {shown}: global symbols are defined there, so it still links")


def _has_symbols(elf: ElfFile) -> bool:
    return any(s.sh_type == c.SHT_SYMTAB for s in elf.sections)


def _needed_by_loaded(elf: ElfFile) -> set[int]:
    """Sections that stay whatever their name or type: the loaded ones, the section names, and what those
    point at through sh_link (or sh_info, for relocations), transitively. A loaded section's header cannot
    be rewritten to point elsewhere without its bytes changing meaning."""
    count = len(elf.sections)
    needed = {0, elf.header.e_shstrndx}
    pending = [s.index for s in elf.sections if s.index and (s.is_alloc or s.index == elf.header.e_shstrndx)]
    while pending:
        section = elf.sections[pending.pop()]
        targets = [section.sh_link]
        if section.sh_type in (c.SHT_REL, c.SHT_RELA) or section.sh_flags & c.SHF_INFO_LINK:
            targets.append(section.sh_info)
        if (
            section.is_alloc
            and section.sh_type in (c.SHT_REL, c.SHT_RELA)
            and 0 < section.sh_link < count
            and elf.header.e_type in (c.ET_EXEC, c.ET_DYN)
            and not elf.sections[section.sh_link].is_alloc
            and not _uses_symbols(elf, section)
        ):
            targets.remove(section.sh_link)  # a static binary's .rela.plt names .symtab but uses no symbol
        if section.sh_type == c.SHT_SYMTAB:
            targets += [
                s.index
                for s in elf.sections
                if s.sh_type == c.SHT_SYMTAB_SHNDX and s.sh_link == section.index
            ]
        for target in targets:
            if 0 < target < count and target not in needed:
                needed.add(target)
                pending.append(target)
    needed.update(s.index for s in elf.sections if s.is_alloc)
    return needed


def _uses_symbols(elf: ElfFile, relocations: Section) -> bool:
    try:
        return bool(referenced_symbols(elf, elf.sections[relocations.sh_link], [relocations]) - {0})
    except UnsupportedError:
        return True  # a layout we cannot decode: assume it does


def _output_sections(plan: StripPlan) -> list[OutputSection]:
    """Kept sections with links, infos and (where needed) contents renumbered."""
    elf = plan.elf
    kept = plan.kept()
    section_map = {s.index: i for i, s in enumerate(kept)}
    identity = all(old == new for old, new in section_map.items())

    def remap(index: int) -> int:
        return section_map.get(index, 0)

    symtabs: dict[int, SymbolRewrite] = {}
    rebuilt: dict[int, bytes] = {}
    # An object keeps its symbol table, less file symbols and unused section symbols, as GNU strip
    # --strip-debug leaves it, even when no section goes.
    if not identity or elf.is_relocatable:
        xindex_of = {s.sh_link: s for s in kept if s.sh_type == c.SHT_SYMTAB_SHNDX}
        for s in kept:
            if s.sh_type == c.SHT_SYMTAB:
                symtabs[s.index] = SymbolRewrite(
                    elf,
                    s,
                    xindex_of.get(s.index),
                    section_map,
                    referenced=referenced_symbols(elf, s, kept),
                    strtab=_private_strtab(elf, s, kept),
                )
        for owner in symtabs.values():
            if owner.name_map is not None and owner.strtab is not None:
                rebuilt[owner.strtab.index] = owner.strtab_bytes

    outputs: list[OutputSection] = []
    for s in kept:
        link = remap(s.sh_link) if s.sh_link else 0
        info = s.sh_info
        is_reloc = s.sh_type in (c.SHT_REL, c.SHT_RELA)
        if (is_reloc or s.sh_flags & c.SHF_INFO_LINK) and info:
            info = remap(info)
        out = OutputSection(s, link, info)
        rewrite = symtabs.get(s.index)
        if rewrite is not None:
            out.content, out.content_size, out.sh_info = (
                rewrite.symtab_chunks,
                rewrite.symtab_size,
                rewrite.first_global,
            )
        elif s.index in rebuilt:
            data = rebuilt[s.index]
            out.content, out.content_size = (lambda d=data: [d]), len(data)
        elif s.sh_type == c.SHT_SYMTAB_SHNDX and s.sh_link in symtabs:
            owner = symtabs[s.sh_link]
            out.content, out.content_size = owner.xindex_chunks, owner.xindex_size
        elif is_reloc and s.sh_link in symtabs and not s.is_alloc:
            owner = symtabs[s.sh_link]
            out.content, out.content_size = (lambda o=owner, r=s: o.relocation_chunks(r)), s.sh_size
        elif is_reloc and s.sh_link in symtabs:
            owner = symtabs[s.sh_link]
            used = referenced_symbols(elf, owner.symtab, [s])
            if any(owner.symbol_map[i] != i for i in used if i < len(owner.symbol_map)):
                raise file_error(
                    elf.path,
                    f"section {s.index} ({s.name or '?'}) holds loaded relocations against"
                    " symbols that removing sections would renumber",
                    UnsupportedError,
                )
        elif s.sh_type == c.SHT_GROUP and (not identity or s.sh_link in symtabs):
            flags, members = group_members(elf, s)
            data = pack_group(elf, flags, [section_map[m] for m in members if m in section_map])
            out.content, out.content_size = (lambda d=data: [d]), len(data)
            if s.sh_link in symtabs:
                out.sh_info = symtabs[s.sh_link].new_symbol(s.sh_info, s.name)
        if out.content is not None and s.is_alloc:
            # Its bytes are loaded and stay where they are: a rewritten copy elsewhere would not be used.
            raise file_error(
                elf.path,
                f"section {s.index} ({s.name or '?'}) is loaded but would need rewriting to remove sections",
                UnsupportedError,
            )
        outputs.append(out)
    return outputs


def _private_strtab(elf: ElfFile, symtab: Section, kept: list[Section]) -> Section | None:
    """The symbol table's string table when only it uses it and it is small enough to rebuild in memory."""
    strtab = elf.sections[symtab.sh_link] if symtab.sh_link else None
    if strtab is None or strtab.sh_type != c.SHT_STRTAB or strtab.is_alloc:
        return None
    if strtab.index == elf.header.e_shstrndx or strtab.sh_size > STRTAB_REBUILD_LIMIT:
        return None
    if any(s.sh_link == strtab.index and s.index != symtab.index for s in kept):
        return None
    return strtab


def _saved_by_section(plan: StripPlan, blocks: Sequence[LoadedBlock]) -> list[RemovedSection]:
    """Bytes each removal saves: the parts of a section inside a copied block of loaded bytes save nothing."""
    result = []
    spans = [(b.start, b.end) for b in blocks]
    for index, kind in sorted(plan.removed.items()):
        s = plan.elf.sections[index]
        saved = 0
        if s.has_file_bytes:
            start, end = s.sh_offset, s.sh_offset + s.sh_size
            saved = s.sh_size
            for block_start, block_end in spans:
                if block_start < end and start < block_end:
                    saved -= min(end, block_end) - max(start, block_start)
        result.append(RemovedSection(s.name, kind, saved))
    return result


def _kept_notes(elf: ElfFile, plan: StripPlan) -> tuple[KeptNote, ...]:
    return tuple(
        KeptNote(s.name, s.sh_size)
        for s in plan.kept()
        if s.index and (s.sh_type == c.SHT_NOTE or s.name in LOADER_NOTES)
    )
