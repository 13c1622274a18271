#!/usr/bin/env bash
# Checkout throughput of the embedded system: starts `mercato up` on its own ports and data
# directory, creates an admin, runs `mercato loadgen`, and prints its report with the CPU the
# `mercato up` process used meanwhile (user + system, from /proc, including the load generator's
# setup: registering customers and raising stock).
#
#   scripts/bench-checkout.sh BIN RATE SECS [BOUND]
#
# BIN is a release build (`cargo build --release -p mercato`, then target/release/mercato);
# BOUND is `[orders] max_orders_in_flight` (100 unless given).
set -euo pipefail

bin=$1 rate=$2 secs=$3 bound=${4:-100}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# Ports of their own, so the bench runs beside anything else on the machine.
{
  for entry in gateway:28080 identity:28101 customers:28102 inventory:28103 orders:28104 \
    payments:28105 notifications:28106 payment-sandbox:28190; do
    printf '[services.%s]\nlisten = "127.0.0.1:%s"\n' "${entry%%:*}" "${entry##*:}"
  done
  printf '[log]\nformat = "json"\n'
} >"$dir/mercato.toml"
export MERCATO_CONFIG="$dir/mercato.toml"
export MERCATO_ORDERS__MAX_ORDERS_IN_FLIGHT="$bound"
export MERCATO_ADMIN_PASSWORD='bench admin password'

"$bin" --data-dir "$dir/data" up >"$dir/up.log" 2>&1 &
up=$!
ready=0
for _ in $(seq 1 100); do
  if curl -sf http://127.0.0.1:28080/ready >/dev/null; then ready=1; break; fi
  sleep 0.3
done
if [ $ready = 0 ]; then
  echo "bench: mercato up did not become ready; its log:" >&2
  cat "$dir/up.log" >&2
  kill "$up"
  exit 1
fi
"$bin" --data-dir "$dir/data" admin create --email admin@example.com >/dev/null

ticks() { awk '{print $14 + $15}' "/proc/$up/stat"; }
hz=$(getconf CLK_TCK)
cpu0=$(ticks) t0=$(date +%s.%N)
"$bin" loadgen --target http://127.0.0.1:28080 --rate "$rate" --duration-secs "$secs" \
  --admin-email admin@example.com | tee "$dir/report"
cpu1=$(ticks) t1=$(date +%s.%N)
kill -INT "$up"
wait "$up" || true

confirmed=$(awk '$1 == "confirmed" {print $2; exit}' "$dir/report")
awk -v c0="$cpu0" -v c1="$cpu1" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v n="$confirmed" 'BEGIN {
  cpu = (c1 - c0) / hz; wall = t1 - t0
  printf "mercato up CPU        %.1f s over %.1f s (%.0f %% of one core; %.2f ms per confirmed order)\n",
    cpu, wall, 100 * cpu / wall, 1000 * cpu / (n > 0 ? n : 1)
}'
