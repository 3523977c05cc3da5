#!/usr/bin/env bash
# Build the gateway's container image on a machine that reaches Debian and PyPI but no container registry:
# podman from Debian, a Debian base image made locally with mmdebstrap (kept between builds), and the wheel
# built on the host by maturin (release profile). The Dockerfile stays the ordinary one (BASE / WHEELS args).
#   scripts/image.sh [TAG]      default localhost/ai-gateway:latest; prints the image size
#   GATEWAY_PROFILE=fast ...    the Rust core's fast cargo profile instead of release (the container test: it
#                               reuses what `make test-setup` built)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/ai-gateway:latest}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null && [[ -x $(command -v runc) ]] || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if ((${#need[@]})); then
  echo "image: installing ${need[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap >/dev/null
fi
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/containers.conf}

# one base build and one podman build at a time on this machine (parallel test runs share podman's storage);
# the wheel is built outside the lock (each checkout has its own target directory)
exec 9>"${TMPDIR:-/tmp}/ai-gateway-image.lock"
flock 9

# The base: Debian bookworm's Python 3.11 (the same Debian and Python as python:3.11-slim), no docs or locales.
suite=bookworm
packages=python3,python3-venv,ca-certificates
recipe="$suite $packages nodoc-1"
base="localhost/gateway-base:$suite-$(printf '%s' "$recipe" | sha256sum | cut -c1-12)"
if ! podman image exists "$base"; then
  echo "image: making the base image $base with mmdebstrap (once per machine)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" "$tmp/rootfs.tar"
  podman import --quiet "$tmp/rootfs.tar" "$base" >/dev/null
fi

flock -u 9

# The wheel, on the host (the Rust toolchain is not reachable from inside a build here).
[[ -x .venv/bin/maturin ]] || bash scripts/setup.sh
profile=${GATEWAY_PROFILE:-release}
echo "image: building the wheel (maturin build --profile $profile; log in .venv/maturin-image.log)"
rm -f dist/ai_gateway-*.whl
if ! .venv/bin/maturin build --profile "$profile" --out dist > .venv/maturin-image.log 2>&1; then
  cat .venv/maturin-image.log >&2
  exit 1
fi

# This machine reaches PyPI through a proxy its own CAs vouch for: lend pip the host's bundle for the build
# (mounted, not copied: it does not end up in the image).
ca=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null && [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  ca=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro --build-arg PIP_CERT=/etc/ssl/host-ca.crt)
fi

flock 9
echo "image: podman build -t $tag (base $base)"
podman build --quiet --format docker --network=host "${ca[@]}" \
  --build-arg BASE="$base" --build-arg WHEELS=dist -t "$tag" . >/dev/null
size=$(podman image inspect "$tag" --format '{{.Size}}')
echo "image: $tag built, $((size / 1000000)) MB"
