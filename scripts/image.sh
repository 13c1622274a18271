#!/usr/bin/env bash
# Builds the mercato container image from a binary cargo built, and checks it.
#
#   scripts/image.sh [--bin target/release/mercato] [--tag mercato:VERSION]
#                    [--engine podman|docker] [--stage-only] [--check]
#
# The image is `FROM scratch` (see Containerfile): the binary, exactly the shared libraries `ldd`
# lists for it, and the CA certificates; it runs as uid 65532 and has no shell. Nothing is pulled.
#   --stage-only  only stage target/image/rootfs (then `docker build -f Containerfile .`)
#   --check       after building, export the image's filesystem and run it with chroot as uid
#                 65532 on a read-only root (a tmpfs on /tmp, as the pods have): `mercato
#                 --version`, then `mercato serve identity` until /health answers, then SIGTERM,
#                 which must stop it cleanly. Needs root (chroot and a private mount namespace).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/mercato
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag="mercato:$version"
engine=""
stage_only=0
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --engine) engine=$2; shift 2 ;;
    --stage-only) stage_only=1; shift ;;
    --check) check=1; shift ;;
    *) echo "usage: $0 [--bin PATH] [--tag NAME] [--engine podman|docker] [--stage-only] [--check]" >&2; exit 2 ;;
  esac
done
fail() { echo "image: $*" >&2; exit 1; }

[ -x "$bin" ] || fail "$bin is not an executable; build it first (cargo build --release -p mercato)"

rootfs=target/image/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
cp "$bin" "$rootfs/usr/local/bin/mercato"
# Debug info is for debuggers, not for running; a debug build stays a debug build.
if command -v strip >/dev/null; then strip --strip-debug "$rootfs/usr/local/bin/mercato"; fi

# Every library the dynamic loader maps, and the loader itself, at the paths the binary names.
libs=$(ldd "$bin" 2>&1 || true)
if ! grep -qE 'not a dynamic executable|statically linked' <<<"$libs"; then
  while read -r path; do
    [ -n "$path" ] || continue
    [ -e "$path" ] || fail "ldd names $path, which does not exist"
    mkdir -p "$rootfs$(dirname "$path")"
    cp -L "$path" "$rootfs$path"
  done < <(awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' <<<"$libs")
fi
# rustls-native-certs (NATS over TLS) reads the system bundle.
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || fail "$ca is missing (apt-get install ca-certificates)"
cp "$ca" "$rootfs$ca"
echo "image: staged $rootfs ($(du -sh "$rootfs" | cut -f1)): $(cd "$rootfs" && find . -type f | sort | tr '\n' ' ')"

[ "$stage_only" = 1 ] && exit 0

if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else fail "neither podman nor docker is installed (apt-get install podman)"
  fi
fi
"$engine" build --quiet -f Containerfile -t "$tag" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.source=https://github.com/mercato/mercato" . >/dev/null
echo "image: built $tag with $engine"

[ "$check" = 1 ] || exit 0

[ "$(id -u)" = 0 ] || fail "--check needs root (chroot)"
work=$(mktemp -d)
container=""
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  [ -n "$container" ] && "$engine" rm -f "$container" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

container=$("$engine" create "$tag")
mkdir "$work/root"
"$engine" export "$container" | tar -x -C "$work/root"
"$engine" rm -f "$container" >/dev/null
container=""

for forbidden in bin/sh bin/bash usr/bin/apt usr/bin/dpkg sbin/apk; do
  [ ! -e "$work/root/$forbidden" ] || fail "the image has /$forbidden"
done
user=$("$engine" image inspect --format '{{.Config.User}}' "$tag")
[ "$user" = "65532:65532" ] || fail "the image runs as '$user', not 65532:65532"

# Runs the image's mercato as uid 65532 in a private mount namespace where the root is read-only
# and /tmp a fresh tmpfs, with nothing of the host's environment.
in_image() { # env... -- args...
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${envs[@]}" \
    unshare --mount --propagation private -- sh -c '
      root=$1; shift
      mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" &&
        mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp" || exit 97
      chroot=$(command -v chroot)
      unset PATH
      exec "$chroot" --userspec=65532:65532 "$root" "$@"
    ' sh "$work/root" /usr/local/bin/mercato "$@"
}

out=$(in_image -- --version) || fail "mercato --version failed in the image"
grep -q "mercato $version" <<<"$out" || fail "mercato --version said '$out'"
echo "image: $out (uid 65532, read-only root)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
in_image MERCATO_DATA_DIR=/tmp/mercato MERCATO_SERVICES__IDENTITY__LISTEN="127.0.0.1:$port" \
  MERCATO_LOG__FORMAT=json -- serve identity >"$work/identity.log" 2>&1 &
server=$!
deadline=$((SECONDS + 60))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" = 200 ]; do
  if ! kill -0 "$server" 2>/dev/null || ((SECONDS >= deadline)); then
    cat "$work/identity.log" >&2
    fail "mercato serve identity did not answer /health on port $port"
  fi
  sleep 0.2
done
ready=$(curl -s "http://127.0.0.1:$port/ready")
echo "image: mercato serve identity answers /health on $port; /ready: $ready"
kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" = 0 ] || { cat "$work/identity.log" >&2; fail "mercato serve identity exited $status after SIGTERM"; }
echo "image: $tag checked: no shell, uid 65532, runs on a read-only root, stops cleanly"
