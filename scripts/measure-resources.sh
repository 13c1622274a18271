#!/usr/bin/env bash
# Measures what each service process uses under checkout load, for the Kubernetes requests and
# limits (`mercato k8s`): every service as its own `mercato serve` process on PostgreSQL and a
# private NATS JetStream server, `mercato loadgen` at RATE orders/s for SECS seconds through the
# gateway, then per process: CPU time during the run (user + system, from /proc/PID/stat) as
# millicores, and peak resident memory (VmHWM). Before the load, the latency of 500 reads of one
# product through the gateway, one after another on one client connection: the gateway-to-service
# hop (the gateway keeps its connections to inventory open, as under load).
#
#   scripts/measure-resources.sh [--bin target/release/mercato] [--rate 20] [--secs 30] [--tls] [--tokens]
#
# --tls: certificates from `mercato certs` and every service's port over mutual TLS (the gateway
# presents its certificate to the services; clients still reach the gateway in plaintext, so the
# numbers are those of TLS between services). --tokens: service tokens required on internal calls.
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and nats-server on PATH; its databases
# are named measure_mercato_<service> and dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/mercato
rate=20
secs=30
tls=0
tokens=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --tls) tls=1; shift ;;
    --tokens) tokens=1; shift ;;
    *) echo "usage: $0 [--bin PATH] [--rate R] [--secs S] [--tls] [--tokens]" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "measure: $bin is not an executable; build it first" >&2; exit 1; }
bin=$(realpath "$bin")

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for s in identity customers inventory orders payments notifications; do
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS measure_mercato_$s" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_port() { # port
  local deadline=$((SECONDS + 60))
  until answers "$1"; do
    ((SECONDS < deadline)) || { echo "measure: nothing listens on $1" >&2; exit 1; }
    sleep 0.2
  done
}

nats_port=$(free_port)
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$nats_port"

services=(identity customers inventory payment-sandbox payments notifications orders gateway)
declare -A port
env_args=(
  MERCATO_DATABASE__URL="postgres://postgres@127.0.0.1:5432/measure_{service}"
  MERCATO_BUS__URL="nats://127.0.0.1:$nats_port"
  MERCATO_GATEWAY__RATE_LIMIT__ENABLED=false
  MERCATO_INVENTORY__DEMO_CATALOGUE=true
  MERCATO_LOG__FORMAT=json
  RUST_LOG=warn
)
cat >"$work/mercato.toml" <<EOF
data_dir = "$work/data"
EOF
for s in "${services[@]}"; do
  port[$s]=$(free_port)
  cat >>"$work/mercato.toml" <<EOF
[services.$s]
listen = "127.0.0.1:${port[$s]}"
EOF
done
cat >>"$work/mercato.toml" <<EOF
[payments.provider]
url = "http://127.0.0.1:${port[payment-sandbox]}"
EOF
if [ "$tokens" = 1 ]; then env_args+=(MERCATO_SERVICE_TOKENS__ENABLED=true); fi

# The sandbox stands for an outside provider: no certificate of the service CA.
tls_env() { # service
  if [ "$tls" = 1 ] && [ "$1" != payment-sandbox ]; then
    echo MERCATO_TLS__ENABLED=true MERCATO_TLS__CA="$work/certs/ca.pem" \
      MERCATO_TLS__CERT="$work/certs/$1.pem" MERCATO_TLS__KEY="$work/certs/$1.key"
  fi
}
if [ "$tls" = 1 ]; then
  "$bin" certs init --dir "$work/certs" >/dev/null
  for s in "${services[@]}"; do
    [ "$s" = payment-sandbox ] || "$bin" certs issue "$s" --dir "$work/certs" >/dev/null
  done
fi

declare -A pid_of
for s in "${services[@]}"; do
  # shellcheck disable=SC2046 # one word per variable, paths without spaces (mktemp)
  env "${env_args[@]}" $(tls_env "$s") "$bin" --config "$work/mercato.toml" serve "$s" >"$work/$s.log" 2>&1 &
  pid_of[$s]=$!
  pids+=($!)
  wait_port "${port[$s]}"
done

export MERCATO_ADMIN_PASSWORD=measure-admin-password
env "${env_args[@]}" "$bin" --config "$work/mercato.toml" admin create --email admin@example.com >/dev/null

gateway_url="http://127.0.0.1:${port[gateway]}"
product="$gateway_url/api/products/MUG-001"
deadline=$((SECONDS + 60))
until curl -fs -o /dev/null "$product"; do
  ((SECONDS < deadline)) || { echo "measure: the gateway does not serve $product" >&2; exit 1; }
  sleep 0.2
done
urls=()
for _ in $(seq 500); do urls+=(-o /dev/null "$product"); done
curl -fs -w '%{time_total}\n' "${urls[@]}" | sort -n | awk '
  { t[NR] = $1 * 1000 }
  END { printf "gateway to inventory  %d reads: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n\n",
        NR, t[int(NR * 0.5)], t[int(NR * 0.9)], t[int(NR * 0.99)] }'

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A before
for s in "${services[@]}"; do before[$s]=$(ticks "${pid_of[$s]}"); done
start=$(date +%s.%N)
"$bin" loadgen --target "$gateway_url" --rate "$rate" --duration-secs "$secs" \
  --admin-email admin@example.com | tee "$work/loadgen.txt"
elapsed=$(echo "$(date +%s.%N) - $start" | bc -l)

printf '\n%-16s %12s %14s\n' service "CPU (m)" "peak RSS (MiB)"
for s in "${services[@]}"; do
  p=${pid_of[$s]}
  used=$(( $(ticks "$p") - ${before[$s]} ))
  milli=$(echo "$used / $hz / $elapsed * 1000" | bc -l)
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$p/status")
  printf '%-16s %12.0f %14.1f\n' "$s" "$milli" "$(echo "$hwm / 1024" | bc -l)"
done
echo "($bin, $rate orders/s for $secs s, ${elapsed%.*} s including the drain; tls=$tls tokens=$tokens)"
