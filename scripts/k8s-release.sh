#!/usr/bin/env bash
# Releases an image to a cluster with the manifests under deploy/k8s (what the pipeline runs).
#
#   scripts/k8s-release.sh rollout    OVERLAY IMAGE   # e.g. dev ghcr.io/acme/mercato:1a2b3c
#   scripts/k8s-release.sh blue-green OVERLAY IMAGE   # e.g. prod …, needs `mercato` and an admin
#
# Both first apply the objects labelled mercato.dev/phase=setup (namespace, configuration,
# network policies, the migration and JetStream jobs) and wait for the jobs: migrations run
# before any pod of the new version. `rollout` then applies everything and waits for every
# Deployment (`kubectl rollout status`). `blue-green` (the overlay has a green Deployment per
# upstream) updates the green Deployments, switches every gateway pod to green with `mercato
# deploy switch` (readiness and smoke checks, then a watch that switches back on its own when
# errors rise), then brings blue to the same version and switches back, so that blue is live at
# the end as the configuration says (gateway pods started later agree). A failed switch moves
# every upstream already switched back to blue, where the previous version still runs, and fails.
#
# Environment: MERCATO (the mercato binary, default: on PATH), MERCATO_ADMIN_EMAIL and
# MERCATO_ADMIN_PASSWORD (or MERCATO_ADMIN_TOKEN), WATCH_SECS (per switch, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# = 3 ] || { sed -n '2,4p' "$0" >&2; exit 2; }
mode=$1 overlay=$2 image=$3
[ -d "deploy/k8s/overlays/$overlay" ] || { echo "release: no overlay $overlay" >&2; exit 2; }
[[ "$image" == *:* ]] || { echo "release: IMAGE must be NAME:TAG" >&2; exit 2; }
mercato=${MERCATO:-mercato}
watch=${WATCH_SECS:-60}
log() { echo "release: $*"; }

work=$(mktemp -d)
release_dir=deploy/k8s/release-$$
forwards=()
cleanup() {
  for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work" "$release_dir"
}
trap cleanup EXIT

# The overlay with the image set, rendered once: every step applies parts of the same objects.
mkdir "$release_dir"
cat >"$release_dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../overlays/$overlay
images:
- name: mercato
  newName: ${image%:*}
  newTag: ${image##*:}
EOF
rendered=$work/rendered.yaml
kubectl kustomize "$release_dir" >"$rendered"
ns=$(awk '/^kind: Namespace/ { found = 1 } found && /^  name:/ { print $2; exit }' "$rendered")
[ -n "$ns" ] || { echo "release: the rendering has no Namespace" >&2; exit 1; }
deployments() { # the Deployment names in the rendering
  awk '/^kind: / { kind = $2 } /^---/ { kind = "" } kind == "Deployment" && /^  name:/ { print $2 }' "$rendered"
}

log "setup in namespace $ns: configuration, policies, migrations, streams"
kubectl -n "$ns" delete job -l mercato.dev/phase=setup --ignore-not-found --wait=true
kubectl apply -f "$rendered" -l mercato.dev/phase=setup
kubectl -n "$ns" wait --for=condition=complete job -l mercato.dev/phase=setup --timeout=11m

rollout() { # deployment names...
  for d in "$@"; do kubectl -n "$ns" rollout status "deployment/$d" --timeout=10m; done
}

if [ "$mode" = rollout ]; then
  kubectl apply -f "$rendered"
  mapfile -t all < <(deployments)
  rollout "${all[@]}"
  log "$image is rolled out to $ns"
  exit 0
fi
[ "$mode" = blue-green ] || { echo "release: unknown mode $mode" >&2; exit 2; }

mapfile -t greens < <(deployments | grep -- '-green$')
[ "${#greens[@]}" -gt 0 ] || { echo "release: overlay $overlay has no green Deployments" >&2; exit 1; }
upstreams=("${greens[@]%-green}")
mapfile -t others < <(deployments | grep -v -- '-green$' | grep -vxF -f <(printf '%s\n' "${upstreams[@]}"))

if ! kubectl -n "$ns" get deployment gateway >/dev/null 2>&1; then
  log "first release to $ns: nothing is live yet, every Deployment starts at $image"
  kubectl apply -f "$rendered"
  rollout "${upstreams[@]}" "${greens[@]}" "${others[@]}"
  exit 0
fi

# Everything but the live (blue) upstream Deployments: shared objects, green, and the services
# that are not switched (the gateway itself, the payment sandbox), which roll as usual.
kubectl apply -f "$rendered" -l 'mercato.dev/track!=blue'
others_selector="app.kubernetes.io/name in ($(IFS=,; echo "${others[*]}")),mercato.dev/track=blue"
kubectl apply -f "$rendered" -l "$others_selector"
rollout "${others[@]}" "${greens[@]}"

gateway_pods() {
  kubectl -n "$ns" get pods -l app.kubernetes.io/name=gateway,mercato.dev/track=blue \
    --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}
forward_url=""
forward() { # pod: sets forward_url to a local URL that reaches it
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  kubectl -n "$ns" port-forward "pod/$1" "$port:8080" >/dev/null 2>&1 &
  forwards+=($!)
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      forward_url="http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "release: cannot port-forward to $1" >&2
  return 1
}

switched=()
switch_all() { # group: every upstream on every gateway pod; on failure, back to blue and fail
  local to=$1 pod url pair
  mapfile -t pods < <(gateway_pods)
  [ "${#pods[@]}" -gt 0 ] || { echo "release: no running gateway pod" >&2; return 1; }
  for pod in "${pods[@]}"; do
    forward "$pod"
    url=$forward_url
    for upstream in "${upstreams[@]}"; do
      log "$pod: switching $upstream to $to"
      if ! "$mercato" deploy switch --to "$to" --upstream "$upstream" --gateway "$url" --watch-secs "$watch"; then
        log "$pod: $upstream failed on $to and is back where it was"
        if [ "$to" = green ]; then
          for pair in "${switched[@]}"; do
            forward "${pair%% *}"
            "$mercato" deploy switch --to blue --upstream "${pair#* }" --gateway "$forward_url" \
              --watch-secs 0 || true
          done
        fi
        return 1
      fi
      switched+=("$pod $upstream")
    done
  done
}

switch_all green || { log "release of $image failed; blue (the previous version) is live"; exit 1; }
log "green is live with $image; bringing blue to the same version"
kubectl apply -f "$rendered" -l mercato.dev/track=blue
rollout "${upstreams[@]}"
switched=()
switch_all blue || { log "blue failed its checks at $image; green stays live with it"; exit 1; }
log "$image is live in $ns (blue), green runs the same version"
