"""Verification against hostile programs (testdata/hostile/): each gets its expected verdict, and after
every test nothing any of them started is still alive.

Each program is built under a name carrying a token unique to this test session, so that the leftover
check finds exactly the processes these tests started (wherever they were reparented, whatever they
renamed their folder to) and nothing another test run on the same machine started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

import binslim
from binslim import runner as runner_module
from binslim.errors import ToolFailedError, UsageError, VerificationError
from binslim.report import REPORT_SCHEMA
from binslim.runner import Completed, run
from binslim.verifier import measure_startup, require_same, verify
from testdata.build import Fixture
from tests.helpers import IN_CI, REPO_ROOT, clean_env, require_tool, run_binslim

HOSTILE_DIR = REPO_ROOT / "testdata" / "hostile"
PROGRAMS = ("daemon", "holder", "clock", "usage", "selfsize", "sleeper", "flaky", "marker")
TOKEN = f"hostile{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name → path of each program, built with its symbol table (so stripping changes the file)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not found: install Debian's gcc (bash scripts/install.sh --test)")
    folder = tmp_path_factory.mktemp("hostile")
    paths: dict[str, str] = {}
    for name in PROGRAMS:
        binary = folder / f"{TOKEN}-{name}"
        extra = [f'-DMARKER_PATH="{folder / "marker-ran"}"'] if name == "marker" else []
        subprocess.run(
            [gcc, "-O1", *extra, "-o", str(binary), str(HOSTILE_DIR / f"{name}.c")], check=True, timeout=120
        )
        paths[name] = str(binary)
    paths["marker-file"] = str(folder / "marker-ran")
    return paths


def processes_of_this_session() -> list[tuple[int, str]]:
    """(pid, cmdline) of every live process whose command line carries this session's token."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if TOKEN.encode() in cmdline and state != b"Z":
            found.append((int(name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


@pytest.fixture(autouse=True)
def nothing_left_alive() -> Iterator[None]:
    yield
    leftovers = processes_of_this_session()
    for pid, _ in leftovers:  # do not let one failure poison the next test
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    assert leftovers == [], f"processes outlived the test: {leftovers}"


@pytest.fixture(params=["namespace", "subreaper"])
def containment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of containing a run: a PID namespace, and (without one) the subreaper alone."""
    if request.param == "namespace":
        if not runner_module.pid_namespace_available():
            message = "no PID namespace here (needs root or unprivileged user namespaces)"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    else:
        monkeypatch.setattr(runner_module, "_namespace_prefix", lambda: ())
    return str(request.param)


def stripped(path: str, folder: Path) -> str:
    target = folder / os.path.basename(path)
    binslim.strip(path, target)
    assert os.path.getsize(target) < os.path.getsize(path)
    return str(target)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Completed] = []

    def __call__(self, argv: list[str], **options: object) -> Completed:
        done = run(argv, **options)  # type: ignore[arg-type]
        self.calls.append(done)
        return done


def test_double_forking_daemon_is_ended(hostile: dict[str, str], tmp_path: Path, containment: str) -> None:
    marker = tmp_path / "daemon-wrote-this"
    result = verify(
        hostile["daemon"], stripped(hostile["daemon"], tmp_path), args=("--version", str(marker)), runs=2
    )
    assert result.same_behaviour is True and result.reason == "same exit code (0), stdout and stderr"
    assert result.startup is not None and result.warnings == ()
    assert processes_of_this_session() == []
    time.sleep(1.5)  # the grandchild would have written its file by now
    assert not marker.exists()


def test_setsid_child_holding_stdout_does_not_make_a_timeout(
    hostile: dict[str, str], tmp_path: Path, containment: str
) -> None:
    recorder = Recorder()
    result = verify(
        hostile["holder"], stripped(hostile["holder"], tmp_path), timeout=5.0, runs=2, runner=recorder
    )
    assert result.same_behaviour is True and result.reason == "same exit code (0), stdout and stderr"
    assert result.original is not None and result.startup is not None  # timed, not "both timed out"
    assert len(recorder.calls) == 3 + 2 + 2 * 2 * 2  # original twice, result, warm-ups, 2 rounds × 2 kinds
    for done in recorder.calls:
        assert not done.timed_out and done.returncode == 0 and done.seconds < 2.5
        assert done.stdout == b"hostile-holder 1.0\n"


def test_time_printing_original_is_not_deterministic(hostile: dict[str, str], tmp_path: Path) -> None:
    result = verify(hostile["clock"], stripped(hostile["clock"], tmp_path), runs=2)
    assert result.ran and result.original_varies and result.same_behaviour is None
    assert result.reason.startswith("the original itself is not deterministic")
    assert "--verify-args or --verify-cmd" in result.reason
    assert result.to_dict()["original_varies"] is True and result.to_dict()["startup_ms"] is None
    with pytest.raises(VerificationError, match="the original itself is not deterministic") as caught:
        require_same(result, "app")
    assert caught.value.exit_code == 3 and str(caught.value).startswith("app: ")
    assert caught.value.verify is result


def test_time_printing_original_exits_3_from_the_cli(hostile: dict[str, str], tmp_path: Path) -> None:
    done = run_binslim(hostile["clock"], "-o", str(tmp_path / "out"), "--verify-runs", "2")
    assert done.returncode == 3
    assert "the original itself is not deterministic" in done.stderr and "--verify-cmd" in done.stderr
    assert not (tmp_path / "out").exists()


def test_usage_error_on_version_is_a_warning(hostile: dict[str, str], tmp_path: Path) -> None:
    result = verify(hostile["usage"], stripped(hostile["usage"], tmp_path), runs=2)
    assert result.same_behaviour is True and result.reason == "same exit code (2), stdout and stderr"
    assert result.warnings == (
        "the original exits with 2 (args: --version): only that error path was exercised; choose"
        " --verify-args or --verify-cmd that make it succeed",
    )
    assert result.to_dict()["warnings"] == list(result.warnings)
    done = run_binslim(hostile["usage"], "-o", str(tmp_path / "out"), "--verify-runs", "2")
    assert done.returncode == 0
    assert "warning: the original exits with 2 (args: --version): only that error path" in done.stdout


def test_usage_error_warning_in_a_tree_line(hostile: dict[str, str], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy2(hostile["usage"], tree / "usage")
    done = run_binslim("-r", str(tree))
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith(str(tree / "usage"))]
    assert line.endswith(
        "; warning: the original exits with 2 (args: --version): only that error path was exercised"
    )


def test_program_reading_its_own_size_differs(hostile: dict[str, str], tmp_path: Path) -> None:
    result = verify(hostile["selfsize"], stripped(hostile["selfsize"], tmp_path), runs=2)
    assert result.same_behaviour is False and not result.original_varies
    assert result.reason.startswith("stdout line 2: 'size ")
    with pytest.raises(VerificationError, match="does not behave like the original"):
        binslim.slim(hostile["selfsize"], tmp_path / "out", verify_runs=2)
    assert not (tmp_path / "out").exists()


def test_sleeping_forever_both_time_out_with_a_warning(
    hostile: dict[str, str], tmp_path: Path, containment: str
) -> None:
    recorder = Recorder()
    result = verify(
        hostile["sleeper"], stripped(hostile["sleeper"], tmp_path), timeout=0.5, runs=2, runner=recorder
    )
    assert result.same_behaviour is True and result.startup is None
    assert result.reason == "both timed out after 0.5 s; counted as the same; startup not measured"
    assert "only that was compared" in result.warnings[0]
    assert [done.timed_out for done in recorder.calls] == [True, True, True]


def test_failing_only_in_a_timed_run_is_caught(hostile: dict[str, str], tmp_path: Path) -> None:
    result = verify(hostile["flaky"], stripped(hostile["flaky"], tmp_path), runs=3)
    assert result.same_behaviour is False and not result.original_varies
    # Compared run: the result's first; its warm-up is the second; the first timed run is its third.
    assert result.reason == (
        "timed run 1 of the result differs from the original's first run: exit code 0→1;"
        " stdout line 1: 'hostile-flaky 1.0'→'hostile-flaky: failed on run 3'"
    )


def test_original_failing_in_a_later_run_varies(hostile: dict[str, str], tmp_path: Path) -> None:
    result = verify(hostile["flaky"], stripped(hostile["flaky"], tmp_path), args=("--always",), runs=3)
    assert result.original_varies and result.same_behaviour is None
    # The original's two reference runs agree; its third run, the warm-up, fails.
    assert result.reason.startswith(
        "the original itself is not deterministic with the arguments given (warm-up run of the original"
        " differs from the original's first run: exit code 0→1;"
    )


def test_measure_startup_checks_every_run_too(hostile: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ToolFailedError, match="startup not measured: memory run 1 of the binary differs"):
        measure_startup(hostile["flaky"], args=("--always",), runs=3)  # its third run fails


def test_marker_proves_a_verified_run_executes_the_binary(hostile: dict[str, str], tmp_path: Path) -> None:
    marker = Path(hostile["marker-file"])
    marker.unlink(missing_ok=True)
    binslim.slim(hostile["marker"], tmp_path / "out", verify_runs=1)
    assert marker.exists()  # the control: verification does run it


def test_no_verify_never_executes_the_binary(hostile: dict[str, str], tmp_path: Path) -> None:
    marker = Path(hostile["marker-file"])
    marker.unlink(missing_ok=True)
    done = run_binslim(hostile["marker"], "-o", str(tmp_path / "out"), "--no-verify")
    assert done.returncode == 0 and (tmp_path / "out").exists()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--upx", "--upx-method", "auto", "--max-startup-ms", "1000"), "--upx-method auto"),
        (("--upx", "--max-startup-ms", "1000"), "--max-startup-ms"),
    ],
    ids=["auto", "budget"],
)
def test_no_verify_with_a_startup_budget_is_a_usage_error(
    hostile: dict[str, str], tmp_path: Path, flags: tuple[str, ...], named: str
) -> None:
    """A budget needs the binary run and timed; --no-verify promises it never runs: exit 2, nothing run."""
    marker = Path(hostile["marker-file"])
    marker.unlink(missing_ok=True)
    done = run_binslim(hostile["marker"], "-o", str(tmp_path / "out"), "--no-verify", *flags)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {named} needs the startup measured by running the binary, and --no-verify never runs it:"
        " drop one of them\n"
    )
    assert not marker.exists() and not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="--no-verify never runs it"):
        binslim.slim(hostile["marker"], tmp_path / "out", upx=True, verify=False, max_startup_ms=1000)
    assert not marker.exists()


def test_auto_without_a_budget_is_a_usage_error(hostile: dict[str, str], tmp_path: Path) -> None:
    done = run_binslim(hostile["marker"], "-o", str(tmp_path / "out"), "--upx-method", "auto")
    assert done.returncode == 2 and "--upx-method auto needs --max-startup-ms" in done.stderr


def test_a_budget_with_one_timed_pair_is_a_usage_error(hostile: dict[str, str], tmp_path: Path) -> None:
    marker = Path(hostile["marker-file"])
    marker.unlink(missing_ok=True)
    done = run_binslim(
        hostile["marker"],
        "-o",
        str(tmp_path / "out"),
        "--upx",
        "--max-startup-ms",
        "50",
        "--verify-runs",
        "1",
    )
    assert done.returncode == 2 and "--max-startup-ms needs --verify-runs 2 or more" in done.stderr
    assert not marker.exists()


def test_a_budget_that_cannot_be_measured_is_never_met(hostile: dict[str, str], tmp_path: Path) -> None:
    """Both sides time out: the startup is not measured, so no packed candidate may pass the budget."""
    require_tool("upx")
    result = binslim.slim(
        hostile["sleeper"],
        tmp_path / "out",
        upx_method="auto",
        max_startup_ms=1000,
        verify_timeout=0.5,
        verify_runs=2,
    )
    assert result.packed_size is None and result.final_size == result.stripped_size
    assert result.upx_reason.startswith("nrv: startup not measured, so the 1000 ms budget cannot be met")
    assert "lzma: startup not measured" in result.upx_reason
    assert result.verify is not None and result.verify.startup is None


def test_varying_original_is_in_the_json_report(hostile: dict[str, str], tmp_path: Path) -> None:
    done = run_binslim(hostile["clock"], "-o", str(tmp_path / "out"), "--verify-runs", "2", "--json")
    assert done.returncode == 3
    (entry,) = json.loads(done.stdout)["results"]
    assert entry["status"] == "failed" and entry["verify"]["original_varies"] is True
    assert entry["verify"]["same_behaviour"] is None and entry["verify"]["startup_ms"] is None
    jsonschema.validate(json.loads(done.stdout), REPORT_SCHEMA)


@pytest.mark.parametrize("namespace", [True, False], ids=["namespace", "subreaper"])
def test_sigterm_during_a_run_leaves_nothing_alive(
    hostile: dict[str, str], tmp_path: Path, namespace: bool
) -> None:
    """binslim is stopped while the program it verifies is running: exit 143, and the program is gone."""
    env = clean_env() if namespace else {**clean_env(), "BINSLIM_NO_PID_NAMESPACE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "binslim",
            hostile["sleeper"],
            "-o",
            str(tmp_path / "out"),
            "--verify-timeout",
            "60",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def started() -> bool:  # binslim's own command line names the program too
            return any(pid != proc.pid for pid, _ in processes_of_this_session())

        deadline = time.monotonic() + 30
        while not started() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not started():
            proc.kill()
            _, stderr = proc.communicate(timeout=30)
            pytest.fail(f"the verification run did not start (binslim exit {proc.returncode}): {stderr}")
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # reaped here, so that no later test reports it as still running
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert not (tmp_path / "out").exists()


def hostile_tree(hostile: dict[str, str], fixtures: dict[str, Fixture], root: Path) -> Path:
    root.mkdir()
    for name in ("clock", "daemon", "holder", "selfsize", "usage"):
        shutil.copy2(hostile[name], root / os.path.basename(hostile[name]))
    for index in range(6):
        shutil.copy2(fixtures["hello-c-pie"].path, root / f"{TOKEN}-hello{index}")
    return root


def without_clock(text: str) -> str:
    """``text`` without what hostile-clock prints that changes from run to run."""
    return re.sub(r"at \d+\.\d+, random \d+", "at TIME, random N", text)


def test_verification_in_forked_workers_reports_like_one_process(
    hostile: dict[str, str], fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """-r with verification and -j 3: the children run the programs (a daemon, a stdout holder, a
    self-measuring one that fails verification, a non-deterministic one): lines in path order, the same
    exit code and words as -j 1, failed files untouched, nothing left alive (see nothing_left_alive)."""
    runs = {}
    for jobs in ("1", "3"):
        work = tmp_path / f"j{jobs}"
        work.mkdir()
        hostile_tree(hostile, fixtures, work / "tree")
        runs[jobs] = run_binslim("-r", "tree", "-j", jobs, "--verify-runs", "2", cwd=work)
        assert "Traceback" not in runs[jobs].stderr
        tree = work / "tree"
        for name in ("clock", "selfsize"):
            assert (tree / f"{TOKEN}-{name}").read_bytes() == Path(hostile[name]).read_bytes()
        assert not list(tree.glob(".binslim-*"))
    assert runs["1"].returncode == 1, runs["1"].stderr
    assert (runs["3"].returncode, runs["3"].stdout, without_clock(runs["3"].stderr)) == (
        runs["1"].returncode,
        runs["1"].stdout,
        without_clock(runs["1"].stderr),
    )
    errors = [line for line in runs["1"].stderr.splitlines() if line.startswith("error: ")]
    assert [line.split(":")[1].strip() for line in errors] == [
        f"tree/{TOKEN}-clock",
        f"tree/{TOKEN}-selfsize",
    ]
    assert "does not behave like the original" in errors[1]
    done = [line.split(":")[0] for line in runs["1"].stdout.splitlines() if line.startswith("tree/")]
    assert done == sorted(done) and len(done) == 9


def test_verification_in_forked_workers_without_a_pid_namespace(
    hostile: dict[str, str], fixtures: dict[str, Fixture], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same tree in this process, -j 3, the runs contained by the subreaper alone (whose clean-up used to
    kill the workers as orphans): the same results as -j 1, no child of this process left."""
    from binslim.tree import slim_tree

    monkeypatch.setattr(runner_module, "_namespace_prefix", lambda: ())
    outcomes = {}
    for jobs in (1, 3):
        root = hostile_tree(hostile, fixtures, tmp_path / f"j{jobs}")
        result = slim_tree([root], jobs=jobs, verify_runs=2)
        outcomes[jobs] = [
            (os.path.basename(r.input), r.status, without_clock(r.message.replace(str(root), "")))
            for r in result.results
        ]
        assert not list(root.glob(".binslim-*"))
    assert outcomes[3] == outcomes[1]
    assert [status for _, status, _ in outcomes[1]].count("failed") == 2
    assert not [
        pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _parent(pid) == os.getpid()
    ]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def start_binslim(argv: list[str], *, namespace: bool) -> subprocess.Popen[str]:
    """``python -m binslim ARGV`` in a session of its own (a signal to its group reaches nothing else), its
    output piped; ``namespace=False`` runs its programs without a PID namespace."""
    env = clean_env() if namespace else {**clean_env(), "BINSLIM_NO_PID_NAMESPACE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "binslim", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize("namespace", [True, False], ids=["namespace", "subreaper"])
def test_ctrl_c_while_forked_workers_verify(
    hostile: dict[str, str], fixtures: dict[str, Fixture], tmp_path: Path, namespace: bool
) -> None:
    """Ctrl-C (SIGINT to binslim's process group) while -r -j 3 workers are running programs to verify them
    (sleepers, which time out): exit 130 once every worker has finished its file in hand, no program or
    worker left alive, every file done or as it was, nothing temporary left."""
    root = tmp_path / "tree"
    root.mkdir()
    sleepers = [root / f"{TOKEN}-sleeper{index}" for index in range(4)]
    for path in sleepers:
        shutil.copy2(hostile["sleeper"], path)
    for index in range(6):
        shutil.copy2(fixtures["hello-c-pie"].path, root / f"{TOKEN}-hello{index}")
    original = {path: path.read_bytes() for path in root.iterdir()}
    argv = ["-r", str(root), "-j", "3", "--verify-timeout", "2", "--verify-runs", "1"]
    proc = start_binslim(argv, namespace=namespace)
    try:

        def sleeping() -> bool:
            return any(
                "sleeper" in cmdline and "binslim" not in cmdline
                for _, cmdline in processes_of_this_session()
            )

        deadline = time.monotonic() + 60
        while not sleeping() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleeping(), "no verification run started"
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.endswith("error: interrupted; files reported above are done, the rest are as they were\n")
    for path, data in original.items():
        assert path.read_bytes() == data or path.stat().st_size < len(data), path
    assert sorted(root.iterdir()) == sorted(original)


@pytest.mark.parametrize("namespace", [True, False], ids=["namespace", "subreaper"])
def test_a_binslim_killed_outright_takes_the_program_it_verifies_with_it(
    hostile: dict[str, str], tmp_path: Path, namespace: bool
) -> None:
    """SIGKILL to binslim while it verifies (the OOM killer, a CI timeout): nothing of binslim's runs, yet
    the program it was running dies too (setpriv --pdeathsig KILL in front of unshare, or of the program);
    it used to run on forever. The input is as it was and no output appears."""
    program = tmp_path / f"{TOKEN}-sleeper-input"
    shutil.copy2(hostile["sleeper"], program)
    before = program.read_bytes()
    output = tmp_path / "out"
    argv = [str(program), "-o", str(output), "--verify-timeout", "60", "--verify-runs", "1"]
    proc = start_binslim(argv, namespace=namespace)

    def running() -> list[tuple[int, str]]:
        return [(pid, cmdline) for pid, cmdline in processes_of_this_session() if "binslim" not in cmdline]

    try:
        deadline = time.monotonic() + 60
        while not running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running(), "no verification run started"
        proc.kill()  # SIGKILL to binslim alone: its runs are in sessions of their own
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running() == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert program.read_bytes() == before
    assert not output.exists()
