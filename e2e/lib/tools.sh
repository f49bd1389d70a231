# shellcheck shell=bash
# Shared by e2e/bin/build-tools and e2e/bin/cluster: pinned versions and where the built tools live.
# The binaries are kept OUTSIDE the clone, one folder per tool and version:
#   ${RLSO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rl-swarm-operator/tools}/<name>-<version>/bin/

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../versions.env
source "$E2E_DIR/versions.env"

TOOLS_DIR=${RLSO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rl-swarm-operator/tools}
TOOL_NAMES=(kubernetes etcd kwok helm otelcol)

tool_version() {
  case "$1" in
    kubernetes) echo "$KUBE_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    otelcol) echo "$OTELCOL_VERSION" ;;
    *) echo "unknown tool: $1" >&2; return 1 ;;
  esac
}

# Binaries of each tool: "<output name>=<Go package>".
tool_binaries() {
  case "$1" in
    kubernetes) printf '%s\n' \
      kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
      kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
      kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
      kubectl=k8s.io/kubernetes/cmd/kubectl ;;
    etcd) echo etcd=go.etcd.io/etcd/server/v3 ;;
    kwok) printf '%s\n' kwok=sigs.k8s.io/kwok/cmd/kwok kwokctl=sigs.k8s.io/kwok/cmd/kwokctl ;;
    helm) echo helm=helm.sh/helm/v4/cmd/helm ;;
    # Our own main package: the collector components it links are pinned by its go.mod.
    otelcol) echo otelcol=rl-swarm-operator/e2e/tools/otelcol ;;
    *) echo "unknown tool: $1" >&2; return 1 ;;
  esac
}

tool_bin_dir() { echo "$TOOLS_DIR/$1-$(tool_version "$1")/bin"; }

# PATH entries for every tool, kubernetes first (so its kubectl wins).
tools_path() {
  local n out=""
  for n in "${TOOL_NAMES[@]}"; do out+="$(tool_bin_dir "$n"):"; done
  echo "${out%:}"
}
