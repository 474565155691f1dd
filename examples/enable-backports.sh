#!/bin/sh
# Add this Debian image's backports suite (upx-ucl and newer Go live there), from the image's own apt
# sources: the same mirror as its main suite, so no mirror address is written into the Dockerfile.
# Reads /etc/apt/sources.list.d/*.sources (deb822, the official images) or sources.list lines.
set -eu

. /etc/os-release
codename=${VERSION_CODENAME:?cannot tell the Debian release from /etc/os-release}

mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v suite="$codename" '
    BEGIN { RS = ""; FS = "\n" }
    {
        uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^URIs:/) { uris = $i; sub(/^URIs:[ \t]*/, "", uris); sub(/[ \t].*/, "", uris) }
            if ($i ~ /^Suites:/) suites = " " substr($i, 8) " "
        }
        if (uris != "" && suites ~ ("[ \t]" suite "[ \t]")) { print uris; exit }
    }')
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' /etc/apt/sources.list |
        awk -v suite="$codename" '$1 == "deb" && $3 == suite { print $2; exit }')
fi
if [ -z "$mirror" ]; then
    echo "enable-backports.sh: no apt source for $codename in /etc/apt" >&2
    exit 1
fi
echo "deb $mirror $codename-backports main" > /etc/apt/sources.list.d/backports.list
