#!/usr/bin/env bash
# Disk under sustained load: starts the embedded system (`mercato up`) on its own ports and data
# directory with short retention windows, runs `mercato loadgen` for SECS, and every EVERY
# seconds prints the size of each file in the data directory (database + WAL), with the rows the
# retention windows bound: the bus log, every service's inbox dedup records and published outbox
# rows. The bus file and those rows level off once the windows have passed; what keeps growing
# is the business data (events, orders, reservations, mailboxes).
#
#   scripts/soak.sh BIN RATE SECS [EVERY]
#
# BIN is a release build (target/release/mercato); EVERY is 60 unless given. The windows are
# MERCATO_BUS__RETENTION_SECS (60), MERCATO_INBOX__RETENTION_SECS (120: it must outlast every
# redelivery, which is 91.2 s with the default inbox settings) and MERCATO_RELAY__RETENTION_SECS
# (60) unless set in the environment. Needs sqlite3 for the row counts.
set -euo pipefail

bin=$1 rate=$2 secs=$3 every=${4:-60}
dir=$(mktemp -d)
up=
load=
# On any exit: the load generator and `mercato up` stop, the data directory goes.
trap '[ -z "$load" ] || kill "$load" 2>/dev/null
  [ -z "$up" ] || { kill -INT "$up" 2>/dev/null; wait "$up" 2>/dev/null; }
  rm -rf "$dir"' EXIT

export MERCATO_ADMIN_PASSWORD='soak admin password'
export MERCATO_BUS__RETENTION_SECS="${MERCATO_BUS__RETENTION_SECS:-60}"
export MERCATO_INBOX__RETENTION_SECS="${MERCATO_INBOX__RETENTION_SECS:-120}"
export MERCATO_RELAY__RETENTION_SECS="${MERCATO_RELAY__RETENTION_SECS:-60}"
data="$dir/data"
# shellcheck source=scripts/embedded-up.sh
. "$(dirname "$0")/embedded-up.sh"
embedded_up "$bin" "$dir" 29

# One SELECT against a live file; a busy or missing table counts as "-".
count() {
  sqlite3 -readonly -cmd '.timeout 2000' "$data/$1" "$2" 2>/dev/null || echo -
}

# Every file's size in KiB (a database and its -wal together), then the bounded rows.
sample() {
  local elapsed=$1 file line=""
  for file in "$data"/*.db; do
    local kib
    kib=$(du -k -c "$file" "$file-wal" 2>/dev/null | awk 'END {print $1}')
    line+=" $(basename "$file" .db)=${kib}K"
  done
  local dedup=0 sent=0 n service
  for service in customers inventory notifications orders payments; do
    n=$(count "$service.db" 'SELECT COUNT(*) FROM inbox_processed')
    [ "$n" = - ] || dedup=$((dedup + n))
  done
  for service in identity customers inventory orders payments; do
    n=$(count "$service.db" 'SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL')
    [ "$n" = - ] || sent=$((sent + n))
  done
  printf '%6ss %s | bus_messages=%s inbox_processed=%s outbox_sent=%s\n' "$elapsed" "$line" \
    "$(count bus.db 'SELECT COUNT(*) FROM bus_messages')" "$dedup" "$sent"
}

echo "soak: $rate orders/s for $secs s; windows: bus ${MERCATO_BUS__RETENTION_SECS} s," \
  "inbox ${MERCATO_INBOX__RETENTION_SECS} s, outbox ${MERCATO_RELAY__RETENTION_SECS} s"
"$bin" loadgen --target "$gateway" --rate "$rate" --duration-secs "$secs" \
  --admin-email admin@example.com >"$dir/report" 2>&1 &
load=$!
start=$(date +%s)
sample 0
while kill -0 "$load" 2>/dev/null; do
  sleep "$every"
  kill -0 "$load" 2>/dev/null || break
  sample $(($(date +%s) - start))
done
status=0
wait "$load" || status=$?
load=
sample $(($(date +%s) - start))
cat "$dir/report"
exit "$status"
