"""Streaming copies: copy_file_range first, then sendfile, then a chunked loop, each giving the same bytes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from binslim import strip
from binslim.elf import copy as copy_module
from binslim.elf import reader
from testdata.build import Fixture


def _unsupported(*args: object, **kwargs: object) -> int:
    raise OSError(errno.ENOSYS, "not here")


@pytest.mark.parametrize("missing", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_every_fallback_gives_the_same_bytes(
    fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: tuple[str, ...]
) -> None:
    source = fixtures["hello-c-overlay"].path
    reference = tmp_path / "reference"
    strip(source, reference)  # a small file: read whole, its output built in memory and written at once
    # Streamed as a big file is, the output must be the same bytes, whichever way they are copied.
    monkeypatch.setattr(reader, "IN_MEMORY_BYTES", 0)
    calls: list[str] = []
    read_sizes: list[int] = []
    for name in ("copy_file_range", "sendfile", "pread"):
        original = getattr(os, name)

        def traced(*args: object, _name: str = name, _original: object = original) -> object:
            calls.append(_name)
            if _name == "pread":
                read_sizes.append(int(args[1]))  # type: ignore[call-overload]
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(copy_module.os, name, _unsupported if name in missing else traced)
    ours = tmp_path / "ours"
    strip(source, ours)
    assert ours.read_bytes() == reference.read_bytes()
    if not missing:
        assert "copy_file_range" in calls
    elif len(missing) == 1:
        assert "sendfile" in calls and "copy_file_range" not in calls
    else:  # the chunked loop reads the copied bytes itself, far more than the headers the reader needs
        assert sum(read_sizes) >= os.path.getsize(reference) // 2


def test_a_real_io_error_is_not_mistaken_for_missing_support(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, dest = tmp_path / "src", tmp_path / "dst"
    source.write_bytes(b"x" * 100_000)

    def disk_full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(copy_module.os, "copy_file_range", disk_full)
    src_fd, dst_fd = os.open(source, os.O_RDONLY), os.open(dest, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as caught:
            copy_module.copy_range(src_fd, dst_fd, 0, 0, 100_000)
        assert caught.value.errno == errno.ENOSPC
    finally:
        os.close(src_fd)
        os.close(dst_fd)
