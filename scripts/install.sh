#!/usr/bin/env bash
# Install binslim and what it needs on Debian bookworm. Safe to rerun: work already done is skipped.
#
#   bash scripts/install.sh             upx (bookworm-backports) and binslim itself (pip install .)
#   bash scripts/install.sh --editable  the same, as an editable install
#   bash scripts/install.sh --test      also the test toolchain (docker.io and debootstrap for the Docker
#                                       tests among it), and binslim editable with its [test] extra
#   bash scripts/install.sh --demo      install, then shrink a small demo program with binslim
set -euo pipefail

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
}

want_test=0
want_demo=0
editable=0
for arg in "$@"; do
    case "$arg" in
        --test) want_test=1 ;;
        --demo) want_demo=1 ;;
        --editable) editable=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

log() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: rerun as root"
    as_root=(sudo)
fi
root() { "${as_root[@]}" "$@"; }

export DEBIAN_FRONTEND=noninteractive
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian bookworm only"

# shellcheck source=/dev/null
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[ -n "$codename" ] || die "cannot tell the Debian release from /etc/os-release"
backports="${codename}-backports"

apt_updated=0
apt_update() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        root apt-get update -qq
        apt_updated=1
    fi
}

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# apt_install [-t SUITE] PACKAGE...: installs those not installed yet; no apt work when none are missing.
apt_install() {
    local target=()
    if [ "$1" = "-t" ]; then
        target=(-t "$2")
        shift 2
    fi
    local missing=()
    local package
    for package in "$@"; do
        is_installed "$package" || missing+=("$package")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    apt_update
    log "apt-get install ${target[*]} ${missing[*]}"
    root apt-get install -y -qq --no-install-recommends "${target[@]}" "${missing[@]}"
}

apt_has_candidate() {
    apt_update
    local candidate
    candidate="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

# The mirror this machine already uses for the main suite: the URIs of the deb822 stanza (or the
# sources.list line) whose suites include the bare codename. No mirror host is written down here.
debian_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        awk -v suite="$codename" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; deb = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/ && $i ~ /[[:space:]]deb([[:space:]]|$)/) deb = 1
                    if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[[:space:]]*/, "", uris); split(uris, u, /[[:space:]]+/); uris = u[1] }
                    if ($i ~ /^Suites:/) suites = " " substr($i, 8) " "
                }
                if (deb && uris != "" && suites ~ ("[[:space:]]" suite "[[:space:]]")) { print uris; exit }
            }' "$file"
    done | head -n 1
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        # deb [options] URI SUITE COMPONENT...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$file" |
            awk -v suite="$codename" '$1 == "deb" && $3 == suite { print $2; exit }'
    done | head -n 1
}

ensure_backports() {
    local enabled
    enabled="$(grep -lsE "^[^#]*[[:space:]]${backports}([[:space:]]|$)" \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources || true)"
    [ -n "$enabled" ] && return 0
    local mirror
    mirror="$(debian_mirror | head -n 1)"
    [ -n "$mirror" ] || die "cannot find this machine's Debian mirror in /etc/apt to add ${backports}"
    log "enabling ${backports} from ${mirror}"
    local signed_by=""
    if [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        signed_by="Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    fi
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n%s\n' "$mirror" "$backports" "$signed_by" |
        root tee /etc/apt/sources.list.d/binslim-backports.sources >/dev/null
    apt_updated=0
    apt_update
}

# Debian's upx-ucl installs /usr/bin/upx-ucl and registers /usr/bin/upx as an alternative; make sure
# plain `upx` works even where the alternative is missing.
ensure_upx_on_path() {
    command -v upx >/dev/null 2>&1 && return 0
    local packaged
    packaged="$(command -v upx-ucl || true)"
    [ -n "$packaged" ] || die "upx-ucl is installed but provides no upx-ucl program"
    log "linking /usr/local/bin/upx -> ${packaged}"
    root ln -sf "$packaged" /usr/local/bin/upx
}

find_rustc() {
    command -v rustc 2>/dev/null && return 0
    local home_rustc="${HOME:-/root}/.cargo/bin/rustc"
    [ -x "$home_rustc" ] && echo "$home_rustc" && return 0
    return 1
}

ensure_python() {
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-pip python3-venv
    elif ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "binslim needs Python 3.9 or newer"
}

pip_install() {
    local flags=(--disable-pip-version-check --quiet --root-user-action=ignore)
    # Debian's own python3 refuses pip installs (PEP 668) unless asked; a pyenv or venv python does not.
    if python3 -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))' \
        && [ -z "${VIRTUAL_ENV:-}" ]; then
        flags+=(--break-system-packages)
    fi
    log "python3 -m pip install $*"
    python3 -m pip install "${flags[@]}" "$@"
}

# Skip the pip step when this checkout is already installed the same way from the same pyproject.toml
# (and, for a copying install, the same sources).
install_binslim() {
    local spec="$1"
    local stamp_dir="$repo_root/build"
    local stamp="$stamp_dir/.install-stamp"
    local sources="editable (compat)"
    if [ "$spec" = "release" ]; then
        sources="$(find binslim -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum)"
    fi
    local wanted
    wanted="$(printf '%s\n%s\n%s\n%s\n' "$spec" "$(python3 -c 'import sys; print(sys.executable)')" \
        "$(sha256sum pyproject.toml | cut -d' ' -f1)" "$sources")"
    local installed_from
    installed_from="$(cd / && { python3 -c 'import binslim; print(binslim.__file__)' 2>/dev/null || true; })"
    # An editable install made from another checkout (a CI clone, say) does not count.
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -n "$installed_from" ] &&
        { [ "$spec" = "release" ] || [[ "$installed_from" == "$repo_root/"* ]]; }; then
        log "binslim already installed (${spec})"
        return 0
    fi
    case "$spec" in
        # compat: a plain path in a .pth file; the default finder costs every Python start ~20 ms.
        editable*) pip_install -e ".${spec#editable}" --config-settings editable_mode=compat ;;
        *) pip_install . ;;
    esac
    mkdir -p "$stamp_dir"
    printf '%s\n' "$wanted" >"$stamp"
}

run_demo() {
    local demo_dir="$repo_root/build/demo"
    mkdir -p "$demo_dir"
    apt_install gcc libc6-dev
    log "building build/demo/demo from testdata/demo/demo.c with -g"
    gcc -g -O1 testdata/demo/demo.c -o "$demo_dir/demo"
    command -v binslim >/dev/null 2>&1 || die "binslim is not on PATH after pip install"
    (
        cd "$demo_dir"
        rm -f demo.slim
        # The whole job: strip, pack with UPX, run both and compare, install.
        log "binslim demo -o demo.slim --upx   (in build/demo)"
        binslim demo -o demo.slim --upx
        ./demo.slim >/dev/null
        echo "build/demo/demo.slim runs"
    )
}

# --- runtime -------------------------------------------------------------------------------------------
ensure_backports
apt_install -t "$backports" upx-ucl
ensure_upx_on_path
ensure_python

# --- test toolchain ------------------------------------------------------------------------------------
if [ "$want_test" -eq 1 ]; then
    apt_install gcc g++ libc6-dev musl-tools qemu-user elfutils gdb binutils llvm time patchelf systemtap-sdt-dev
    # binslim bundle: real Debian programs to bundle (jq, sqlite3), lddtree (pax-utils) to compare with, and
    # Debian's own python3, which user nobody can run for the user-namespace test.
    apt_install jq sqlite3 pax-utils python3-minimal
    apt_install -t "$backports" golang-1.23-go
    # The Docker recipe tests (tests/docker_engine.py) start this dockerd themselves and build their base
    # images with debootstrap. Installing docker.io must not start a daemon: policy-rc.d says no while it runs.
    if ! is_installed docker.io || ! is_installed debootstrap; then
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | root tee "$policy" >/dev/null
            root chmod 755 "$policy"
            trap 'root rm -f "$policy"' EXIT
            apt_install docker.io debootstrap
            root rm -f "$policy"
            trap - EXIT
        else
            apt_install docker.io debootstrap
        fi
    fi
    if ! find_rustc >/dev/null; then
        apt_install rustc
    fi
    # 32-bit x86 fixtures are optional: install multilib where Debian offers it, carry on where not.
    if ! is_installed gcc-multilib; then
        if apt_has_candidate gcc-multilib; then
            apt_install gcc-multilib || echo "install.sh: gcc-multilib failed to install; hello-c-i386 will be absent" >&2
        else
            echo "install.sh: gcc-multilib is not available here; hello-c-i386 will be absent" >&2
        fi
    fi
    install_binslim "editable[test]"
elif [ "$editable" -eq 1 ]; then
    install_binslim "editable"
else
    install_binslim "release"
fi

if [ "$want_demo" -eq 1 ]; then
    run_demo
fi
log "done"
