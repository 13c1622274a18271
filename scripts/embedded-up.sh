# shellcheck shell=bash
# Sourced by the scripts that measure the embedded system: `mercato up` on ports of its own
# (the hundreds of PORT_BASE: gateway PORT_BASE+080, services PORT_BASE+101…, the payment
# sandbox PORT_BASE+190) and a data directory under DIR, so it runs beside anything else on the
# machine; then the admin the load generator logs in as.
#
#   embedded_up BIN DIR PORT_BASE    sets `up` (the process id) and `gateway` (its URL)

embedded_up() {
  local bin=$1 dir=$2 base=$3 entry ready=0
  {
    for entry in gateway:080 identity:101 customers:102 inventory:103 orders:104 \
      payments:105 notifications:106 payment-sandbox:190; do
      printf '[services.%s]\nlisten = "127.0.0.1:%s"\n' "${entry%%:*}" "$base${entry##*:}"
    done
    printf '[log]\nformat = "json"\n'
  } >"$dir/mercato.toml"
  export MERCATO_CONFIG="$dir/mercato.toml"
  gateway="http://127.0.0.1:${base}080"
  "$bin" --data-dir "$dir/data" up >"$dir/up.log" 2>&1 &
  up=$!
  for _ in $(seq 1 100); do
    if curl -sf "$gateway/ready" >/dev/null; then ready=1; break; fi
    sleep 0.3
  done
  if [ $ready = 0 ]; then
    echo "mercato up did not become ready; its log:" >&2
    cat "$dir/up.log" >&2
    kill "$up"
    return 1
  fi
  "$bin" --data-dir "$dir/data" admin create --email admin@example.com >/dev/null
}
