"""Malformed and hostile ELF: a fixed-seed fuzz budget through the library and the CLI (tests/fuzz_elf.py
holds the mutators and the invariants), hostile counts that must not allocate, and one regression test for
each bug the fuzzer found.

Longer campaigns are opt-in: ``python3 tests/fuzz_elf.py --cases 100000 --seed N``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from binslim import strip
from binslim.elf.reader import ElfFile
from binslim.errors import MalformedELFError
from testdata.build import Fixture
from tests.fuzz_elf import (
    PN_XNUM,
    SHF_ALLOC,
    SHF_INFO_LINK,
    SHT_GROUP,
    SHT_NOTE,
    SHT_PROGBITS,
    SHT_REL,
    SHT_RELA,
    SHT_STRTAB,
    SHT_SYMTAB,
    SHT_SYMTAB_SHNDX,
    Case,
    HypothesisSource,
    Mutable,
    Seed,
    check_case,
    cli_violations,
    load_seed,
    load_seeds,
    make_case,
    random_case,
)
from tests.helpers import require_tool

SEED = 20_240_607
LIBRARY_CASES = 1000  # the floor for the normal suite
HYPOTHESIS_CASES = 300
CLI_CASES = 40  # each costs a Python start-up; the library cases cover the same inputs in-process
MEMORY_BUDGET = 8 << 20  # bytes a hostile header may make binslim allocate


@pytest.fixture(scope="module")
def seeds(fixtures: dict[str, Fixture]) -> list[Seed]:
    require_tool("readelf")
    return load_seeds({name: fixture.path for name, fixture in fixtures.items()})


def _describe(case: Case, problems: list[str]) -> str:
    return case.describe() + "\n  " + "\n  ".join(problems)


def test_fuzz_library(seeds: list[Seed], tmp_path: Path) -> None:
    """1,000 mutated inputs (campaign SEED, cases 0..999: the same bytes everywhere) through binslim's
    pipeline; every failure is listed with the command that replays it."""
    statuses = []
    failures = []
    distinct = set()
    for index in range(LIBRARY_CASES):
        case = random_case(seeds, SEED, index)
        distinct.add(case.data)
        with tempfile.TemporaryDirectory(dir=tmp_path) as work_dir:
            outcome = check_case(case, work_dir)
        statuses.append(outcome.status)
        problems = ([outcome.message] if outcome.status == "bug" else []) + outcome.violations
        if problems:
            failures.append(
                f"python3 tests/fuzz_elf.py --seed {SEED} --case {index}\n  {_describe(case, problems)}"
            )
    assert not failures, "\n".join(failures)
    assert len(distinct) > LIBRARY_CASES * 0.97  # a few mutations land on bytes that already had the value
    # Both paths must be exercised: inputs binslim rejects and inputs it strips.
    assert statuses.count("ok") > LIBRARY_CASES // 5 and statuses.count("error") > LIBRARY_CASES // 5


def test_fuzz_library_hypothesis(seeds: list[Seed], tmp_path: Path) -> None:
    """The same mutators with hypothesis making the choices: it favours boundary values and shrinks a
    failure to its simplest mutation."""
    ran = []

    @hypothesis_seed(SEED)
    @settings(
        max_examples=HYPOTHESIS_CASES,
        database=None,
        deadline=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one_case(data: st.DataObject) -> None:
        case = make_case(HypothesisSource(data), seeds)
        note(case.describe())
        with tempfile.TemporaryDirectory(dir=tmp_path) as work_dir:
            outcome = check_case(case, work_dir)
        ran.append(outcome.status)
        problems = ([outcome.message] if outcome.status == "bug" else []) + outcome.violations
        assert not problems, _describe(case, problems)

    one_case()
    assert len(ran) >= HYPOTHESIS_CASES


def test_fuzz_cli(seeds: list[Seed], tmp_path: Path) -> None:
    """A subset through ``binslim IN -o OUT --no-verify`` in a subprocess: exit 0 or 1 (never a signal or a
    traceback), one ``error:`` line, and the same outcome and bytes as the library."""
    cases = [random_case(seeds, SEED, index) for index in range(CLI_CASES)]
    work_dirs = [tmp_path / str(index) for index in range(CLI_CASES)]
    outcomes = []
    for case, work_dir in zip(cases, work_dirs):  # in the main thread: the time bound is a signal timer
        work_dir.mkdir()
        outcomes.append(check_case(case, str(work_dir), readelf=False))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        cli_problems = list(
            pool.map(
                lambda args: cli_violations(args[0], str(args[1]), args[2]), zip(cases, work_dirs, outcomes)
            )
        )
    failures = []
    for case, outcome, problems in zip(cases, outcomes, cli_problems):
        problems = ([outcome.message] if outcome.status == "bug" else []) + outcome.violations + problems
        if problems:
            failures.append(_describe(case, problems))
    assert not failures, "\n".join(failures)
    assert {o.status for o in outcomes} == {"ok", "error"}


def test_pristine_seeds_meet_the_invariants(seeds: list[Seed], tmp_path: Path) -> None:
    """The oracle itself: every unmutated seed (extended-numbering variants too) strips cleanly."""
    for seed in seeds:
        work_dir = tmp_path / seed.name
        work_dir.mkdir()
        outcome = check_case(Case(seed.name, seed.data, ()), str(work_dir))
        assert outcome.status == "ok" and not outcome.violations, (seed.name, outcome)


def test_fuzz_script_replays_a_case(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The opt-in campaign script runs and can replay one case by number."""
    script = Path(__file__).with_name("fuzz_elf.py")
    done = subprocess.run(
        [sys.executable, str(script), "--cases", "20", "--seed", "1", "--jobs", "1", "--cli-every", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20 cases (seed 1)" in done.stdout
    done = subprocess.run(
        [sys.executable, str(script), "--seed", "1", "--case", "3", "--save-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "case-1-3.elf").read_bytes() == random_case(
        load_seeds({name: fixture.path for name, fixture in fixtures.items()}), 1, 3
    ).data


# -- hostile counts and sizes: fail fast, allocate nothing big ---------------------------------------------


def _mutated(fixtures: dict[str, Fixture], name: str, mutate: Callable[[Mutable], None]) -> Case:
    seed = load_seed(name, fixtures[name].path)
    m = Mutable(seed)
    mutate(m)
    return Case(name, bytes(m.data), tuple(m.notes))


def _section_index(m: Mutable, name: str) -> int:
    return next(s.index for s in m.seed.sections if s.name == name)


HOSTILE = {
    "e_shnum 0, section 0 claims 2**40 sections": lambda m: (
        m.put_ehdr("e_shnum", 0),
        m.put_shdr(0, "sh_size", 1 << 40),
    ),
    "e_shnum 0, section 0 claims 2**64-1 sections": lambda m: (
        m.put_ehdr("e_shnum", 0),
        m.put_shdr(0, "sh_size", (1 << 64) - 1),
    ),
    "e_shnum 65535": lambda m: m.put_ehdr("e_shnum", 0xFFFF),
    "e_phnum 65535 (PN_XNUM), section 0 claims 2**32-1 segments": lambda m: (
        m.put_ehdr("e_phnum", PN_XNUM),
        m.put_shdr(0, "sh_info", 0xFFFFFFFF),
    ),
    "e_phnum 65534": lambda m: m.put_ehdr("e_phnum", 0xFFFE),
    "a section of 2**62 bytes": lambda m: m.put_shdr(_section_index(m, ".comment"), "sh_size", 1 << 62),
    "the name table is 2**62 bytes": lambda m: m.put_shdr(m.seed.shstrndx, "sh_size", 1 << 62),
    "a segment of 2**63 bytes": lambda m: m.put_phdr(2, "p_filesz", 1 << 63),
    "section table at offset 2**64-64": lambda m: m.put_ehdr("e_shoff", (1 << 64) - 64),
    "symbol table of 2**40 bytes": lambda m: m.put_shdr(_section_index(m, ".symtab"), "sh_size", 1 << 40),
}


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_hostile_counts_fail_fast_without_allocating(
    fixtures: dict[str, Fixture], what: str, tmp_path: Path
) -> None:
    case = _mutated(fixtures, "hello-c-pie", HOSTILE[what])
    path = tmp_path / "hostile"
    path.write_bytes(case.data)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedELFError) as error:
            strip(path, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BUDGET, f"{what}: {peak:,} bytes"
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "past the end of the file" in message
    assert not (tmp_path / "out").exists()
    assert path.read_bytes() == case.data


def test_hostile_count_under_an_address_space_limit(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The CLI under a 256 MiB address-space limit: billions of claimed sections are a one-line error."""
    case = _mutated(fixtures, "hello-c-pie", HOSTILE["e_shnum 0, section 0 claims 2**40 sections"])
    path = tmp_path / "hostile"
    path.write_bytes(case.data)

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))

    done = subprocess.run(
        [sys.executable, "-m", "binslim", str(path), "-o", str(tmp_path / "out"), "--no-verify"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {path}: section header table (1099511627776 entries")
    assert done.stderr.count("\n") == 1


# -- regressions: one per bug the fuzzer found -------------------------------------------------------------


def _check(case: Case, tmp_path: Path, status: str) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    outcome = check_case(case, str(tmp_path))
    assert outcome.status == status, (outcome.status, outcome.message)
    assert not outcome.violations, outcome.violations
    return outcome.message


def _output_sections(tmp_path: Path) -> list[tuple[str, int, int, int, int]]:
    """(name, type, flags, link, info) of each section of check_case's output."""
    with ElfFile(str(tmp_path / "out" / "output")) as elf:
        return [(s.name, s.sh_type, s.sh_flags, s.sh_link, s.sh_info) for s in elf.sections]


def test_section_names_survive_a_debug_like_name(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """strip.plan_strip removed the section-name table when it was named like debug info (or typed like a
    symbol table), leaving every section nameless."""

    def rename(m: Mutable) -> None:
        m.put_shdr(m.seed.shstrndx, "sh_name", m.get_shdr(_section_index(m, ".debug_abbrev"), "sh_name"))

    _check(_mutated(fixtures, "hello-c-pie", rename), tmp_path, "ok")
    names = [name for name, *_ in _output_sections(tmp_path)]
    assert ".dynamic" in names and ".text" in names


def test_name_table_must_be_an_unloaded_string_table(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """reader: e_shstrndx naming a loaded section (.dynstr) made the writer move that section's header onto
    the new names; a name table typed SYMTAB was stripped as symbols."""
    dynstr = _mutated(fixtures, "hello-cxx", lambda m: m.put_ehdr("e_shstrndx", _section_index(m, ".dynstr")))
    assert "is not an unloaded string table" in _check(dynstr, tmp_path / "a", "error")
    typed = _mutated(fixtures, "hello-c-i386", lambda m: m.put_shdr(m.seed.shstrndx, "sh_type", SHT_SYMTAB))
    assert "is not an unloaded string table" in _check(typed, tmp_path / "b", "error")


@pytest.mark.parametrize("e_type", [0, 0xEC61])
def test_object_of_unknown_type_keeps_no_dangling_relocations(
    fixtures: dict[str, Fixture], e_type: int, tmp_path: Path
) -> None:
    """strip.plan_strip: an object whose e_type is not ET_REL loses .symtab at --strip-all; its relocation
    and group sections stayed, linked to section 0."""
    case = _mutated(fixtures, "comdat-obj", lambda m: m.put_ehdr("e_type", e_type))
    _check(case, tmp_path, "ok")
    for name, sh_type, _, link, _ in _output_sections(tmp_path):
        if sh_type in (SHT_REL, SHT_RELA, SHT_GROUP):
            assert link != 0, name


def test_string_table_named_like_debug_info_stays(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """strip.plan_strip removed an object's .strtab renamed .debug_line_str while .symtab, which is kept,
    takes its names from it."""

    def rename(m: Mutable) -> None:
        m.put_shdr(
            _section_index(m, ".strtab"),
            "sh_name",
            m.get_shdr(_section_index(m, ".debug_line_str"), "sh_name"),
        )

    _check(_mutated(fixtures, "greet-obj", rename), tmp_path, "ok")
    sections = _output_sections(tmp_path)
    symtab = next(section for section in sections if section[0] == ".symtab")
    assert sections[symtab[3]][:2] == (".debug_line_str", SHT_STRTAB)


def test_kept_section_keeps_its_links_transitively(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """strip.plan_strip: .symtab retyped REL (sh_info: a debug section) and kept because .strtab links back to
    it; the debug section it names through sh_info went, leaving sh_info 0."""

    def loop(m: Mutable) -> None:
        symtab, strtab = _section_index(m, ".symtab"), _section_index(m, ".strtab")
        m.put_shdr(symtab, "sh_type", SHT_REL)
        m.put_shdr(strtab, "sh_link", symtab)

    _check(_mutated(fixtures, "greet-obj", loop), tmp_path, "ok")
    for name, sh_type, _, _, info in _output_sections(tmp_path):
        assert not (sh_type == SHT_REL and info == 0), name


def test_group_flagged_info_link_is_malformed(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """reader: a group's sh_info is its signature symbol; flagged SHF_INFO_LINK, readelf reads it as a section
    index, which renumbering then put out of range."""

    def flag(m: Mutable) -> None:
        index = next(s.index for s in m.seed.sections if s.sh_type == SHT_GROUP)
        m.put_shdr(index, "sh_flags", m.get_shdr(index, "sh_flags") | SHF_INFO_LINK)

    assert "its sh_info is a symbol index" in _check(
        _mutated(fixtures, "comdat-obj", flag), tmp_path, "error"
    )


def test_hostile_names_cannot_reach_the_terminal(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """errors.BinslimError: a section name holding ESC and newline bytes went raw into the error line (a
    terminal acts on escape sequences; a newline breaks the one-line promise)."""

    def rename(m: Mutable) -> None:
        comment = _section_index(m, ".comment")
        names = m.seed.sections[m.seed.shstrndx]
        m.put_shdr(comment, "sh_name", names.sh_size - 12)
        m.data[names.sh_offset + names.sh_size - 12 : names.sh_offset + names.sh_size] = (
            b"\x1b[2J\nxx\x85\x1dyz\0"
        )
        m.put_shdr(comment, "sh_size", 1 << 40)

    path = Path(_write(_mutated(fixtures, "hello-c-pie", rename), tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "binslim", str(path), "-o", str(tmp_path / "out"), "--no-verify"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.count(b"\n") == 1 and b"\x1b" not in done.stderr and b"\x85" not in done.stderr
    assert b"(\\x1b[2J\\nxx\\x85\\x1dyz)" in done.stderr, done.stderr


def test_info_link_section_follows_its_target(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """strip.plan_strip: a section of unknown type flagged SHF_INFO_LINK whose sh_info section was removed
    stayed, pointing at section 0."""

    def retype(m: Mutable) -> None:
        m.put_shdr(_section_index(m, ".rela.debug_aranges"), "sh_type", 0x161C)

    _check(_mutated(fixtures, "greet-obj", retype), tmp_path, "ok")
    for name, _, flags, _, info in _output_sections(tmp_path):
        assert not (flags & SHF_INFO_LINK and info == 0), name


def test_loaded_section_keeps_what_it_points_at(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """strip.plan_strip removed sections that loaded ones point at (a loaded relocation section's target
    .debug_aranges, found by the fuzzer), leaving their sh_link/sh_info at 0."""

    def link(m: Mutable) -> None:
        m.put_shdr(_section_index(m, ".text"), "sh_link", _section_index(m, ".debug_str"))

    _check(_mutated(fixtures, "hello-c-pie", link), tmp_path, "ok")
    sections = _output_sections(tmp_path)
    names = [name for name, *_ in sections]
    assert ".debug_info" not in names and ".symtab" not in names
    text = next(section for section in sections if section[0] == ".text")
    assert sections[text[3]][0] == ".debug_str"


def test_loaded_symbol_table_is_not_rewritten(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """strip._output_sections rewrote a loaded section typed SYMTAB (and crashed with KeyError on its garbage
    null symbol): loaded bytes cannot move."""
    case = _mutated(
        fixtures,
        "hello-c-i386",
        lambda m: m.put_shdr(_section_index(m, ".note.ABI-tag"), "sh_type", SHT_SYMTAB),
    )
    assert "does not exist" in _check(case, tmp_path, "error")  # its null symbol names section 85

    def loaded_symtab(m: Mutable) -> None:
        section = m.seed.sections[_section_index(m, ".gnu.version_r")]
        m.put_shdr(section.index, "sh_type", SHT_SYMTAB)
        m.data[section.sh_offset : section.sh_offset + section.sh_size] = bytes(
            section.sh_size
        )  # null symbols

    message = _check(_mutated(fixtures, "hello-c-i386", loaded_symtab), tmp_path / "b", "error")
    assert "is loaded but would need rewriting" in message


def test_extended_index_table_of_odd_size(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """symbols.SymbolRewrite: an SHT_SYMTAB_SHNDX table whose size is not a multiple of 4 crashed with
    struct.error ("internal error"); found by the 50,000-case campaign (seed 7, case 29178)."""

    def retype(m: Mutable) -> None:
        m.put_shdr(9, "sh_type", SHT_SYMTAB)
        m.put_shdr(9, "sh_link", 2)
        m.put_shdr(2, "sh_type", SHT_STRTAB)
        m.put_shdr(2, "sh_link", 18)
        m.put_shdr(18, "sh_type", SHT_SYMTAB_SHNDX)
        m.put_shdr(18, "sh_link", 9)

    message = _check(_mutated(fixtures, "hello-go-mips", retype), tmp_path, "error")
    assert message.endswith(".debug_loc: size is not a multiple of 4")


def test_symbol_in_a_missing_section_is_malformed(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """symbols.SymbolRewrite: a symbol naming section 999 of 26 was reported as "defined in a removed section"
    or, for the null symbol, crashed the writer."""

    def bad_symbol(m: Mutable) -> None:
        symtab = m.seed.sections[_section_index(m, ".symtab")]
        m.put(symtab.sh_offset + 6, 2, 999, "null symbol st_shndx")

    message = _check(_mutated(fixtures, "greet-obj", bad_symbol), tmp_path, "error")
    assert "symbol #0 is in section 999, which does not exist" in message


@pytest.mark.parametrize("sh_type", [SHT_PROGBITS, SHT_NOTE])
def test_section_zero_never_has_bytes(fixtures: dict[str, Fixture], sh_type: int, tmp_path: Path) -> None:
    """reader.Section.has_file_bytes counted section 0's size (a section count under extended numbering) as
    bytes: a huge one made the overlay size negative; the writer copied its garbage fields to the output."""

    def section0(m: Mutable) -> None:
        m.put_shdr(0, "sh_type", sh_type)
        m.put_shdr(0, "sh_offset", len(m.data) - 1)
        m.put_shdr(0, "sh_size", 1 << 40)

    _check(_mutated(fixtures, "hello-go-mips", section0), tmp_path, "ok")
    with ElfFile(str(tmp_path / "out" / "output")) as elf:
        zero = elf.sections[0]
        assert (zero.sh_type, zero.sh_offset, zero.sh_size) == (0, 0, 0)
        assert elf.overlay_size == 0


def test_pn_xnum_without_a_count_is_not_zero_segments(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """reader: e_phnum PN_XNUM with section 0's sh_info 0 was read as "no segments", so the segments' bytes
    were rewritten; readelf (and the kernel) read 65535 program headers."""

    def xnum(m: Mutable) -> None:
        m.put_ehdr("e_phnum", PN_XNUM)
        m.put_shdr(0, "sh_info", 0)

    assert "program header table" in _check(_mutated(fixtures, "hello-c-pie", xnum), tmp_path, "error")


def test_sstrip_refuses_segment_count_in_section_zero(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """sstrip.check_headerless compared the resolved e_phnum with PN_XNUM, so a file keeping its segment
    count in section 0 lost it with the section headers; the output's program headers were unreadable."""

    def xnum(m: Mutable) -> None:
        m.put_ehdr("e_phnum", PN_XNUM)
        m.put_shdr(0, "sh_info", m.seed.phnum)

    case = dataclasses.replace(_mutated(fixtures, "hello-go-ppc64", xnum), level="sections")
    assert "lives in section 0 (extended numbering)" in _check(case, tmp_path, "error")


def test_program_headers_overlapping_the_elf_header(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """writer: with the program headers at offset 12, writing e_shoff/e_shnum/e_shstrndx changed three of
    them; such a file is now refused."""
    case = _mutated(fixtures, "hello-go-mips", lambda m: m.put_ehdr("e_phoff", 12))
    assert "program headers overlap the ELF header" in _check(case, tmp_path, "error")


def test_loaded_relocations_against_renumbered_symbols(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """strip._output_sections: a loaded relocation section kept its symbol indices while the symbol table it
    uses was renumbered, so they named the wrong symbols."""

    def load(m: Mutable) -> None:
        index = _section_index(m, ".rela.debug_line")
        m.put_shdr(index, "sh_flags", m.get_shdr(index, "sh_flags") | SHF_ALLOC)

    message = _check(_mutated(fixtures, "greet-obj", load), tmp_path, "error")
    assert "loaded relocations against symbols that removing sections would renumber" in message


def test_symbol_names_from_a_non_string_section(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """reader: a kept .symtab whose names were in .bss (NOBITS) made readelf read past the smaller output."""

    def relink(m: Mutable) -> None:
        m.put_shdr(_section_index(m, ".symtab"), "sh_link", _section_index(m, ".bss"))
        m.put_shdr(_section_index(m, ".bss"), "sh_link", _section_index(m, ".symtab"))

    message = _check(_mutated(fixtures, "hello-go-ppc64", relink), tmp_path, "error")
    assert "takes its names from section" in message


def test_unterminated_symbol_names_stay_linear(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """symbols.SymbolRewrite._rebuild_strtab: a .strtab without NULs made every name run to its end, so the
    names took (symbols x table size) bytes; now the table is kept as it is past a linear budget."""
    pristine = Path(fixtures["comdat-obj"].path).read_bytes()
    filled = bytearray(pristine)
    with ElfFile(fixtures["comdat-obj"].path) as elf:
        strtab = next(s for s in elf.sections if s.name == ".strtab")
    filled[strtab.sh_offset : strtab.sh_offset + strtab.sh_size] = b"A" * strtab.sh_size
    peaks = []
    for name, data in (("pristine", pristine), ("filled", bytes(filled))):
        (tmp_path / name).write_bytes(data)
        tracemalloc.start()
        try:
            strip(tmp_path / name, tmp_path / f"{name}.out")
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] + (256 << 10), peaks
    with ElfFile(str(tmp_path / "filled.out")) as elf:
        assert any(s.name == ".strtab" and s.sh_size == strtab.sh_size for s in elf.sections)


def test_alloc_relocations_of_a_static_binary_do_not_keep_symtab(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """A static binary's .rela.plt links to .symtab but uses no symbol: .symtab still goes, as GNU strip
    removes it. Once one of those relocations names a symbol, .symtab must stay and cannot be renumbered:
    binslim refuses rather than leave loaded relocations naming the wrong symbols."""
    result = strip(fixtures["hello-c-static"].path, tmp_path / "out")
    assert "symbols" in result.removed_by_kind()

    def named_symbol(m: Mutable) -> None:
        rela = m.seed.sections[_section_index(m, ".rela.plt")]
        info_at = rela.sh_offset + 8
        m.put(info_at, 8, (5 << 32) | (m.get(info_at, 8) & 0xFFFFFFFF), ".rela.plt#0 symbol")

    message = _check(_mutated(fixtures, "hello-c-static", named_symbol), tmp_path / "b", "error")
    assert "(.rela.plt) holds loaded relocations against symbols" in message


def _write(case: Case, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "input"
    path.write_bytes(case.data)
    return str(path)
