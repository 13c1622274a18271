#!/usr/bin/env bash
# The gateway against nginx as a plain reverse proxy, side by side on this machine, both proxying
# to the same trivial upstream (an nginx answering `200 ok`), loaded the same way by wrk. Prints
# one table: requests per second, p50/p99 latency, non-2xx answers (must be 0), connections the
# upstream accepted during the run (few: the proxy keeps its upstream connections alive), and the
# CPU time (user + system) and peak RSS of the server under test: the proxy's processes, or the
# upstream's in the first row. On a machine this small wrk, the upstream and the proxy share the
# cores, so CPU per request says more about the proxy than requests per second does.
#
#   scripts/bench-gateway.sh
#
# Targets: the upstream directly (the floor), nginx, then the gateway (the `bench_gateway`
# example, release build) once per mode in MODES:
#   plain           public route, rate limiting off: the same work as nginx's plain proxy
#   jwt             the route requires an ES256 token, checked against a JWKS the gateway fetched
#   rate-limit      public route, GCRA rate limit on (keyed by client address)
#   jwt-rate-limit  both, as in production; the rate class is far above the offered load
# Settings (environment): WORKERS (2: the gateway's worker threads and nginx's worker_processes),
# THREADS (2) and CONNECTIONS (64) of wrk, DURATION (20s) measured after WARMUP (5s), ROUNDS (1),
# MODES ("plain jwt-rate-limit jwt rate-limit"), FLOOD (1: also the forged-token flood below);
# ROUNDS=0 FLOOD=0 INSTRUCTIONS=1 counts instructions only.
#
# The flood: the gateway in jwt-rate-limit mode, trusting 127.0.0.1 as a proxy so that two wrk
# runs at once are two clients by X-Forwarded-For: one sending valid tokens (8 connections),
# one a forged token (valid header and claims, another token's signature; 32 connections).
# Reported: the valid client alone, then beside the flood with the pre-authentication limit on
# and off, with the gateway's CPU per request over both clients' requests.
#
# The overload (OVERLOAD=1, the default): latency at twice an upstream's capacity with adaptive
# concurrency off and on. The example starts its own upstream (8 requests at once, 20 ms each:
# 400 a second) and offers the gateway 800 GETs a second at a constant rate for OVERLOAD_SECS
# (10); reported per second: answered (200) and shed (503), and the latency of the answered.
#
# INSTRUCTIONS=1 (off by default: a few minutes) also counts the instructions each proxy runs in
# user space per request, a figure that does not drift with the machine's load as times do:
# nginx (one process, master_process off) and the gateway (one worker thread) under valgrind's
# callgrind, counting only while wrk -t1 -c4 sends requests for INSTRUCTIONS_DURATION (10s),
# after a warm-up. The kernel's share (the socket calls) is not in it. CALLGRIND_DIR=dir keeps
# each measured profile there (dir/nginx.callgrind, dir/gateway-<mode>.callgrind), for
# callgrind_annotate --inclusive=yes.
#
# Installs nginx, wrk, curl and valgrind with apt-get when missing (as root on Debian). Every
# process runs as a child of this script on free loopback ports and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKERS=${WORKERS:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
ROUNDS=${ROUNDS:-1}
MODES=${MODES:-"plain jwt-rate-limit jwt rate-limit"}
FLOOD=${FLOOD:-1}
INSTRUCTIONS=${INSTRUCTIONS:-0}
OVERLOAD=${OVERLOAD:-1}
OVERLOAD_SECS=${OVERLOAD_SECS:-10}
INSTRUCTIONS_DURATION=${INSTRUCTIONS_DURATION:-10s}
CALLGRIND_DIR=${CALLGRIND_DIR:-}

# Failures are reported on the script's stderr even from inside a silenced poll.
exec 3>&2
fail() {
  echo "bench-gateway: $*" >&3
  exit 1
}

answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# --- what the benchmark needs ----------------------------------------------------------------

missing=()
tools=(nginx wrk curl)
[ "$INSTRUCTIONS" = 1 ] && tools+=(valgrind)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    fail "missing ${missing[*]}; install them"
  fi
  echo "bench-gateway: installing ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx)

# GATEWAY=path runs a bench_gateway built before (another commit's, to compare) instead.
if [ -z "${GATEWAY:-}" ]; then
  echo "bench-gateway: building the gateway (release)" >&2
  cargo build --release --quiet -p mercato-gateway --example bench_gateway
  target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  GATEWAY=$target_dir/release/examples/bench_gateway
fi
[ -x "$GATEWAY" ] || fail "no binary at $GATEWAY"

# --- processes, ports, clean-up ----------------------------------------------------------------

tmp=$(mktemp -d)
# Run as root, nginx's workers drop to an unprivileged user that still has to reach its files.
chmod 755 "$tmp"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taken=" "
# Sets $port to a loopback port nothing listens on, below the kernel's ephemeral range (where
# wrk's and the proxies' own connections take their source ports, so a port picked there can be
# taken by the time a server binds it) and never 8080. Not called in a subshell: $taken must
# remember every port handed out.
free_port() {
  local low=20000 high
  high=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  while :; do
    port=$((low + RANDOM % (high - low)))
    [[ $taken == *" $port "* ]] && continue
    answers "$port" && continue
    taken+="$port "
    return
  done
}

PATIENCE=30
wait_until() { # description command...; polls with a deadline of PATIENCE seconds
  local what=$1 deadline=$((SECONDS + PATIENCE))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what did not happen within $PATIENCE s"
    sleep 0.1
  done
}

start_nginx() { # name port server-blocks [command prefix...]; runs nginx in the foreground
  local dir=$tmp/$1 name=$1 port=$2 servers=$3
  shift 3
  mkdir -p "$dir"
  # Under a command prefix (valgrind), one process serves: no master, one worker.
  local processes="worker_processes $WORKERS;"
  (($# > 0)) && processes="master_process off; worker_processes 1;"
  cat >"$dir/nginx.conf" <<EOF
$processes
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  # wrk's connections live for the whole run; nginx's default closes them every 1,000 requests.
  keepalive_requests 1000000;
  $servers
}
EOF
  "$@" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
  pids+=($!)
  wait_until "$name listening on $port" answers "$port"
}

gateway_started() { # mode
  if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
    cat "$tmp/gateway-$1.log" >&3
    fail "the gateway ($1) exited"
  fi
  test -s "$tmp/gateway.port"
}

GATEWAY_PREFIX=() # a command the gateway runs under (valgrind)
start_gateway() { # mode [example options...]; sets GATEWAY_PID, GATEWAY_URL and TOKEN
  local mode=$1
  shift
  local token=()
  [[ $mode == jwt* ]] && token=(--token-file "$tmp/gateway.token")
  rm -f "$tmp/gateway.port" "$tmp/gateway.token"
  RUST_LOG=${RUST_LOG:-warn} "${GATEWAY_PREFIX[@]}" "$GATEWAY" --upstream "http://127.0.0.1:$upstream_port" --mode "$mode" \
    --workers "$WORKERS" --port-file "$tmp/gateway.port" "${token[@]}" "$@" 2>>"$tmp/gateway-$mode.log" &
  GATEWAY_PID=$!
  pids+=("$GATEWAY_PID")
  wait_until "the gateway ($mode) writing its port" gateway_started "$mode"
  GATEWAY_URL="http://127.0.0.1:$(cat "$tmp/gateway.port")"
  # Ready once it has fetched the JWKS.
  wait_until "the gateway ($mode) ready" curl -fsS "$GATEWAY_URL/ready"
  TOKEN=$(cat "$tmp/gateway.token" 2>/dev/null || true)
}

stop() { # pid; and forgets it, so that clean-up never signals a reused pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local pid kept=()
  for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  pids=("${kept[@]}")
}

load() { # duration output-file wrk-options...; in the background, so a signal stops it at once
  local duration=$1 output=$2
  shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" "$@" >"$output" &
  pids+=($!)
  wait $!
  stop $!
}

peak_rss_mib() { # pids...: the sum of their peak resident sets
  local pid kib total=0
  for pid in "$@"; do
    kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
  done
  echo "$((total / 1024)) MiB"
}

status_of() { # url [curl options...]: prints the status code and the body
  curl -sS -o "$tmp/body" -w '%{http_code}' "$@"
  printf ' %s' "$(cat "$tmp/body")"
}

# --- the upstream and nginx --------------------------------------------------------------------

free_port; upstream_port=$port
free_port; status_port=$port
free_port; nginx_port=$port

start_nginx upstream "$upstream_port" "
  server { listen 127.0.0.1:$upstream_port; location / { return 200 \"ok\"; } }
  server { listen 127.0.0.1:$status_port; location / { stub_status; } }"
upstream_pid=${pids[-1]}

nginx_proxy() { # port: nginx's server blocks as a plain reverse proxy to the upstream
  echo "
  upstream backend {
    server 127.0.0.1:$upstream_port;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }"
}
start_nginx nginx "$nginx_port" "$(nginx_proxy "$nginx_port")"
nginx_pid=${pids[-1]}

upstream_accepts() { curl -fsS "http://127.0.0.1:$status_port/" | awk 'NR == 3 { print $1 }'; }

# --- measuring ---------------------------------------------------------------------------------

cpu_ticks() { # pids...: user + system time so far, in clock ticks
  local pid total=0
  for pid in "$@"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}

# What every row reads of wrk's report: rate, median and p99 latency (in ms), requests, non-2xx.
# shellcheck disable=SC2016 # an awk program: its $ fields are awk's
WRK_FIELDS='
    function ms(v) {
      if (v ~ /us$/) return sprintf("%.2f ms", v / 1000)
      if (v ~ /ms$/) return sprintf("%.2f ms", v + 0)
      return sprintf("%.2f ms", v * 1000)
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    $2 == "requests" && $3 == "in" { requests = $1 }
    /^Requests\/sec:/ { rps = sprintf("%d", $2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
'

rows=()
measure() { # target url server-pids... -- wrk options...
  local target=$1 url=$2
  shift 2
  local server=()
  while [ "$1" != -- ]; do server+=("$1"); shift; done
  shift
  load "$WARMUP" /dev/null "$@" "$url/"
  local accepts ticks out
  accepts=$(upstream_accepts)
  ticks=$(cpu_ticks "${server[@]}")
  load "$DURATION" "$tmp/wrk.out" --latency "$@" "$url/"
  out=$(cat "$tmp/wrk.out")
  ticks=$(($(cpu_ticks "${server[@]}") - ticks))
  # The stub_status query itself is one accepted connection.
  accepts=$(($(upstream_accepts) - accepts - 1))
  rows+=("$(awk -v target="$target" -v conns="$accepts" -v rss="$(peak_rss_mib "${server[@]}")" \
    -v cpu_us="$((ticks * 1000000 / $(getconf CLK_TCK)))" "$WRK_FIELDS"'
    /Socket errors:/ { errors = $0; sub(/^ *Socket errors: */, "", errors) }
    END {
      printf "| %s | %s | %s | %s | %d | %s | %s | %.0f µs | %s |", target, rps, p50, p99, non2xx, \
        (errors == "" ? "0" : errors), conns, (requests > 0 ? cpu_us / requests : 0), rss
    }' <<<"$out")")
  echo "${rows[-1]} (load $(cut -d' ' -f1 /proc/loadavg))" >&2
}

check() { # what expected actual
  [ "$2" = "$3" ] || fail "$1: expected \"$2\", got \"$3\""
}

check "the upstream" "200 ok" "$(status_of "http://127.0.0.1:$upstream_port/")"
check "nginx" "200 ok" "$(status_of "http://127.0.0.1:$nginx_port/")"

echo "machine: $(nproc) cores, $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
  "$(uname -sr); $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
echo "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency after a $WARMUP warm-up;" \
  "$WORKERS nginx workers, $WORKERS gateway worker threads; load average $(cut -d' ' -f1-3 /proc/loadavg)"

for ((round = 1; round <= ROUNDS; round++)); do
  # shellcheck disable=SC2046 # one pid a word
  measure "upstream directly" "http://127.0.0.1:$upstream_port" "$upstream_pid" $(pgrep -P "$upstream_pid") --
  # shellcheck disable=SC2046 # one pid a word
  measure "nginx" "http://127.0.0.1:$nginx_port" "$nginx_pid" $(pgrep -P "$nginx_pid") --
  for mode in $MODES; do
    start_gateway "$mode"
    auth=()
    if [ -n "$TOKEN" ]; then
      check "gateway $mode without a token" 401 "$(status_of "$GATEWAY_URL/" | cut -d' ' -f1)"
      auth=(-H "Authorization: Bearer $TOKEN")
    fi
    check "gateway $mode" "200 ok" "$(status_of "$GATEWAY_URL/" "${auth[@]}")"
    limited=$(curl -sS -o /dev/null -D - "${auth[@]}" "$GATEWAY_URL/" | grep -ci '^ratelimit-limit:' || true)
    case $mode in
      *rate-limit) check "gateway $mode answers with ratelimit-limit" 1 "$limited" ;;
      *) check "gateway $mode answers without ratelimit-limit" 0 "$limited" ;;
    esac
    measure "gateway, $mode" "$GATEWAY_URL" "$GATEWAY_PID" -- "${auth[@]}"
    stop "$GATEWAY_PID"
  done
done

flood_rows=()
flood() { # preauth(on|off|alone)
  local preauth=$1 forged_pid=""
  local args=(--trusted-proxy 127.0.0.1 --forged-token-file "$tmp/forged.token")
  [ "$preauth" = off ] && args+=(--preauth off)
  start_gateway jwt-rate-limit "${args[@]}"
  local forged
  forged=$(cat "$tmp/forged.token")
  check "gateway refuses the forged token" 401 "$(status_of "$GATEWAY_URL/" -H "Authorization: Bearer $forged" -H "X-Forwarded-For: 203.0.113.1" | cut -d' ' -f1)"
  local ticks
  ticks=$(cpu_ticks "$GATEWAY_PID")
  if [ "$preauth" != alone ]; then
    wrk -t1 -c32 -d"$DURATION" -H "Authorization: Bearer $forged" -H "X-Forwarded-For: 203.0.113.66" \
      "$GATEWAY_URL/" >"$tmp/forged.out" &
    forged_pid=$!
    pids+=("$forged_pid")
  fi
  wrk -t1 -c8 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" -H "X-Forwarded-For: 198.51.100.7" \
    "$GATEWAY_URL/" >"$tmp/valid.out"
  [ -n "$forged_pid" ] && { wait "$forged_pid" || true; stop "$forged_pid"; }
  ticks=$(($(cpu_ticks "$GATEWAY_PID") - ticks))
  stop "$GATEWAY_PID"
  local forged_rps=0 forged_requests=0
  if [ "$preauth" != alone ]; then
    forged_rps=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' "$tmp/forged.out")
    forged_requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$tmp/forged.out")
  fi
  flood_rows+=("$(awk -v preauth="$preauth" -v frps="$forged_rps" -v freq="$forged_requests" \
    -v cpu_us="$((ticks * 1000000 / $(getconf CLK_TCK)))" "$WRK_FIELDS"'
    END {
      printf "| %s | %s | %s | %s | %d | %s | %.0f µs |", \
        (preauth == "alone" ? "valid client alone" : "valid client beside the flood, preauth " preauth), \
        rps, p50, p99, non2xx, frps, cpu_us / (requests + freq)
    }' "$tmp/valid.out")")
  echo "${flood_rows[-1]} (load $(cut -d' ' -f1 /proc/loadavg))" >&2
}

if [ "$FLOOD" = 1 ]; then
  for ((round = 1; round <= ROUNDS; round++)); do
    flood alone
    flood on
    flood off
  done
fi

overload_rows=()
if [ "$OVERLOAD" = 1 ]; then
  for adaptive in off on; do
    overload_rows+=("$(RUST_LOG=${RUST_LOG:-warn} "$GATEWAY" --mode plain --overload "$adaptive" --overload-secs "$OVERLOAD_SECS" \
      --workers "$WORKERS" --port-file "$tmp/overload.port" 2>>"$tmp/overload.log")")
    echo "${overload_rows[-1]} (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  done
fi

instruction_rows=()
callgrind() { # name: the command prefix that runs a proxy under callgrind, instrumenting nothing yet
  echo valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/$1.callgrind"
}
count_instructions() { # target name pid url [wrk options...]: instructions per request in user space
  local target=$1 name=$2 pid=$3 url=$4
  shift 4
  callgrind_control --instr=on "$pid" >/dev/null
  wrk -t1 -c4 -d3s "$@" "$url/" >/dev/null
  callgrind_control --zero "$pid" >/dev/null
  wrk -t1 -c4 -d"$INSTRUCTIONS_DURATION" "$@" "$url/" >"$tmp/wrk.out"
  callgrind_control --dump "$pid" >/dev/null
  local requests instructions dump
  requests=$(awk '$2 == "requests" && $3 == "in" { print $1 }' "$tmp/wrk.out")
  # The dump after the counters were zeroed holds the measured requests only.
  dump=$(ls -t "$tmp/$name.callgrind".* | head -n 1)
  instructions=$(awk '/^(summary|totals):/ { total = $2 } END { print total + 0 }' "$dump")
  if [ -n "$CALLGRIND_DIR" ]; then
    mkdir -p "$CALLGRIND_DIR"
    cp "$dump" "$CALLGRIND_DIR/$name.callgrind"
  fi
  ((requests > 0)) || fail "$target under callgrind served no request"
  instruction_rows+=("$(awk -v target="$target" -v requests="$requests" -v instructions="$instructions" \
    "$WRK_FIELDS"'END {
      printf "| %s | %d | %d | %.0f |", target, requests, non2xx, instructions / requests
    }' "$tmp/wrk.out")")
  echo "${instruction_rows[-1]}" >&2
}

if [ "$INSTRUCTIONS" = 1 ]; then
  PATIENCE=300 # valgrind starts slowly
  free_port
  # shellcheck disable=SC2046 # the prefix is words
  start_nginx nginx-callgrind "$port" "$(nginx_proxy "$port")" $(callgrind nginx)
  count_instructions "nginx, plain proxy" nginx "${pids[-1]}" "http://127.0.0.1:$port"
  stop "${pids[-1]}"
  WORKERS=1
  for mode in $MODES; do
    # shellcheck disable=SC2207 # the prefix is words
    GATEWAY_PREFIX=($(callgrind "gateway-$mode"))
    start_gateway "$mode"
    auth=()
    [ -n "$TOKEN" ] && auth=(-H "Authorization: Bearer $TOKEN")
    count_instructions "gateway, $mode" "gateway-$mode" "$GATEWAY_PID" "$GATEWAY_URL" "${auth[@]}"
    stop "$GATEWAY_PID"
  done
fi

echo
echo "| target | req/s | p50 | p99 | non-2xx | socket errors | upstream connections opened | CPU per request | peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if ((${#flood_rows[@]} > 0)); then
  echo
  echo "| forged-token flood | valid req/s | valid p50 | valid p99 | valid non-2xx | forged refused/s | gateway CPU per request (both) |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${flood_rows[@]}"
fi
if ((${#overload_rows[@]} > 0)); then
  echo
  echo "| at twice the upstream's capacity | offered/s | answered (200)/s | shed (503)/s | other answers | p50 answered | p99 answered |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${overload_rows[@]}"
fi
if ((${#instruction_rows[@]} > 0)); then
  echo
  echo "| under callgrind (one process or worker thread, wrk -t1 -c4 -d$INSTRUCTIONS_DURATION) | requests | non-2xx | instructions per request (user space) |"
  echo "|---|---|---|---|"
  printf '%s\n' "${instruction_rows[@]}"
fi
