"""A real Docker engine for the tests and benchmarks: Debian's dockerd, started here and stopped afterwards,
plus local stand-ins for the base images the recipes name (no image registry is reachable).

    engine = DockerEngine.start()          # or the ``docker_engine`` fixture in tests/conftest.py
    try:
        engine.ensure_base_images()        # golang:1.23-bookworm, debian:bookworm-slim (cached)
        engine.docker("build", "--network", "host", ...)
    finally:
        engine.stop()

    python3 -m tests.docker_engine bases            start, build the stand-ins, stop
    python3 -m tests.docker_engine stop-orphaned    stop a dockerd whose session died (scripts/test.sh)

The engine keeps its images in a persistent data root (``/var/cache/binslim-docker``), so the stand-ins are
built once per machine and rebuilt only when their recipe changes (the hash is an image label). An exclusive
lock on that folder lets one test session at a time use it: a second one waits. Needs root, ``dockerd``
(Debian's docker.io) and ``debootstrap``; scripts/install.sh --test installs both.

Each stand-in is ``debootstrap --variant=minbase`` piped through ``tar`` into ``docker import``, with the
official image's ``ENV``. The mirror is the one this machine's apt already uses, read from /etc/apt at run
time, and the host's CA bundle goes into each image: containers here reach the package registries only
through the host's network and with its TLS trust.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("BINSLIM_DOCKER_CACHE", "/var/cache/binslim-docker"))
RUN_DIR = Path(os.environ.get("BINSLIM_DOCKER_RUN", "/run/binslim-docker"))
DOCKERD = "/usr/sbin/dockerd"
# Debian's client, the one built with that dockerd. The machine may have a newer CLI first on PATH; the
# tests use the pair Debian ships.
DOCKER_CLIENT = "/usr/bin/docker"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BACKPORTS_SCRIPT = REPO_ROOT / "examples" / "enable-backports.sh"
STANDIN_LABEL = "binslim.standin.recipe"

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
LOCK_TIMEOUT = 3600.0  # another session may be building the stand-ins (several minutes the first time)
DEBOOTSTRAP_TIMEOUT = 1800.0
BUILD_TIMEOUT = 1800.0
COMMAND_TIMEOUT = 300.0


class DockerEngineError(RuntimeError):
    """The engine or a stand-in image could not be set up; the message says which command failed."""


def _run(
    command: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(command),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        check=False,
    )
    if check and done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise DockerEngineError(f"{' '.join(command)} exited with {done.returncode}:\n{tail}")
    return done


# --- the host's Debian mirror -------------------------------------------------------------------------------


def debian_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.partition("=")[2].strip().strip('"')
    raise DockerEngineError("cannot tell the Debian release from /etc/os-release")


def host_debian_mirror(codename: str) -> str:
    """The URI this machine's apt uses for the main suite, from deb822 .sources files or sources.list lines.
    Read at run time so that no mirror's address is written into any file of the repository."""
    apt = Path("/etc/apt")
    for sources in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "#")):
                    fields[key.strip().lower()] = value.strip()
            if (
                "deb" in fields.get("types", "").split()
                and codename in fields.get("suites", "").split()
                and fields.get("uris")
            ):
                return fields["uris"].split()[0]
    for sources in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if not sources.is_file():
            continue
        for line in sources.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.partition("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                return words[1]
    raise DockerEngineError(f"no apt source for {codename} in /etc/apt: cannot find a Debian mirror")


# --- the stand-in base images -------------------------------------------------------------------------------

_STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class StandIn:
    """A local image tagged like an official one. ``packages`` go into the debootstrap; ``dockerfile`` (if
    any) is then built on top of the imported tree with ``docker build --network host``."""

    tag: str
    suite: str
    packages: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cmd: tuple[str, ...] = ("bash",)
    workdir: str = "/"
    # Dropped after debootstrap, as the official slim images do (their dpkg config excludes these paths).
    drop_docs: bool = False
    dockerfile: str = ""


# golang:1.23-bookworm is buildpack-deps:bookworm-scm (curl, git, mercurial, ...) plus gcc, libc6-dev, make,
# pkg-config and Go in /usr/local/go. Here Go is Debian's golang-1.23-go from bookworm-backports, linked where
# the official image has it. The backports line comes from the image's own apt sources.
_GOLANG_DOCKERFILE = """\
FROM {base}
COPY enable-backports.sh /tmp/enable-backports.sh
RUN sh /tmp/enable-backports.sh \\
 && apt-get update \\
 && apt-get install -y --no-install-recommends -t {suite}-backports golang-1.23-go \\
 && rm -f /etc/apt/sources.list.d/backports.list /tmp/enable-backports.sh \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/lib/go-1.23 /usr/local/go \\
 && mkdir -p /go/src /go/bin && chmod -R 1777 /go \\
 && go version
"""

STANDINS: tuple[StandIn, ...] = (
    StandIn(
        tag="golang:1.23-bookworm",
        suite="bookworm",
        packages=(
            "ca-certificates",
            "curl",
            "gnupg",
            "netbase",
            "wget",
            "git",
            "mercurial",
            "openssh-client",
            "subversion",
            "procps",
            "g++",
            "gcc",
            "libc6-dev",
            "make",
            "pkg-config",
        ),
        env={
            "PATH": f"/go/bin:/usr/local/go/bin:{_STANDARD_PATH}",
            "GOLANG_VERSION": "1.23",
            "GOTOOLCHAIN": "local",
            "GOPATH": "/go",
        },
        workdir="/go",
        dockerfile=_GOLANG_DOCKERFILE,
    ),
    StandIn(tag="debian:bookworm-slim", suite="bookworm", env={"PATH": _STANDARD_PATH}, drop_docs=True),
)


def _standin_hash(standin: StandIn) -> str:
    recipe = {
        "tag": standin.tag,
        "suite": standin.suite,
        "packages": standin.packages,
        "env": dict(standin.env),
        "cmd": standin.cmd,
        "workdir": standin.workdir,
        "drop_docs": standin.drop_docs,
        "dockerfile": standin.dockerfile,
        "backports": BACKPORTS_SCRIPT.read_text() if standin.dockerfile else "",
        "ca": hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest() if HOST_CA_BUNDLE.exists() else "",
        "version": 1,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _stop_stale_dockerd(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        raise DockerEngineError(
            f"a dockerd answers but {pid_file} does not name it: stop it by hand"
        ) from None
    if comm != "dockerd":
        raise DockerEngineError(f"{pid_file} names process {pid} ({comm}), not a dockerd: stop it by hand")
    _terminate(pid)


def _terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns once the process is gone."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.3)


def _clear_stale_containerd(pid_file: Path) -> None:
    """Remove the containerd pid file a stopped dockerd left in its exec root, stopping that containerd if it
    is still alive. dockerd trusts the file: when its number has since gone to another process, it takes that
    process for its containerd (and kills it), then gives up waiting for a containerd that never answers."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = ""
    if comm == "containerd":  # left running by a dockerd that was killed
        _terminate(pid)
    pid_file.unlink(missing_ok=True)


def _mounts_below(folder: Path) -> list[str]:
    prefix = str(folder).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    return mounts


def _unmount(point: str) -> None:
    subprocess.run(["umount", "-l", point], capture_output=True, timeout=COMMAND_TIMEOUT, check=False)


def _remove_tree(folder: Path) -> None:
    """Remove a debootstrap work folder. A debootstrap that was killed leaves its mounts in the tree (in a
    container it bind-mounts the host's /dev there): unmount them first, and never delete through one."""
    for point in sorted(_mounts_below(folder), key=len, reverse=True):
        _unmount(point)
    left = _mounts_below(folder)
    if left:
        raise DockerEngineError(f"{folder} still has mounts ({', '.join(left)}): not removing it")
    shutil.rmtree(folder, ignore_errors=True)


# --- the engine ---------------------------------------------------------------------------------------------


@dataclass
class DockerEngine:
    """A dockerd this process started (``owned``) or found already answering on the socket."""

    socket: Path
    process: subprocess.Popen[bytes] | None
    lock_fd: int | None
    log_path: Path
    client: str = DOCKER_CLIENT

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """An environment in which a plain ``docker`` command reaches this engine with the legacy builder
        (Debian's docker.io has no buildx; BuildKit would also try to pull a Dockerfile frontend)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_BUILDKIT"] = "0"
        return env

    @classmethod
    def start(cls) -> DockerEngine:
        cache_dir, run_dir = CACHE_DIR, RUN_DIR
        missing = [tool for tool in (DOCKERD, DOCKER_CLIENT) if not os.access(tool, os.X_OK)]
        if missing:
            raise DockerEngineError(
                f"{', '.join(missing)} not found: install Debian's docker.io (scripts/install.sh --test)"
            )
        if os.geteuid() != 0:
            raise DockerEngineError("dockerd needs root")
        cache_dir.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(cache_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        engine: DockerEngine | None = None
        try:
            cls._lock(lock_fd)
            socket = run_dir / "docker.sock"
            log_path = cache_dir / "dockerd.log"
            engine = cls(socket=socket, process=None, lock_fd=lock_fd, log_path=log_path)
            if engine._answers():
                # Nobody holds the lock, so the session that started it died without stopping it.
                _stop_stale_dockerd(run_dir / "dockerd.pid")
            for stale in (socket, run_dir / "dockerd.pid"):
                stale.unlink(missing_ok=True)
            _clear_stale_containerd(run_dir / "exec" / "containerd" / "containerd.pid")
            with open(log_path, "wb") as log:
                engine.process = subprocess.Popen(
                    [
                        DOCKERD,
                        "--iptables=false",
                        "--ip6tables=false",
                        "--bridge=none",
                        "--data-root",
                        str(cache_dir / "data"),
                        "--exec-root",
                        str(run_dir / "exec"),
                        "-H",
                        engine.host,
                        "--pidfile",
                        str(run_dir / "dockerd.pid"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while not engine._answers():
                if engine.process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    engine.stop()
                    raise DockerEngineError(f"dockerd did not start (log {log_path}):\n{tail}")
                time.sleep(0.3)
            return engine
        except BaseException:
            if engine is not None:
                engine.stop()  # closes lock_fd (a second close would hide the real error)
            else:
                os.close(lock_fd)
            raise

    @staticmethod
    def _lock(fd: int) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DockerEngineError("another session kept the Docker engine for an hour") from None
                time.sleep(2)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            done = subprocess.run(
                [self.client, "-H", self.host, "version", "--format", "{{.Server.Version}}"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def stop(self) -> None:
        """Stop the dockerd started here (it stops its containerd), release the lock. Safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        if process is not None:
            # A dockerd that was killed leaves its containerd (in a session of its own) behind.
            pid_file = RUN_DIR / "exec" / "containerd" / "containerd.pid"
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        if process is not None:
            # dockerd leaves mounts behind (its default network namespace, at times its data root bound on
            # itself); unmounted, the folders are plain folders again.
            for point in sorted(_mounts_below(RUN_DIR) + _mounts_below(CACHE_DIR), key=len, reverse=True):
                _unmount(point)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def docker(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.client, *args],
            env=self.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            tail = (done.stdout + done.stderr)[-4000:]
            raise DockerEngineError(f"docker {' '.join(args)} exited with {done.returncode}:\n{tail}")
        return done

    def image_size(self, tag: str) -> int:
        return int(self.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())

    def image_label(self, tag: str, label: str) -> str | None:
        done = self.docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
        if done.returncode != 0:
            return None
        labels = json.loads(done.stdout.strip() or "null") or {}
        value = labels.get(label)
        return value if isinstance(value, str) else None

    def forget_builds(self) -> None:
        """Remove every container and every image but the stand-ins, so each session's builds run all their
        steps (a cached step would not show binslim's report)."""
        containers = self.docker("container", "ls", "-aq").stdout.split()
        if containers:
            self.docker("container", "rm", "-f", *containers)
        keep = {standin.tag for standin in STANDINS}
        listed = self.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        doomed = [tag for tag in listed if tag not in keep and not tag.endswith(":<none>")]
        if doomed:
            self.docker("image", "rm", "-f", *doomed)
        self.docker("image", "prune", "-f")

    # --- stand-ins ------------------------------------------------------------------------------------------

    def ensure_base_images(
        self, standins: Sequence[StandIn] = STANDINS, *, log: IO[str] | None = None
    ) -> None:
        """Build each stand-in whose tag is missing or was built from another recipe."""
        for standin in standins:
            wanted = _standin_hash(standin)
            if self.image_label(standin.tag, STANDIN_LABEL) == wanted:
                continue
            started = time.monotonic()
            self._build_standin(standin, wanted)
            if log is not None:
                print(f"built stand-in {standin.tag} in {time.monotonic() - started:.0f} s", file=log)

    def _build_standin(self, standin: StandIn, recipe_hash: str) -> None:
        if shutil.which("debootstrap") is None:
            raise DockerEngineError(
                "debootstrap not found: install Debian's debootstrap (scripts/install.sh --test)"
            )
        mirror = host_debian_mirror(standin.suite)
        work = Path(tempfile.mkdtemp(prefix="standin-", dir=CACHE_DIR))
        try:
            root = work / "root"
            include = [f"--include={','.join(standin.packages)}"] if standin.packages else []
            _run(
                ["debootstrap", "--variant=minbase", *include, standin.suite, str(root), mirror],
                timeout=DEBOOTSTRAP_TIMEOUT,
            )
            self._finish_tree(root, standin, mirror)
            base_tag = f"binslim-standin/{standin.tag.replace(':', '-')}:{recipe_hash}"
            import_tag = base_tag if standin.dockerfile else standin.tag
            changes = [f"ENV {key}={value}" for key, value in standin.env.items()]
            changes += [f"CMD {json.dumps(list(standin.cmd))}", f"WORKDIR {standin.workdir}"]
            if not standin.dockerfile:
                changes.append(f"LABEL {STANDIN_LABEL}={recipe_hash}")
            change_args = [arg for change in changes for arg in ("--change", change)]
            tar = subprocess.Popen(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-c", "."],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            try:
                assert tar.stdout is not None
                done = subprocess.run(
                    [self.client, "import", *change_args, "-", import_tag],
                    env=self.env,
                    stdin=tar.stdout,
                    capture_output=True,
                    text=True,
                    timeout=BUILD_TIMEOUT,
                    check=False,
                )
            finally:
                if tar.stdout is not None:
                    tar.stdout.close()
                tar_status = tar.wait(COMMAND_TIMEOUT)
            if done.returncode != 0 or tar_status != 0:
                raise DockerEngineError(
                    f"docker import {import_tag} failed (tar {tar_status}):\n{done.stderr}"
                )
            if standin.dockerfile:
                context = work / "context"
                context.mkdir()
                shutil.copy2(BACKPORTS_SCRIPT, context / "enable-backports.sh")
                dockerfile = standin.dockerfile.format(base=base_tag, suite=standin.suite)
                dockerfile += f"LABEL {STANDIN_LABEL}={recipe_hash}\n"
                (context / "Dockerfile").write_text(dockerfile)
                self.docker(
                    "build", "--network", "host", "-t", standin.tag, str(context), timeout=BUILD_TIMEOUT
                )
                self.docker("image", "rm", base_tag)
        finally:
            _remove_tree(work)

    @staticmethod
    def _finish_tree(root: Path, standin: StandIn, mirror: str) -> None:
        """apt sources as the official images have them (deb822), the host's CA bundle, no package caches,
        no host files."""
        (root / "etc/apt/sources.list").unlink(missing_ok=True)
        (root / "etc/apt/sources.list.d/debian.sources").write_text(
            f"Types: deb\nURIs: {mirror}\nSuites: {standin.suite} {standin.suite}-updates\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        if HOST_CA_BUNDLE.exists():
            bundle = root / "etc/ssl/certs/ca-certificates.crt"
            bundle.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, bundle)
            # Kept also where update-ca-certificates looks, so a later ca-certificates install keeps it.
            local = root / "usr/local/share/ca-certificates"
            local.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, local / "host-bundle.crt")
        for leftover in ("etc/resolv.conf", "etc/hostname"):
            path = root / leftover
            if path.exists() or path.is_symlink():
                path.unlink()
                path.touch()
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / cache).glob("*"):
                if entry.is_file() and entry.name != "lock":
                    entry.unlink()
        for log in (root / "var/log").rglob("*"):
            if log.is_file():
                log.unlink()
        if standin.drop_docs:
            for docs in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"):
                shutil.rmtree(root / docs, ignore_errors=True)
                (root / docs).mkdir(parents=True, exist_ok=True)


def stop_orphaned_engine() -> bool:
    """Stop a dockerd that no session holds (its pytest was killed before its finalizer ran). True when one
    was stopped; an engine that a running session holds is left alone."""
    lock_path = CACHE_DIR / "lock"
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        probe = DockerEngine(socket=RUN_DIR / "docker.sock", process=None, lock_fd=None, log_path=Path())
        if not probe._answers():
            return False
        _stop_stale_dockerd(RUN_DIR / "dockerd.pid")
        for point in sorted(_mounts_below(RUN_DIR) + _mounts_below(CACHE_DIR), key=len, reverse=True):
            _unmount(point)
        return True
    finally:
        os.close(fd)


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["stop-orphaned"]:
        if stop_orphaned_engine():
            print(f"stopped an orphaned dockerd ({RUN_DIR / 'dockerd.pid'})")
        return 0
    if list(argv) != ["bases"]:
        print("usage: python3 -m tests.docker_engine bases|stop-orphaned", file=sys.stderr)
        return 2
    engine = DockerEngine.start()
    try:
        engine.ensure_base_images(log=sys.stdout)
        for standin in STANDINS:
            print(f"{standin.tag}: {engine.image_size(standin.tag):,} B")
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
