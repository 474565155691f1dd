#!/bin/sh
# The binslim step of examples/Dockerfile's builder stage, kept in one script so that
# tests/test_docker_recipe.py runs exactly what the Dockerfile runs.
#
#   slim-app.sh INPUT OUTPUT [BINSLIM OPTION...]
#
# Installs binslim into a fresh virtual environment (Debian's Python refuses a system-wide pip install)
# and writes the stripped, UPX-packed and verified INPUT to OUTPUT.
#
#   BINSLIM_VENV        where the virtual environment goes (default /opt/binslim)
#   BINSLIM_PIP_SPEC    what pip installs (default: binslim; a checkout, a wheel or a git URL also work)
#   PIP_*               pip's own settings (an index or a wheel folder for offline builds)
#   BINSLIM_*           binslim's options (see README, "Options from the environment")
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: slim-app.sh INPUT OUTPUT [BINSLIM OPTION...]" >&2
    exit 2
fi
input=$1
output=$2
shift 2

venv=${BINSLIM_VENV:-/opt/binslim}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir "${BINSLIM_PIP_SPEC:-binslim}"
"$venv/bin/binslim" "$input" -o "$output" --upx "$@"
