#!/usr/bin/env bash
# Runs the whole test suite.
#
# The embedded suites (SQLite, in-process) always run. The backend suites run when their server
# answers on its standard local port: PostgreSQL on 5432 (tests named `…::postgres::…`). With
# MERCATO_REQUIRE_BACKENDS=1 (as in CI) a missing server is an error, never a skip.
# Start the servers with `scripts/services.sh up`.
set -euo pipefail
cd "$(dirname "$0")/.."

require=${MERCATO_REQUIRE_BACKENDS:-0}
answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

left_out=()
check() { # suite port
  if answers "$2"; then
    echo "test: $1 suites on (127.0.0.1:$2 answers)"
  elif [ "$require" = 1 ]; then
    echo "test: MERCATO_REQUIRE_BACKENDS=1 but $1 does not answer on 127.0.0.1:$2" >&2
    exit 1
  else
    left_out+=("$1")
  fi
}
check postgres 5432

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

for suite in "${left_out[@]}"; do
  echo "test: LEFT OUT the $suite suites: no server on its port. Run 'scripts/services.sh up' (or start $suite yourself), then run this again."
done
exit $status
