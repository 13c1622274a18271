#!/usr/bin/env bash
# Starts the servers the distributed-mode test suites need, on their standard local ports:
# PostgreSQL (5432), NATS with JetStream (4222) and Redis (6379). A server that already answers is
# left alone; one that is down is started (and, when missing and we are root on Debian, installed).
# The console's browser suites need Chromium and chromedriver, installed the same way.
#
#   scripts/services.sh up       start what is down; exit 1 if any cannot be had
#   scripts/services.sh status   report which answer; exit 1 if any does not
set -uo pipefail

PG_PORT=5432
NATS_PORT=4222
REDIS_PORT=6379

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() { # name port
  local deadline=$((SECONDS + 30))
  while ! answers "$2"; do
    if ((SECONDS >= deadline)); then
      echo "services: $1 did not start listening on 127.0.0.1:$2 within 30 s" >&2
      return 1
    fi
    sleep 0.2
  done
}

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

install() { # packages...
  can_install || return 1
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null && APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

start_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then install postgresql || return 1; fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || { echo "services: no PostgreSQL cluster under /etc/postgresql" >&2; return 1; }
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

start_redis() {
  if ! command -v redis-server >/dev/null; then install redis-server || return 1; fi
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

start_nats() {
  if ! command -v nats-server >/dev/null; then install nats-server || return 1; fi
  mkdir -p /var/lib/nats-server 2>/dev/null
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p "$NATS_PORT" -js -sd /var/lib/nats-server -l /var/log/nats-server.log
}

ensure() { # name port start-function
  if answers "$2"; then
    echo "services: $1 answers on 127.0.0.1:$2"
    return 0
  fi
  echo "services: $1 is down; starting it"
  if ! "$3"; then
    echo "services: cannot start $1" >&2
    return 1
  fi
  wait_for "$1" "$2" && echo "services: $1 answers on 127.0.0.1:$2"
}

ensure_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "services: chromium and chromedriver found"
    return 0
  fi
  echo "services: chromium or chromedriver is missing; installing them"
  if ! install chromium chromium-driver; then
    echo "services: cannot install chromium and chromium-driver" >&2
    return 1
  fi
  echo "services: chromium and chromedriver installed"
}

status() {
  local failed=0
  for entry in "postgres $PG_PORT" "nats $NATS_PORT" "redis $REDIS_PORT"; do
    set -- $entry
    if answers "$2"; then echo "services: $1 up"; else echo "services: $1 down"; failed=1; fi
  done
  return $failed
}

case "${1:-up}" in
  up)
    failed=0
    ensure postgres "$PG_PORT" start_postgres || failed=1
    ensure nats "$NATS_PORT" start_nats || failed=1
    ensure redis "$REDIS_PORT" start_redis || failed=1
    ensure_browser || failed=1
    exit $failed
    ;;
  status) status ;;
  *) echo "usage: $0 [up|status]" >&2; exit 2 ;;
esac
