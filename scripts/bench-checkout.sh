#!/usr/bin/env bash
# Checkout throughput of the embedded system: starts `mercato up` on its own ports and data
# directory, creates an admin, runs `mercato loadgen`, and prints its report with the CPU the
# `mercato up` process used meanwhile (user + system, from /proc, including the load generator's
# setup: registering customers and raising stock), and the database commits it made meanwhile
# (`mercato_db_commits_total` and `mercato_db_transactions_total` of every service's database
# and the bus's, from the services' /metrics) and, where `perf` can count system calls, the
# `fsync`s it made (every SQLite commit with `synchronous = FULL`, plus checkpoints).
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
# A counter summed over the services' own databases, plus the bus's once (every service shows it).
counter() {
  local port
  for port in 101 102 103 104 105 106; do
    curl -sf "http://127.0.0.1:28$port/metrics" || true
  done | awk -v name="$1_total" '
    index($1, name "{") == 1 { if ($1 ~ /database="bus"/) bus = $2; else own += $2 }
    END { printf "%d\n", own + bus }'
}
hz=$(getconf CLK_TCK)
commits0=$(counter mercato_db_commits) transactions0=$(counter mercato_db_transactions)
cpu0=$(ticks) t0=$(date +%s.%N)
perf=""
if perf stat -e syscalls:sys_enter_fsync -- true >/dev/null 2>&1; then
  perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -p "$up" -o "$dir/perf" &
  perf=$!
fi
"$bin" loadgen --target "$gateway" --rate "$rate" --duration-secs "$secs" \
  --admin-email admin@example.com | tee "$dir/report"
cpu1=$(ticks) t1=$(date +%s.%N)
commits1=$(counter mercato_db_commits) transactions1=$(counter mercato_db_transactions)
if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" || true; fi
kill -INT "$up"
wait "$up" || true

confirmed=$(awk '$1 == "confirmed" {print $2; exit}' "$dir/report")
awk -v c0="$cpu0" -v c1="$cpu1" -v hz="$hz" -v t0="$t0" -v t1="$t1" -v n="$confirmed" 'BEGIN {
  cpu = (c1 - c0) / hz; wall = t1 - t0
  printf "mercato up CPU        %.1f s over %.1f s (%.0f %% of one core; %.2f ms per confirmed order)\n",
    cpu, wall, 100 * cpu / wall, 1000 * cpu / (n > 0 ? n : 1)
}'
awk -v c="$((commits1 - commits0))" -v t="$((transactions1 - transactions0))" -v n="$confirmed" 'BEGIN {
  if (t > 0) printf "database commits      %d (%.1f per confirmed order) for %d transactions (%.1f per order)\n",
    c, c / (n > 0 ? n : 1), t, t / (n > 0 ? n : 1)
}'
if [ -n "$perf" ]; then
  awk -F, -v n="$confirmed" '/sys_enter_f/ {s += $1} END {
    printf "fsync calls           %d (%.1f per confirmed order)\n", s, s / (n > 0 ? n : 1)
  }' "$dir/perf"
fi
