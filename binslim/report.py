"""Results to text or JSON. Sizes are exact bytes; units are only a rendering, always named MB or MiB."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import printable

if TYPE_CHECKING:
    from .slim import SlimResult
    from .tree import TreeSummary

SCHEMA_VERSION = 2  # 2: verify.added is the mean of paired differences, with an interval; warnings
KIND_ORDER = ("symbols", "debug", "notes", "other", "unused_segments", "headers")


def human_size(size: int) -> str:
    """``12,345,678 B (12.35 MB / 11.77 MiB)``: exact bytes first, then both decimal and binary units."""
    if abs(size) < 1000:
        return f"{size:,} B"
    if abs(size) < 1_000_000:
        return f"{size:,} B ({size / 1e3:.1f} kB / {size / 1024:.1f} KiB)"
    return f"{size:,} B ({size / 1e6:.2f} MB / {size / 1048576:.2f} MiB)"


def percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "0.0%"


def format_result(result: SlimResult) -> str:
    """The text report of one file; names from the input are escaped for the terminal."""
    return "\n".join(printable(line) for line in _result_lines(result))


def _result_lines(result: SlimResult) -> list[str]:
    lines = [f"{result.input} -> {result.output}: {result.message}"]
    if result.status == "failed":
        return lines[:1]
    rows = [("original", result.original_size), ("stripped", result.stripped_size)]
    if result.packed_size is not None:
        rows.append(("packed", result.packed_size))
    rows.append(("final", result.final_size))
    for label, size in rows:
        lines.append(f"  {label:<10}{human_size(size)}")
    lines.append(f"  {'saved':<10}{human_size(result.saved)}, {percent(result.saved, result.original_size)}")
    if result.removed:
        lines.append(f"  {'removed':<10}" + _removed_by_kind(result))
    if result.kept_notes:
        kept = ", ".join(f"{name} {size} B" for name, size in result.kept_notes)
        lines.append(f"  {'kept':<10}{kept}")
    if result.overlay:
        lines.append(f"  {'overlay':<10}{human_size(result.overlay)} kept byte for byte after the image")
    if result.upx is not None and result.upx.packed:
        lines.append(
            f"  {'upx':<10}{result.upx.version}, method {result.upx.method}, level {result.upx.level},"
            f" {result.upx.seconds:.2f} s"
        )
    elif result.upx_reason:
        lines.append(f"  {'upx':<10}not packed: {result.upx_reason}")
    if result.verify is not None:
        lines.extend(_format_verify(result))
    for note in result.notes:
        if not note.startswith("not packed:"):
            lines.append(f"  note: {note}")
    return lines


def _format_verify(result: SlimResult) -> list[str]:
    v = result.verify
    assert v is not None
    if not v.ran:
        return [f"  {'verify':<10}static checks passed; not run: {v.reason}"]
    if v.original_varies:
        lines = [f"  {'verify':<10}not compared: {v.reason}"]
    else:
        same = "yes" if v.same_behaviour else "no"
        lines = [
            f"  {'verify':<10}same behaviour: {same} (args: {' '.join(v.args) or '(none)'})"
            + (f"; {v.reason}" if v.reason else "")
        ]
    if v.original is not None and v.final is not None and v.startup is not None:
        lines.append(
            f"  {'startup':<10}original {v.original.median_ms:.1f} ms ({v.original.min_ms:.1f}-"
            f"{v.original.max_ms:.1f}), final {v.final.median_ms:.1f} ms ({v.final.min_ms:.1f}-"
            f"{v.final.max_ms:.1f}), added {v.startup.describe()}"
        )
        lines.append(
            f"  {'peak RSS':<10}original {v.original.peak_rss_kib:,} KiB, final {v.final.peak_rss_kib:,} KiB,"
            f" added {v.final.peak_rss_kib - v.original.peak_rss_kib:+,} KiB"
        )
    lines.extend(f"  warning: {warning}" for warning in v.warnings)
    return lines


def format_summary(results: Sequence[SlimResult]) -> str:
    ok = [r for r in results if r.status == "ok"]
    skipped = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    before = sum(r.original_size for r in results if r.status != "failed")
    after = sum(r.final_size for r in results if r.status != "failed")
    return (
        f"{len(results)} files: {len(ok)} slimmed, {len(skipped)} skipped, {len(failed)} failed;"
        f" {human_size(before)} -> {human_size(after)}"
    )


def _removed_by_kind(result: SlimResult) -> str:
    by_kind: dict[str, int] = {}
    for removed in result.removed:
        by_kind[removed.kind] = by_kind.get(removed.kind, 0) + removed.size
    return ", ".join(
        f"{kind.replace('_', ' ')} {by_kind[kind]:,} B" for kind in KIND_ORDER if kind in by_kind
    )


def format_tree_line(result: SlimResult) -> str:
    """One line per file of a tree: ``path: 20,920 B -> 14,368 B (-31.3%): stripped; removed ...``, with
    a kept overlay and a verification that did not run said too. Names from the input are escaped (a
    newline in a file name must not start a new line)."""
    if result.status == "failed":
        named = result.message.startswith(result.input)
        return printable(result.message if named else f"{result.input}: {result.message}")
    sizes = f"{result.original_size:,} B"
    if result.final_size != result.original_size:
        sizes += f" -> {result.final_size:,} B (-{percent(result.saved, result.original_size)})"
    line = f"{result.input}: {sizes}: {result.message}"
    if result.removed:
        line += f"; removed {_removed_by_kind(result)}"
    if result.overlay:
        line += f"; overlay of {result.overlay:,} B kept"
    if result.verify is not None and not result.verify.ran:
        line += f"; not run to verify: {result.verify.reason}"
    # What verification did not cover, in its first clause: the advice is in the single-file report.
    warnings = result.verify.warnings if result.verify is not None else ()
    line += "".join(f"; warning: {warning.split('; ', 1)[0]}" for warning in warnings)
    return printable(line)


def format_tree_summary(summary: TreeSummary) -> str:
    def reasons(counts: Sequence[tuple[str, int]]) -> str:
        return " (" + ", ".join(f"{count} {reason}" for reason, count in counts) + ")" if counts else ""

    skipped = sum(count for _, count in summary.skipped)
    symlinks = f"{summary.symlinks:,} symlink{'' if summary.symlinks == 1 else 's'} not followed"
    lines = [
        f"{summary.files:,} files seen: {summary.elf:,} ELF, {summary.not_elf:,} not ELF, {symlinks}"
        + (f", {summary.special:,} neither file nor link" if summary.special else ""),
        f"{summary.stripped:,} {'would be slimmed' if summary.dry_run else 'slimmed'},"
        f" {skipped:,} skipped{reasons(summary.skipped)}, {summary.failed:,} failed",
    ]
    if summary.packed or summary.not_packed:
        not_packed = sum(count for _, count in summary.not_packed)
        packed = f"UPX: {summary.packed:,} packed, {not_packed:,} not packed"
        lines.append(packed + reasons(summary.not_packed))
    verb = "would save" if summary.dry_run else "saved"
    lines.append(
        f"ELF bytes: {human_size(summary.bytes_before)} -> {human_size(summary.bytes_after)}, {verb}"
        f" {human_size(summary.saved)}, {percent(summary.saved, summary.bytes_before)}"
        + ("; dry run, nothing written" if summary.dry_run else "")
    )
    return "\n".join(lines)


def to_json_document(results: Iterable[SlimResult], summary: TreeSummary | None = None) -> dict[str, Any]:
    document = {"schema": SCHEMA_VERSION, "binslim": __version__, "results": [r.to_dict() for r in results]}
    if summary is not None:
        document["summary"] = summary.to_dict()
    return document


def dumps(results: Iterable[SlimResult], summary: TreeSummary | None = None) -> str:
    import json

    return json.dumps(to_json_document(results, summary), indent=2, sort_keys=False)


def __getattr__(name: str) -> Any:
    # REPORT_SCHEMA (documented here) is built only when asked for: no command needs it.
    if name == "REPORT_SCHEMA":
        from .report_schema import build

        return build(SCHEMA_VERSION)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
