#!/bin/sh
# Make (once) a local Python base image for container tests: no registry is reachable in CI,
# so `python:3.11-slim` cannot be pulled. Debian bookworm's python3 is 3.11.
#   usage: tests/support/make_base_image.sh [TAG]      (default localhost/mlship-python-base:3.11)
# Needs: apt-get install -y podman mmdebstrap   (run as root)
set -eu
TAG="${1:-localhost/mlship-python-base:3.11}"
SUITE="${MLSHIP_BASE_SUITE:-bookworm}"

if podman image exists "$TAG"; then
    echo "base image $TAG exists"
    exit 0
fi

# The mirror apt already uses (deb822 .sources or one-line .list), so this works offline-from-internet.
MIRROR="${MLSHIP_BASE_MIRROR:-}"
if [ -z "$MIRROR" ]; then
    MIRROR=$(grep -h -s -E '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n 1 || true)
fi
if [ -z "$MIRROR" ]; then
    MIRROR=$(grep -h -s -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n 1 || true)
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# This machine's extra CA certificates (e.g. an egress proxy's) so pip inside a build trusts the index.
mkdir -p "$WORK/ca"
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] && cp "$crt" "$WORK/ca/"
done

mmdebstrap --variant=minbase --quiet \
    --include=python3,python3-venv,python3-pip-whl,python3-setuptools-whl,ca-certificates \
    --customize-hook="mkdir -p \"\$1/usr/local/share/ca-certificates\"" \
    --customize-hook="sync-in $WORK/ca /usr/local/share/ca-certificates" \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/*' \
    "$SUITE" "$WORK/base.tar" "$MIRROR"

# --change keeps the image usable as a FROM: a PATH and a shell CMD like the official images.
podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$WORK/base.tar" "$TAG" >/dev/null
echo "made base image $TAG"
