#!/usr/bin/env bash
# Runs the whole test suite.
#
# The embedded suites (SQLite and the embedded bus, in-process) always run. The backend suites run
# when what they need is there:
#   postgres  tests named `…::postgres::…`: PostgreSQL on 127.0.0.1:5432 and `nats-server` on
#             PATH (the distributed setting: each test starts its own NATS server)
#   nats      tests named `…::nats::…`: `nats-server` on PATH
#   redis     tests named `…::redis::…`: Redis on 127.0.0.1:6379 and `redis-server` on PATH
#   browser   tests named `…::browser::…` (the console in headless Chromium): /usr/bin/chromium
#             and /usr/bin/chromedriver (Debian's chromium and chromium-driver)
# With MERCATO_REQUIRE_BACKENDS=1 (as in CI) a missing one is an error, never a skip.
# `scripts/services.sh up` starts (and on Debian installs) PostgreSQL, NATS, Redis and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

require=${MERCATO_REQUIRE_BACKENDS:-0}
answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

left_out=()
missing() { # suite reason
  if [ "$require" = 1 ]; then
    echo "test: MERCATO_REQUIRE_BACKENDS=1 but the $1 suites cannot run: $2" >&2
    exit 1
  fi
  left_out+=("$1")
  reasons+=("$2")
}
reasons=()
has_nats=1
command -v nats-server >/dev/null 2>&1 || has_nats=0

if ! answers 5432; then
  missing postgres "PostgreSQL does not answer on 127.0.0.1:5432"
elif [ $has_nats = 0 ]; then
  missing postgres "nats-server is not on PATH"
else
  echo "test: postgres suites on (PostgreSQL answers on 127.0.0.1:5432, nats-server found)"
fi
if [ $has_nats = 0 ]; then
  missing nats "nats-server is not on PATH"
else
  echo "test: nats suites on (nats-server found)"
fi
if ! answers 6379; then
  missing redis "Redis does not answer on 127.0.0.1:6379"
elif ! command -v redis-server >/dev/null 2>&1; then
  missing redis "redis-server is not on PATH (the outage tests start their own)"
else
  echo "test: redis suites on (Redis answers on 127.0.0.1:6379, redis-server found)"
fi

if [ ! -x /usr/bin/chromium ]; then
  missing browser "/usr/bin/chromium is not installed (apt-get install chromium chromium-driver)"
elif [ ! -x /usr/bin/chromedriver ]; then
  missing browser "/usr/bin/chromedriver is not installed (apt-get install chromium-driver)"
else
  echo "test: browser suites on (/usr/bin/chromium and /usr/bin/chromedriver found)"
fi

if cargo nextest --version >/dev/null 2>&1; then
  filter='all()'
  for suite in "${left_out[@]}"; do filter="$filter - test(/::$suite::/)"; done
  profile=default
  [ "${CI:-}" = true ] && profile=ci
  status=0
  cargo nextest run --workspace --profile "$profile" -E "$filter" || status=$?
else
  skips=()
  for suite in "${left_out[@]}"; do skips+=(--skip "::$suite::"); done
  status=0
  cargo test --workspace -- "${skips[@]}" || status=$?
fi

for i in "${!left_out[@]}"; do
  echo "test: LEFT OUT the ${left_out[$i]} suites (${reasons[$i]}). Run 'scripts/services.sh up', then run this again."
done
exit $status
