"""binslim.runner: argument lists, timeouts that kill the whole group, capped output, honest peak RSS."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from binslim import runner as runner_module
from binslim.errors import ToolFailedError, UnsupportedError
from binslim.runner import DEFAULT_OUTPUT_LIMIT, run
from tests.helpers import IN_CI, require_tool

# One small program with a mode per behaviour under test.
PROBE_SOURCE = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "echo")) {
        for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
        fprintf(stderr, "to stderr\n");
        return argc > 2 ? atoi(argv[2]) : 0;
    }
    if (!strcmp(mode, "stdin")) {
        char buffer[256];
        ssize_t got = read(0, buffer, sizeof buffer);
        printf("read %zd\n", got);
        return 0;
    }
    if (!strcmp(mode, "flood")) {
        static char block[65536];
        memset(block, 'x', sizeof block);
        for (int i = 0; i < 64; i++) fwrite(block, 1, sizeof block, stdout);  /* 4 MiB */
        return 0;
    }
    if (!strcmp(mode, "spawn")) {  /* a grandchild that outlives us, then hang */
        pid_t child = fork();
        if (child == 0) { sleep(60); _exit(0); }
        printf("%d\n", (int)child);
        fflush(stdout);
        pause();
        return 0;
    }
    if (!strcmp(mode, "leave")) {  /* a grandchild that outlives us and holds no output; we exit */
        pid_t child = fork();
        if (child == 0) { close(1); close(2); sleep(60); _exit(0); }
        printf("%d\n", (int)child);
        return 0;
    }
    if (!strcmp(mode, "escape")) {  /* a grandchild in a new session that holds stdout; we exit */
        pid_t child = fork();
        if (child == 0) {
            setsid();
            if (fork() == 0) { sleep(60); _exit(0); }
            _exit(0);
        }
        printf("%d\n", (int)getpid());
        fflush(stdout);
        waitpid(child, NULL, 0);
        return 0;
    }
    if (!strcmp(mode, "pid")) { printf("%d\n", (int)getpid()); return 0; }
    if (!strcmp(mode, "alloc")) {
        size_t size = (size_t)atoi(argv[2]) << 20;
        char *block = malloc(size);
        memset(block, 1, size);
        printf("%d\n", block[size - 1]);
        return 0;
    }
    if (!strcmp(mode, "env")) {
        for (char **entry = environ; *entry; entry++) printf("%s\n", *entry);
        return 0;
    }
    if (!strcmp(mode, "segv")) raise(SIGSEGV);
    printf("probe 1.0\n");
    return 0;
}
"""


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = require_tool("gcc")
    folder = tmp_path_factory.mktemp("runner-probe")
    source = folder / "probe.c"
    source.write_text(PROBE_SOURCE)
    binary = folder / "probe"
    subprocess.run([gcc, "-O1", "-o", str(binary), str(source)], check=True, timeout=120)
    return str(binary)


def children_of_this_process() -> set[tuple[int, str]]:
    """(pid, state) of every process whose parent is us, zombies included."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == os.getpid():
            found.add((int(name), fields[0].decode()))
    return found


def is_running(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def subreaper_flag() -> int:
    flag = ctypes.c_int(-1)
    assert ctypes.CDLL(None).prctl(37, ctypes.byref(flag), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    return flag.value


both_modes = pytest.mark.parametrize("measure_rss", [False, True], ids=["plain", "measured"])


@both_modes
def test_exit_code_output_and_argv(probe: str, measure_rss: bool) -> None:
    done = run([probe, "echo", "3", "two words"], timeout=30, measure_rss=measure_rss)
    assert done.returncode == 3
    assert done.stdout == f"{probe}\necho\n3\ntwo words\n".encode()
    assert done.stderr == b"to stderr\n"
    assert done.argv == (probe, "echo", "3", "two words")
    assert not done.timed_out and done.seconds > 0 and done.peak_rss_kib > 0


@both_modes
def test_relative_program_runs_in_cwd(probe: str, measure_rss: bool) -> None:
    folder, name = os.path.split(probe)
    done = run([f"./{name}", "echo"], timeout=30, cwd=folder, measure_rss=measure_rss)
    assert done.stdout.splitlines()[0] == f"./{name}".encode()


@both_modes
def test_killed_by_signal_is_negative(probe: str, measure_rss: bool) -> None:
    assert run([probe, "segv"], timeout=30, measure_rss=measure_rss).returncode == -11


@both_modes
def test_stdin_reads_end_of_file_at_once(probe: str, measure_rss: bool) -> None:
    assert run([probe, "stdin"], timeout=30, measure_rss=measure_rss).stdout == b"read 0\n"


@both_modes
def test_output_flood_is_capped(probe: str, measure_rss: bool) -> None:
    done = run([probe, "flood"], timeout=60, output_limit=100_000, measure_rss=measure_rss)
    assert done.returncode == 0
    assert done.stdout == b"x" * 100_000
    assert done.stdout_truncated and not done.stderr_truncated


def test_default_output_limit_is_one_mebibyte(probe: str) -> None:
    done = run([probe, "flood"], timeout=60)
    assert len(done.stdout) == DEFAULT_OUTPUT_LIMIT == 1 << 20 and done.stdout_truncated


@both_modes
def test_environment_is_exactly_what_was_given(probe: str, measure_rss: bool) -> None:
    done = run([probe, "env"], timeout=30, env={"ONLY": "this"}, measure_rss=measure_rss)
    assert done.stdout == b"ONLY=this\n"


@both_modes
def test_timeout_kills_the_whole_group_and_leaves_no_orphan(probe: str, measure_rss: bool) -> None:
    before = children_of_this_process()
    done = run([probe, "spawn"], timeout=1.0, measure_rss=measure_rss)
    assert done.timed_out and done.returncode is None
    assert 0.9 < done.seconds < 30
    grandchild = int(done.stdout)
    assert not is_running(grandchild)
    assert children_of_this_process() <= before


@both_modes
def test_leftover_of_a_finished_program_is_killed(probe: str, measure_rss: bool) -> None:
    before = children_of_this_process()
    done = run([probe, "leave"], timeout=30, measure_rss=measure_rss)
    assert done.returncode == 0 and not done.timed_out
    assert not is_running(int(done.stdout))
    assert children_of_this_process() <= before


@both_modes
def test_missing_program_raises_tool_failed(tmp_path: Path, measure_rss: bool) -> None:
    with pytest.raises(ToolFailedError, match="cannot run .*No such file"):
        run([str(tmp_path / "absent")], timeout=30, measure_rss=measure_rss)
    with pytest.raises(ToolFailedError, match="cannot run"):
        run(["binslim-no-such-program"], timeout=30, measure_rss=measure_rss)


@both_modes
def test_unexecutable_format_raises_tool_failed(tmp_path: Path, measure_rss: bool) -> None:
    # No "#!" line: a shell would run it as a script; the kernel, and so the runner, refuses.
    script = tmp_path / "not-a-program"
    script.write_text("echo should not run\n")
    script.chmod(0o755)
    with pytest.raises(ToolFailedError, match="Exec format error"):
        run([str(script)], timeout=30, measure_rss=measure_rss)


def test_measured_bare_name_runs_the_program_not_a_shell_builtin() -> None:
    require_tool("true")
    done = run(["true", "--version"], timeout=30, measure_rss=True)
    assert done.returncode == 0 and b"coreutils" in done.stdout.lower()


def test_check_raises_with_exit_code_and_stderr_tail(probe: str) -> None:
    with pytest.raises(ToolFailedError) as caught:
        run([probe, "echo", "4"], timeout=30, check=True)
    assert caught.value.returncode == 4
    assert "probe exited with 4: to stderr" in str(caught.value)
    assert caught.value.argv == (probe, "echo", "4")


def test_check_raises_on_timeout(probe: str) -> None:
    with pytest.raises(ToolFailedError, match="timed out after 0.5 s") as caught:
        run([probe, "spawn"], timeout=0.5, check=True)
    assert caught.value.timed_out


def test_peak_rss_is_the_programs_own_not_ours(probe: str) -> None:
    """ru_maxrss of a direct child includes our RSS at its exec; the measured mode does not."""
    ballast = bytearray(b"\x01") * (256 << 20)  # 256 MiB, every page touched
    plain = run([probe], timeout=30)
    measured = run([probe], timeout=30, measure_rss=True)
    assert len(ballast) == 256 << 20
    print(
        f"peak RSS of a tiny C program: plain {plain.peak_rss_kib} KiB, measured {measured.peak_rss_kib} KiB"
    )
    assert plain.peak_rss_kib > 200 * 1024  # the kernel behaviour this mode exists for
    assert 0 < measured.peak_rss_kib < 32 * 1024


def test_measured_peak_rss_sees_the_programs_allocation(probe: str) -> None:
    small = run([probe], timeout=30, measure_rss=True).peak_rss_kib
    big = run([probe, "alloc", "64"], timeout=30, measure_rss=True).peak_rss_kib
    assert big >= small + 60 * 1024


@pytest.mark.parametrize("isolate", [False, True], ids=["tool", "isolated"])
def test_parallel_measured_runs_each_get_their_own_result(probe: str, isolation: str, isolate: bool) -> None:
    """Runs in several threads at once: none ends another's process (isolated runs without a namespace end
    unknown children of ours, so a run started meanwhile must already be known)."""
    flag_before, children_before = subreaper_flag(), children_of_this_process()

    def one(index: int) -> tuple[int, bytes]:
        done = run([probe, "echo", str(index % 7)], timeout=60, measure_rss=index % 2 == 0, isolate=isolate)
        return done.returncode or 0, done.stdout

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(32)))
    for index, (code, stdout) in enumerate(results):
        assert code == index % 7
        assert stdout == f"{probe}\necho\n{index % 7}\n".encode()
    assert children_of_this_process() <= children_before
    assert subreaper_flag() == flag_before  # process-wide flag held only during runs


def test_no_zombies_after_many_runs(probe: str) -> None:
    before = children_of_this_process()
    for measure_rss in (False, True) * 10:
        run([probe], timeout=30, measure_rss=measure_rss)
    time.sleep(0.05)
    assert children_of_this_process() <= before


def test_without_a_subreaper_plain_runs_still_work(probe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """prctl can be refused (seccomp, not Linux): plain runs go on, measured runs say why they cannot."""

    def refuse() -> bool:
        raise UnsupportedError("prctl(37) failed: Operation not permitted")

    monkeypatch.setattr(runner_module, "_prctl_get_subreaper", refuse)
    assert run([probe, "echo", "5"], timeout=30).returncode == 5
    with pytest.raises(UnsupportedError, match="PR_SET_CHILD_SUBREAPER"):
        run([probe], timeout=30, measure_rss=True)
    monkeypatch.undo()
    assert run([probe], timeout=30, measure_rss=True).returncode == 0


def escaped_grandchildren() -> list[int]:
    """Live processes whose command line is the probe's "escape" mode."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.endswith(b"\0escape\0") and is_running(int(name)):
                found.append(int(name))
    return found


@pytest.fixture(params=["namespace", "subreaper"])
def isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "namespace":
        if not runner_module.pid_namespace_available():
            if IN_CI:
                pytest.fail("no PID namespace in CI (it runs as root)")
            pytest.skip("no PID namespace here (needs root or unprivileged user namespaces)")
    else:
        monkeypatch.setattr(runner_module, "_namespace_prefix", lambda: ())
    return str(request.param)


@both_modes
def test_isolated_run_ends_a_setsid_grandchild_holding_stdout(
    probe: str, isolation: str, measure_rss: bool
) -> None:
    before = children_of_this_process()
    done = run([probe, "escape"], timeout=20, isolate=True, measure_rss=measure_rss)
    assert done.returncode == 0 and not done.timed_out
    assert done.seconds < 5  # not waiting for the grandchild's end of the output
    assert escaped_grandchildren() == []
    assert children_of_this_process() <= before
    if isolation == "namespace":
        assert done.stdout == b"1\n"  # PID 1 of its own namespace


def test_tool_runs_leave_other_children_of_this_process_alone(probe: str) -> None:
    """Only isolated runs without a namespace adopt unknown children; a tool run or a namespaced run never
    touches a child this process started some other way (Popen's own wait still gets its status)."""
    other = subprocess.Popen(["sleep", "1"])
    try:
        assert run([probe, "leave"], timeout=30).returncode == 0
        if runner_module.pid_namespace_available():
            assert run([probe, "leave"], timeout=30, isolate=True).returncode == 0
        assert other.poll() is None
        assert other.wait(timeout=10) == 0
    finally:
        other.kill()
        other.wait()


def test_no_pid_namespace_when_asked(probe: str) -> None:
    """BINSLIM_NO_PID_NAMESPACE makes isolated runs go without one (e.g. a program that must not be PID 1)."""
    code = (
        "import sys; from binslim import runner; "
        "done = runner.run([sys.argv[1], 'pid'], timeout=30, isolate=True); "
        "print(runner.pid_namespace_available(), int(done.stdout))"
    )
    env = {**os.environ, "BINSLIM_NO_PID_NAMESPACE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    available, pid = done.stdout.split()
    assert available == "False" and int(pid) > 1
