"""The Docker test engine's own clean-up (tests/docker_engine.py), without starting a daemon."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.docker_engine import _clear_stale_containerd


def test_a_stale_containerd_pid_file_naming_another_process_is_removed_and_the_process_spared(
    tmp_path: Path,
) -> None:
    """A dockerd stopped earlier leaves containerd.pid behind; its number may now belong to any process. The
    file goes, the process lives (dockerd used to take it for its containerd, kill it and time out)."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = tmp_path / "containerd.pid"
        pid_file.write_text(str(bystander.pid))
        _clear_stale_containerd(pid_file)
        assert not pid_file.exists()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def test_an_unreadable_or_missing_pid_file_is_no_error(tmp_path: Path) -> None:
    garbled = tmp_path / "containerd.pid"
    garbled.write_text("not a number")
    _clear_stale_containerd(garbled)
    assert not garbled.exists()
    _clear_stale_containerd(tmp_path / "missing.pid")  # nothing to do
