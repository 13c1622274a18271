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

export MERCATO_ORDERS__MAX_ORDERS_IN_FLIGHT="$bound"
export MERCATO_ADMIN_PASSWORD='bench admin password'
# shellcheck source=scripts/embedded-up.sh
. "$(dirname "$0")/embedded-up.sh"
embedded_up "$bin" "$dir" 28

ticks() { awk '{print $14 + $15}' "/proc/$up/stat"; }
hz=$(getconf CLK_TCK)
cpu0=$(ticks) t0=$(date +%s.%N)
"$bin" loadgen --target "$gateway" --rate "$rate" --duration-secs "$secs" \
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
