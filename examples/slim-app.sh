#!/bin/sh
# The binslim step of the builder stages in examples/: install binslim into a virtual environment (Debian's
# Python refuses a system-wide pip install) and write the slimmed, verified INPUT to OUTPUT.
#
#   slim-app.sh INPUT OUTPUT [BINSLIM OPTION...]       e.g. slim-app.sh /go/bin/app /app --upx
#   slim-app.sh bundle PROG... -o ROOT [OPTION...]     binslim bundle: PROG's minimal root, for FROM scratch
#
#   BINSLIM_VENV        where the virtual environment goes (default /opt/binslim); reused when it has binslim
#   BINSLIM_PIP_SPEC    what pip installs (default /binslim-src, the checkout the Dockerfiles copy in; a
#                       published release such as binslim==0.1.0, a wheel or a URL also work)
#   PIP_*               pip's own settings (an index, or a folder of wheels for offline builds)
#   BINSLIM_*           binslim's options (see README, "Options from the environment")
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: slim-app.sh INPUT OUTPUT [BINSLIM OPTION...]" >&2
    exit 2
fi
venv=${BINSLIM_VENV:-/opt/binslim}
if [ ! -x "$venv/bin/binslim" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
        "${BINSLIM_PIP_SPEC:-/binslim-src}"
fi

if [ "$1" = bundle ]; then
    exec "$venv/bin/binslim" "$@"
fi
input=$1
output=$2
shift 2
exec "$venv/bin/binslim" "$input" -o "$output" "$@"
