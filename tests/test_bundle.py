"""``binslim bundle``: the root holds what the loader maps, laid out as the host has it, every ELF file
slimmed once; each program runs inside it (chroot here: the tests run as root in CI) like the original;
a program that does not is exit 3 with nothing installed; the tar is reproducible."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import binslim
from binslim.bundler import BundleResult, bundle, in_root_command
from binslim.errors import BinslimError, VerificationError
from binslim.resolve import resolve
from testdata.build import Fixture
from tests.docker_engine import DockerEngine
from tests.helpers import IN_CI, REPO_ROOT, clean_env, require_tool, run_binslim
from tests.test_faults import tmpfs

C_SOURCES = REPO_ROOT / "testdata" / "c"


@pytest.fixture(autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the bundle tests run programs under chroot, which needs root (CI runs as root)")
        pytest.skip("the bundle tests run programs under chroot, which needs root")


@pytest.fixture(scope="module")
def c_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """getpw, iconv and threadexit from testdata/c: programs that need files glibc opens at run time."""
    gcc = require_tool("gcc")
    out = tmp_path_factory.mktemp("cprog")
    built = {}
    for name in ("getpw", "iconv", "threadexit"):
        subprocess.run(
            [gcc, "-O1", "-o", str(out / name), str(C_SOURCES / f"{name}.c")], check=True, timeout=120
        )
        built[name] = str(out / name)
    return built


def chroot_run(root: Path | str, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` with ``root`` as its whole filesystem and /proc and /dev mounted, as a container engine
    runs it (the loader reads /proc/self/exe for the program's $ORIGIN)."""
    command = in_root_command(str(root), argv[0])
    assert command is not None, "sh, mount and chroot are part of every Debian system"
    mount_points = [Path(root) / "proc", Path(root) / "dev"]
    for path in mount_points:
        path.mkdir()
    try:
        return subprocess.run(
            [require_tool("unshare"), "--mount", "--pid", "--fork", *command, *argv[1:]],
            input=stdin,
            capture_output=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            check=False,
        )
    finally:
        for path in mount_points:
            path.rmdir()


def host_run(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin", "LANG": "C"}
    )


def regular_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


def leftovers(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".binslim-bundle-")]


def test_jq_and_sqlite3_run_under_chroot_like_the_originals(tmp_path: Path) -> None:
    jq, sqlite3 = require_tool("jq"), require_tool("sqlite3")
    root = tmp_path / "root"
    result = bundle([jq, sqlite3], root)
    assert [c.same_behaviour for c in result.checks] == [True, True]
    assert {c.method for c in result.checks} == {"chroot"}
    document = b'{"users": [{"name": "ada", "age": 36}, {"name": "alan", "age": 41}]}'
    query = ["-c", "[.users[] | select(.age > 40) | .name]"]
    assert chroot_run(root, jq, *query, stdin=document).stdout == host_run(jq, *query, stdin=document).stdout
    sql = b"create table t(x); insert into t values (1),(2),(3); select sum(x), group_concat(x) from t;"
    inside = chroot_run(root, sqlite3, ":memory:", stdin=sql)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == host_run(sqlite3, ":memory:", stdin=sql).stdout == b"6|1,2,3\n"
    # The loader's view is intact: PT_INTERP, and each SONAME the libraries are asked for by.
    for obj in resolve(jq).objects + resolve(sqlite3).objects:
        assert os.path.exists(os.path.join(root, obj.path.lstrip("/"))), obj.path
    by_path = {f.path: f for f in result.files}
    libc = by_path[os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")]
    assert libc.size_after < libc.size_before and libc.action == "stripped"
    assert any(r.startswith("needed by ") and "jq" in r for r in libc.reasons)
    assert any(r.startswith("needed by ") and "sqlite3" in r for r in libc.reasons)
    # Copied once although both programs need it, and the total is the exact bytes of the root's files.
    assert sum(1 for f in result.files if f.source and os.path.realpath(f.source).endswith("/libc.so.6")) == 1
    assert result.total_bytes == regular_bytes(root)
    assert all(f.reasons for f in result.files)
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("name", ["hello-cxx", "hello-rust", "usegreet"])
def test_fixtures_run_inside_their_root(fixtures: dict[str, Fixture], tmp_path: Path, name: str) -> None:
    fixture = fixtures[name]
    program = os.path.realpath(fixture.path)
    root = tmp_path / "root"
    result = bundle([program], root, verify_args=fixture.run_args)
    (check,) = result.checks
    assert check.same_behaviour is True, check.reason
    inside = chroot_run(root, program, *fixture.run_args)
    assert inside.returncode == 0, inside.stderr
    assert fixture.expected_stdout in inside.stdout.decode()
    if name == "usegreet":
        # The private library sits beside the program, as its $ORIGIN RUNPATH expects.
        private = os.path.join(os.path.dirname(program), "libgreet.so")
        entry = next(f for f in result.files if f.path == private)
        assert entry.reasons == ("needed by usegreet",)
    if name == "hello-cxx":
        assert any(os.path.basename(f.path).startswith("libstdc++.so") for f in result.files)


def test_nss_is_added_when_the_program_imports_getpwnam(c_programs: dict[str, str], tmp_path: Path) -> None:
    result = bundle([c_programs["getpw"]], tmp_path / "root", verify_args=())
    assert result.checks[0].same_behaviour is True
    assert any("imports getpwnam" in note for note in result.notes)
    passwd = next(f for f in result.files if f.path == "/etc/passwd")
    assert passwd.action == "generated" and passwd.reasons[0].startswith("--with nss")
    assert (tmp_path / "root" / "etc" / "passwd").read_bytes().startswith(b"root:")
    assert chroot_run(tmp_path / "root", c_programs["getpw"]).stdout == b"root: uid 0, home /root\n"


def test_libgcc_s_is_added_when_a_thread_ends_through_pthread_exit(
    c_programs: dict[str, str], tmp_path: Path
) -> None:
    """glibc dlopens libgcc_s to unwind a thread that calls pthread_exit, and aborts without it; the
    program's own list of libraries (ldd's, lddtree's) lacks it."""
    program = c_programs["threadexit"]
    assert "libgcc_s" not in host_run("ldd", program).stdout.decode()
    host = host_run(program)
    assert host.returncode == 0, host.stderr
    assert host.stdout == b"worker ended through pthread_exit: sum 55, result returned\n"

    result = bundle([program], tmp_path / "root", verify_args=())
    assert result.checks[0].same_behaviour is True, result.checks[0].reason
    libgcc = next(f for f in result.files if os.path.basename(f.path) == "libgcc_s.so.1")
    assert libgcc.reasons[0].startswith("dlopen'ed by glibc to unwind cancelled threads")
    assert "threadexit imports pthread_exit" in libgcc.reasons[0]
    inside = chroot_run(tmp_path / "root", program)
    assert (inside.returncode, inside.stdout, inside.stderr) == (host.returncode, host.stdout, host.stderr)

    # The same root without libgcc_s: glibc's abort, which binslim's verification catches.
    with pytest.raises(VerificationError):
        bundle([program], tmp_path / "checked", verify_args=(), auto_dlopen=False)
    bundle([program], tmp_path / "bare", verify=False, auto_dlopen=False)
    assert not any("libgcc_s" in name for _dirs, _sub, names in os.walk(tmp_path / "bare") for name in names)
    bare = chroot_run(tmp_path / "bare", program)
    assert bare.returncode != 0
    assert bare.stderr == b"libgcc_s.so.1 must be installed for pthread_exit to work\n"


def test_a_root_that_breaks_the_program_is_exit_3_and_nothing_is_installed(
    c_programs: dict[str, str], tmp_path: Path
) -> None:
    """Without the NSS files getpwnam finds no root user in the chroot: the verification sees it."""
    for target in (tmp_path / "root", tmp_path / "root.tar"):
        done = run_binslim(
            "bundle", c_programs["getpw"], "-o", str(target), "--verify-args", "", "--no-auto-dlopen"
        )
        assert done.returncode == 3, done.stderr
        assert "does not behave inside the root" in done.stderr and "exit code 0→1" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert not os.path.lexists(target)
        assert not leftovers(tmp_path)
    with pytest.raises(VerificationError):
        bundle([c_programs["getpw"]], tmp_path / "lib-root", verify_args=(), auto_dlopen=False)


def test_with_gconv_brings_the_charset_modules(c_programs: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="iconv_open"):
        bundle([c_programs["iconv"]], tmp_path / "plain", verify_args=())
    result = bundle([c_programs["iconv"]], tmp_path / "gconv", verify_args=(), with_=("gconv",))
    assert result.checks[0].same_behaviour is True
    assert any(f.path.endswith("/gconv/ISO8859-15.so") and "--with gconv" in f.reasons for f in result.files)
    assert chroot_run(tmp_path / "gconv", c_programs["iconv"]).stdout == b"a4 3 bytes\n"
    # --gconv CHARSET (an alias works too): only that charset's module and the gconv cache.
    done = run_binslim(
        "bundle",
        c_programs["iconv"],
        "-o",
        str(tmp_path / "latin9"),
        "--verify-args=",
        "--gconv",
        "latin9",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    gconv_files = [f for f in json.loads(done.stdout)["files"] if "/gconv/" in f["path"]]
    assert sorted(os.path.basename(f["path"]) for f in gconv_files) == [
        "ISO8859-15.so",
        "gconv-modules.cache",
    ]
    assert regular_bytes(tmp_path / "latin9") < result.total_bytes // 3
    with pytest.raises(BinslimError, match="--gconv NO-SUCH-CHARSET: no gconv module converts it"):
        bundle([c_programs["iconv"]], tmp_path / "bad", verify_args=(), gconv_charsets=("NO-SUCH-CHARSET",))


def test_with_certs_and_tz(tmp_path: Path) -> None:
    jq = require_tool("jq")
    result = bundle([jq], tmp_path / "root", with_=("certs", "tz"))
    paths = {f.path: f for f in result.files}
    ca = os.path.realpath("/etc/ssl/certs/ca-certificates.crt")
    assert "--with certs" in paths[ca].reasons
    assert any(p.startswith("/usr/share/zoneinfo/") and p.endswith("/UTC") for p in paths)
    zone = host_run(jq, "-n", "-r", '"2015-03-05T23:51:47Z" | strptime("%Y-%m-%dT%H:%M:%SZ") | mktime')
    assert (
        chroot_run(
            tmp_path / "root",
            jq,
            "-n",
            "-r",
            '"2015-03-05T23:51:47Z" | strptime("%Y-%m-%dT%H:%M:%SZ") | mktime',
        ).stdout
        == zone.stdout
    )


def test_include_resolves_the_dependencies_of_what_it_adds(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    jq = require_tool("jq")
    sqlite_lib = os.path.realpath("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0")
    result = bundle([jq], tmp_path / "root", includes=[sqlite_lib, str(C_SOURCES / "greet.h")])
    paths = {f.path: f for f in result.files}
    assert f"--include {sqlite_lib}" in paths[sqlite_lib].reasons
    assert paths[str(C_SOURCES / "greet.h")].action == "copied"
    libm = os.path.realpath("/usr/lib/x86_64-linux-gnu/libm.so.6")
    assert any(r.startswith("needed by") and "libsqlite3.so.0" in r for r in paths[libm].reasons)


def test_tar_is_reproducible_and_owned_by_root(tmp_path: Path) -> None:
    jq = require_tool("jq")
    env_epoch = 1_700_000_000
    first = bundle([jq], tmp_path / "a.tar", source_date_epoch=env_epoch, verify=False)
    second = bundle([jq], tmp_path / "b.tar", source_date_epoch=env_epoch, verify=False)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert first.output_bytes == os.path.getsize(tmp_path / "a.tar") and first.format == "tar"
    assert first.total_bytes == second.total_bytes
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", env_epoch)}
    assert "lib64" in names and next(m for m in members if m.name == "lib64").issym()
    assert sum(m.size for m in members if m.isreg()) == first.total_bytes
    extracted = tmp_path / "x"
    with tarfile.open(tmp_path / "a.tar") as tar:
        tar.extractall(extracted, filter="fully_trusted")
    assert chroot_run(extracted, jq, "-n", "1+1").stdout == b"2\n"


def test_source_date_epoch_from_the_environment(tmp_path: Path) -> None:
    jq = require_tool("jq")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1234567890"}
    done = run_binslim("bundle", jq, "-o", str(tmp_path / "r.tar"), "--no-verify", env=env)
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "r.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1234567890}


def test_json_report_and_library_call(tmp_path: Path) -> None:
    jq = require_tool("jq")
    done = run_binslim("bundle", jq, "-o", str(tmp_path / "root"), "--json", "--upx")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["schema"] == 1 and report["format"] == "folder"
    assert report["total_bytes"] == regular_bytes(tmp_path / "root")
    program = next(f for f in report["files"] if f["path"] == jq)
    assert program["action"] == "packed" and program["size"]["after"] < program["size"]["before"]
    assert report["verify"][0]["same_behaviour"] is True and report["verify"][0]["method"] == "chroot"
    check = report["verify"][0]
    assert check["startup_ms"]["root"] > 0 and check["original_varies"] is False
    # The verifier's method: the mean of ABBA paired differences, inside its own 95% interval.
    startup = check["startup_ms"]
    assert startup["added_low"] <= startup["added"] <= startup["added_high"]
    assert check["peak_rss_kib"]["original"] > 0 and check["peak_rss_kib"]["root"] > 0
    assert binslim.bundle is bundle
    assert isinstance(binslim.bundle([jq], tmp_path / "again", verify=False), BundleResult)


def test_text_report(tmp_path: Path) -> None:
    jq = require_tool("jq")
    done = run_binslim("bundle", jq, "-o", str(tmp_path / "root"))
    assert done.returncode == 0, done.stderr
    assert "(needed by jq" in done.stdout
    assert "interpreter (PT_INTERP)" in done.stdout
    assert "verify jq (chroot): same:" in done.stdout
    total = regular_bytes(tmp_path / "root")
    assert f"total {total:,} B" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{jq}", "-o", "{nonempty}"], "exists and is not an empty folder"),
        (["{text}", "-o", "{tmp}/r"], "not an ELF file"),
        (["/no/such/program", "-o", "{tmp}/r"], "no such file"),
        (["{jq}", "-o", "{tmp}/r", "--with", "fonts"], "unknown fonts"),
        (["{jq}", "-o", "{tmp}/r", "--include", "/no/such/file"], "no such file"),
    ],
)
def test_errors_are_one_line_and_leave_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    nonempty = tmp_path / "full"
    nonempty.mkdir()
    (nonempty / "keep").write_text("mine\n")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    values = {"jq": require_tool("jq"), "nonempty": str(nonempty), "text": str(text), "tmp": str(tmp_path)}
    done = run_binslim("bundle", *(a.format(**values) for a in args))
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr
    assert (nonempty / "keep").read_text() == "mine\n"
    assert not os.path.lexists(tmp_path / "r") and not leftovers(tmp_path)


def test_usage_error_without_output() -> None:
    done = run_binslim("bundle", "/usr/bin/jq")
    assert done.returncode == 2 and "-o/--output ROOT is required" in done.stderr


def test_library_is_refused_as_a_program(tmp_path: Path) -> None:
    with pytest.raises(BinslimError, match="shared library, not a program"):
        bundle([os.path.realpath("/usr/lib/x86_64-linux-gnu/libjq.so.1")], tmp_path / "r")


@pytest.fixture
def docker_root(tmp_path: Path) -> Iterator[Path]:
    context = tmp_path / "context"
    context.mkdir()
    yield context
    shutil.rmtree(context, ignore_errors=True)


def test_docker_from_scratch_runs_the_bundled_program(docker_engine: DockerEngine, docker_root: Path) -> None:
    jq = require_tool("jq")
    bundle([jq], docker_root / "root.tar")
    (docker_root / "Dockerfile").write_text(f'FROM scratch\nADD root.tar /\nENTRYPOINT ["{jq}"]\n')
    tag = "binslim-bundle-test:jq"
    docker_engine.docker("build", "--network", "none", "-t", tag, str(docker_root))
    try:
        ran = docker_engine.docker("run", "--rm", "--network", "none", tag, "-n", "[1,2] | add")
        assert ran.stdout == "3\n"
        assert docker_engine.image_size(tag) < 4_500_000
    finally:
        docker_engine.docker("image", "rm", "-f", tag, check=False)


def test_verify_cmd_gets_a_launcher_into_the_root(c_programs: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text(
        '#!/bin/sh\nout=$("$1") || exit 1\ncase "$out" in *"home /root"*) exit 0;; esac\nexit 1\n'
    )
    script.chmod(0o755)
    result = bundle([c_programs["getpw"]], tmp_path / "root", verify_cmd=str(script))
    assert result.checks[0].same_behaviour is True
    with pytest.raises(VerificationError):
        bundle([c_programs["getpw"]], tmp_path / "broken", verify_cmd=str(script), auto_dlopen=False)
    assert not os.path.lexists(tmp_path / "broken")


def usegreet_plain(folder: Path, lib_dir: str | os.PathLike[str]) -> Path:
    """usegreet linked against ``lib_dir``/libgreet.so without a RUNPATH: only a search path finds it."""
    program = folder / "usegreet-plain"
    subprocess.run(
        [require_tool("gcc"), "-O1", f"-I{C_SOURCES}", "-o", str(program), str(C_SOURCES / "usegreet.c"),
         f"-L{lib_dir}", "-lgreet"],
        check=True, timeout=120,
    )  # fmt: skip
    return program


def test_keep_section_headers_and_library_path(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """usegreet-plain finds libgreet.so only through --library-path; the root keeps it at that path and the
    program, run with the same search path, loads it there."""
    program = usegreet_plain(tmp_path, os.path.dirname(fixtures["libgreet"].path))
    lib_dir = os.path.dirname(os.path.realpath(fixtures["libgreet"].path))
    with pytest.raises(BinslimError, match=r"libgreet\.so \(needed by usegreet-plain\) not found"):
        bundle([str(program)], tmp_path / "no", verify=False)
    result = bundle(
        [str(program)],
        tmp_path / "root",
        library_path=(lib_dir,),
        keep_section_headers=True,
        verify_args=(),
        verify_env={"LD_LIBRARY_PATH": lib_dir},
    )
    greet = next(f for f in result.files if f.path == os.path.join(lib_dir, "libgreet.so"))
    assert greet.reasons == ("needed by usegreet-plain",)
    assert result.checks[0].same_behaviour is True
    with open(tmp_path / "root" / lib_dir.lstrip("/") / "libgreet.so", "rb") as handle:
        header = handle.read(64)
    assert int.from_bytes(header[40:48], "little") != 0  # e_shoff: the section headers are still there


def test_folder_times_and_no_binslim_variables(tmp_path: Path) -> None:
    jq = require_tool("jq")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1600000000", "BINSLIM_UPX": "1", "BINSLIM_OUTPUT": "/nowhere"}
    done = run_binslim("bundle", jq, "-o", str(tmp_path / "root"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert next(f for f in report["files"] if f["path"] == jq)["action"] == "stripped"  # not packed
    for dirpath, dirnames, filenames in os.walk(tmp_path / "root"):
        for name in dirnames + filenames:
            assert os.lstat(os.path.join(dirpath, name)).st_mtime == 1600000000


def test_loader_fallback_without_chroot_or_namespaces(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where neither chroot nor a user namespace can be had, the root's own loader runs the program with
    --inhibit-cache and a --library-path into the root."""
    import binslim.bundler as bundler

    jq = require_tool("jq")
    monkeypatch.setattr(bundler.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bundler, "_userns_works", lambda unshare: False)
    result = bundle([jq], tmp_path / "root")
    assert result.checks[0].method == "loader" and result.checks[0].same_behaviour is True


def test_an_original_that_varies_is_exit_3_and_nothing_is_installed(tmp_path: Path) -> None:
    """As slimming does: the original runs twice first; output that changes from run to run (nanoseconds)
    cannot be compared, so nothing is installed and the message says why and what to do."""
    done = run_binslim("bundle", "/usr/bin/date", "--verify-args", "+%N", "-o", str(tmp_path / "root"))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the original itself is not deterministic" in done.stderr and "--verify-cmd" in done.stderr
    assert "nothing was installed" in done.stderr
    assert list(tmp_path.iterdir()) == []


NOBODY = "65534"


def test_verifies_in_a_user_namespace_when_not_root() -> None:
    """Not root: the check runs in a user namespace (unshare --map-root-user), for real, as user nobody
    with Debian's own python3 and a copy of this checkout's package (nobody cannot read root's python)."""
    jq = require_tool("jq")
    python = require_tool("/usr/bin/python3", package="python3-minimal")
    as_nobody = [require_tool("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    allowed = subprocess.run(
        [*as_nobody, require_tool("unshare"), "--map-root-user", "true"], capture_output=True, timeout=30
    )
    if allowed.returncode != 0:
        pytest.skip("this kernel gives no user namespace to an unprivileged user: " + allowed.stderr.decode())
    shared = Path(tempfile.mkdtemp(prefix="binslim-userns-"))
    try:
        shared.chmod(0o777)
        shutil.copytree(
            REPO_ROOT / "binslim", shared / "binslim", ignore=shutil.ignore_patterns("__pycache__")
        )
        done = subprocess.run(
            [
                *as_nobody,
                "env",
                "-i",
                "PATH=/usr/bin:/bin",
                f"HOME={shared}",
                f"PYTHONPATH={shared}",
                python,
                "-m",
                "binslim",
                "bundle",
                jq,
                "-o",
                str(shared / "root"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=shared,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        (check,) = json.loads(done.stdout)["verify"]
        assert check["method"] == "user namespace"
        assert check["ran"] is True and check["same_behaviour"] is True, check
        assert (shared / "root" / "usr" / "bin" / "jq").stat().st_uid == int(NOBODY)
    finally:
        shutil.rmtree(shared)


def test_a_library_found_only_through_the_cache_gets_a_cache_in_the_root(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """libgreet.so sits in a folder the loader searches only through ld.so.cache (as /usr/local/lib or a
    CUDA folder): the root then gets its own ld.so.cache, written by ldconfig, and the program runs."""
    ldconfig = require_tool("ldconfig")
    lib_dir = tmp_path / "opt-lib"
    lib_dir.mkdir()
    shutil.copy(fixtures["libgreet"].path, lib_dir / "libgreet.so")
    conf, cache = tmp_path / "ld.so.conf", tmp_path / "ld.so.cache"
    conf.write_text(f"{lib_dir}\n")
    subprocess.run([ldconfig, "-X", "-C", str(cache), "-f", str(conf)], check=True, timeout=120)
    program = usegreet_plain(tmp_path, lib_dir)
    result = bundle([str(program)], tmp_path / "root", verify_args=(), ld_cache=str(cache))
    # The host's own cache does not list the folder, so the original cannot run here to compare with.
    (check,) = result.checks
    assert check.ran is False and "cannot load its libraries" in check.reason
    generated = next(f for f in result.files if f.path == "/etc/ld.so.cache")
    assert generated.action == "generated" and str(lib_dir) in generated.reasons[0]
    assert not (tmp_path / "root" / "etc" / "ld.so.conf").exists()
    assert b"Hello, world!" in chroot_run(tmp_path / "root", str(program)).stdout
    assert result.total_bytes == regular_bytes(tmp_path / "root")


def test_runs_in_the_root_get_dev_and_proc_as_in_a_container(tmp_path: Path) -> None:
    """git opens /dev/null first thing: the root's run has the host's /dev bound in, and neither /dev nor
    /proc is left in the root afterwards."""
    git = require_tool("git")
    result = bundle([git], tmp_path / "root", verify_args=("--version",))
    assert result.checks[0].same_behaviour is True, result.checks[0].reason
    assert not (tmp_path / "root" / "dev").exists() and not (tmp_path / "root" / "proc").exists()


def test_a_static_program_needs_nothing_else(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    fixture = fixtures["hello-c-static"]
    program = os.path.realpath(fixture.path)
    result = bundle([program], tmp_path / "root", verify_args=fixture.run_args)
    assert result.checks[0].same_behaviour is True
    assert [f.path for f in result.files if f.kind == "file"] == [program]
    assert (
        fixture.expected_stdout in chroot_run(tmp_path / "root", program, *fixture.run_args).stdout.decode()
    )


@pytest.mark.parametrize("fault", ["full", "read-only"])
@pytest.mark.parametrize("name", ["root", "root.tar"])
def test_output_on_a_full_or_read_only_file_system(tmp_path: Path, fault: str, name: str) -> None:
    """One line naming the output (not the stage, which is gone), exit 1, nothing left. jq's root is about
    4 MB: 1 MiB cannot hold it; 6 MiB holds the stage but not the tar built from it as well."""
    jq = require_tool("jq")
    options = ["ro"] if fault == "read-only" else ["size=6m" if name.endswith(".tar") else "size=1m"]
    with tmpfs(tmp_path / "fs", *options) as mounted:
        out = mounted / name
        done = run_binslim("bundle", jq, "-o", str(out), "--no-verify")
        listing = os.listdir(mounted)
    reason = "no space left on device" if fault == "full" else "read-only file system"
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"error: {out}") and done.stderr.endswith(f": cannot write: {reason}\n")
    assert len(done.stderr.splitlines()) == 1 and ".binslim-bundle-" not in done.stderr
    assert listing == []


def test_output_that_is_a_link_to_an_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("empty")
    done = run_binslim("bundle", require_tool("jq"), "-o", str(tmp_path / "link"), "--no-verify")
    assert done.returncode == 1
    problem = "is a symbolic link; -o must be a folder that does not exist or is empty"
    assert done.stderr == f"error: {tmp_path / 'link'}: {problem}\n"
    assert os.readlink(tmp_path / "link") == "empty" and os.listdir(tmp_path / "empty") == []
    assert not leftovers(tmp_path)


def test_a_stage_left_by_sigkill_is_swept_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL cannot be cleaned up after: the stage stays, locked by nobody, and the next bundle into that
    folder removes it once it is over a minute old. The target itself never appears half-built."""
    jq = require_tool("jq")
    out = tmp_path / "root"
    started = subprocess.Popen(
        [sys.executable, "-m", "binslim", "bundle", jq, "-o", str(out), "--verify-runs", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 60
        # Killed once the stage holds the programs' copies (then verification runs for a while).
        while not any((tmp_path / s / "root" / "usr" / "bin").exists() for s in leftovers(tmp_path)):
            assert started.poll() is None and time.monotonic() < deadline, "no stage appeared"
            time.sleep(0.01)
    finally:
        started.kill()
        started.wait(timeout=60)
    stale = leftovers(tmp_path)
    assert len(stale) == 1 and not os.path.lexists(out)
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path / stale[0], (an_hour_ago, an_hour_ago))
    done = run_binslim("bundle", jq, "-o", str(out), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert leftovers(tmp_path) == [] and (out / "usr" / "bin" / "jq").exists()


def test_names_with_newlines_and_escapes_are_one_line_each(
    fixtures: dict[str, Fixture], tmp_path: Path
) -> None:
    """A name from the file system is escaped in the text report (as for slimming): one entry, one line, and
    nothing a terminal would act on."""
    name = "new\nline\x1b[31mred"
    program = tmp_path / name
    shutil.copy2(fixtures["hello-c-static"].path, program)
    done = run_binslim("bundle", str(program), "-o", str(tmp_path / f"root{name}"), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    escaped = "new\\nline\\x1b[31mred"
    assert lines[0] == f"{tmp_path}/root{escaped}: root for {escaped} (folder)"
    assert len(lines) == 3  # the root, the program's one entry, the total
    assert lines[1].startswith(f"  {tmp_path}/{escaped}  ") and lines[1].endswith(f"(program {escaped})")


def test_an_included_folder_with_a_stale_stage_in_it(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The root goes into a folder that is also --include'd and holds a stage a killed run left: the stage
    is swept before the folder is listed, so it is neither copied nor missed halfway."""
    data = tmp_path / "data"
    stale = data / ".binslim-bundle-stale"
    (stale / "root").mkdir(parents=True)
    (stale / ".lock").touch()
    (stale / "root" / "half-copied").touch()
    (data / "file").write_text("mine\n")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    program = fixtures["hello-c-static"].path
    result = bundle([program], data / "root", includes=[str(data)], verify=False)
    assert sorted(os.listdir(data)) == ["file", "root"]
    assert [f.path for f in result.files if f.kind == "file"] == sorted(
        [str(data / "file"), os.path.realpath(program)]
    )


def test_a_tar_output_that_is_a_fifo_is_refused(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The tar is renamed onto its name: a FIFO there would be replaced by a regular file."""
    fifo = tmp_path / "root.tar"
    os.mkfifo(fifo)
    done = run_binslim("bundle", fixtures["hello-c-static"].path, "-o", str(fifo), "--no-verify")
    assert done.returncode == 1
    assert done.stderr == f"error: {fifo}: is a FIFO; a .tar output must be a regular file\n"
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and os.listdir(tmp_path) == ["root.tar"]


@pytest.mark.parametrize("mount", ["tmpfs", "bind"])
def test_an_empty_mount_point_as_the_root_is_refused(
    fixtures: dict[str, Fixture], tmp_path: Path, mount: str
) -> None:
    """A volume mounted at ROOT (docker run -v out:/out) cannot be renamed onto: one line saying what to
    give instead, nothing left in it or beside it. A tmpfs is refused before any work; a bind mount on the
    same file system only at the rename."""
    out = tmp_path / "out"
    program = fixtures["hello-c-static"].path
    hint = (
        "is a mount point, and the finished root is put in place with one rename: name a new folder inside"
        f" it, such as {out}/rootfs"
    )
    if mount == "tmpfs":
        with tmpfs(out):
            done = run_binslim("bundle", program, "-o", str(out), "--no-verify")
            inside = os.listdir(out)
    else:
        (tmp_path / "src").mkdir()
        out.mkdir()
        subprocess.run(["mount", "--bind", str(tmp_path / "src"), str(out)], check=True, timeout=60)
        try:
            done = run_binslim("bundle", program, "-o", str(out), "--no-verify")
            inside = os.listdir(out)
        finally:
            subprocess.run(["umount", str(out)], check=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"error: {out}: {hint}\n"
    assert inside == [] and not leftovers(tmp_path)


def test_a_run_folder_left_by_sigkill_is_swept(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The runs inside the root work in a folder of the system's temporary folder; one that a killed bundle
    left (locked by nobody, over a minute old) is removed by the next verified bundle, which leaves none."""
    temp = tmp_path / "tmp"
    stale = temp / "binslim-bundle-run-stale"
    stale.mkdir(parents=True)
    (stale / ".lock").touch()
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    fixture = fixtures["hello-c-static"]
    done = run_binslim(
        "bundle",
        fixture.path,
        "-o",
        str(tmp_path / "root"),
        f"--verify-args={' '.join(fixture.run_args)}",
        "--verify-runs",
        "1",
        env=clean_env(TMPDIR=str(temp)),
    )
    assert done.returncode == 0, done.stderr
    assert "verify hello-c-static" in done.stdout and ": same:" in done.stdout
    assert os.listdir(temp) == []
