#!/usr/bin/env bash
# The public API against its OpenAPI document: schemathesis (pinned, in a venv of its own) runs
# every check, through every phase including the stateful one, against `mercato up` (embedded)
# through the gateway, once with a customer's token and once with an admin's. Before it, every
# pact under contracts/pacts/ is verified by the official Pact core (pact-python, pinned) against
# the same system: scripts/pact-verify.py. Any failure fails.
#
#   scripts/contract-test.sh [--bin PATH] [--max-examples N]
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
PACT_PYTHON_VERSION=4.2.0
BIN=target/debug/mercato
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-25}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --max-examples) MAX_EXAMPLES=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

VENV=.venv-contracts
if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
if [[ "$("$VENV/bin/pip" show pact-python 2>/dev/null)" != *"Version: $PACT_PYTHON_VERSION"* ]]; then
    "$VENV/bin/pip" install --quiet "pact-python==$PACT_PYTHON_VERSION"
fi
[[ -x "$BIN" ]] || cargo build --quiet -p mercato

WORK=$(mktemp -d)
MERCATO_PID=
cleanup() {
    if [[ -n "$MERCATO_PID" ]]; then
        kill -TERM "$MERCATO_PID" 2>/dev/null || true
        wait "$MERCATO_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Every service on a free port, so this never meets another system on this machine.
for service in gateway identity customers inventory orders payments notifications payment-sandbox; do
    printf '[services.%s]\nlisten = "127.0.0.1:0"\n\n' "$service"
done > "$WORK/mercato.toml"

"$BIN" --config "$WORK/mercato.toml" --data-dir "$WORK/data" up > "$WORK/up.log" 2> "$WORK/up.err" &
MERCATO_PID=$!
GATEWAY=
for _ in $(seq 1 300); do
    GATEWAY=$(awk '$1 == "gateway" && $2 ~ /^http:/ { print $2 }' "$WORK/up.log")
    [[ -n "$GATEWAY" ]] && break
    kill -0 "$MERCATO_PID" 2>/dev/null || { cat "$WORK/up.err" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$GATEWAY" ]] || { echo "mercato up reported no gateway" >&2; exit 1; }

token() { # email password
    curl -sf "$GATEWAY/api/identity/token" \
        --data-urlencode grant_type=password --data-urlencode "username=$1" --data-urlencode "password=$2" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

PASSWORD="contract tests"
CUSTOMER_EMAIL="customer-$RANDOM$RANDOM@example.com"
curl -sf "$GATEWAY/api/identity/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$CUSTOMER_EMAIL\",\"password\":\"$PASSWORD\",\"name\":\"Contract Customer\"}" > /dev/null
ADMIN_EMAIL="admin-$RANDOM$RANDOM@example.com"
MERCATO_ADMIN_PASSWORD="$PASSWORD" "$BIN" --config "$WORK/mercato.toml" --data-dir "$WORK/data" \
    admin create --email "$ADMIN_EMAIL" > /dev/null
CUSTOMER=$(token "$CUSTOMER_EMAIL" "$PASSWORD")
ADMIN=$(token "$ADMIN_EMAIL" "$PASSWORD")
# The customer's profile is made from identity's event; wait for it (bounded), so the run
# exercises the profile routes and not only their 404.
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$GATEWAY/api/customers/me" -H "authorization: Bearer $CUSTOMER" && break
    sleep 0.1
done

failed=0
SANDBOX=$(awk '$1 == "payment-sandbox" && $2 ~ /^http:/ { print $2 }' "$WORK/up.log")
echo "== pact verification (official Pact core, pact-python $PACT_PYTHON_VERSION)"
PACT_DO_NOT_TRACK=true "$VENV/bin/python" scripts/pact-verify.py \
    --gateway "$GATEWAY" --sandbox "$SANDBOX" --bus-db "$WORK/data/bus.db" \
    --customer "$CUSTOMER" --admin "$ADMIN" || failed=1

for who in customer admin; do
    if [[ $who == customer ]]; then auth=$CUSTOMER; else auth=$ADMIN; fi
    echo "== schemathesis $SCHEMATHESIS_VERSION as the $who, at most $MAX_EXAMPLES examples an operation"
    if ! "$VENV/bin/schemathesis" --config-file contracts/schemathesis/schemathesis.toml \
        run "$GATEWAY/api/openapi.json" \
        --url "$GATEWAY" \
        --header "Authorization: Bearer $auth" \
        --checks all \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$MAX_EXAMPLES" \
        --seed 1 \
        --no-color \
        --report junit --report-dir "$WORK/report-$who"; then
        failed=1
    fi
done
exit $failed
