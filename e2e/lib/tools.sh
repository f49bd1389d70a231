# shellcheck shell=bash
# Shared by e2e/bin/build-tools, e2e/bin/cluster and e2e/tools/update: pinned versions, modules,
# binary lists and where the built tools live.
# The binaries are kept OUTSIDE the clone, one folder per tool and version:
#   ${RLSO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rl-swarm-operator/tools}/<name>-<version>/bin/

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../versions.env
source "$E2E_DIR/versions.env"

TOOLS_DIR=${RLSO_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rl-swarm-operator/tools}
TOOL_NAMES=(kubernetes etcd kwok helm otelcol containerd runc cni-plugins coredns)

tool_version() {
  case "$1" in
    kubernetes) echo "$KUBE_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    otelcol) echo "$OTELCOL_VERSION" ;;
    containerd) echo "$CONTAINERD_VERSION" ;;
    runc) echo "$RUNC_VERSION" ;;
    cni-plugins) echo "$CNI_PLUGINS_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    *) echo "unknown tool: $1" >&2; return 1 ;;
  esac
}

# The upstream module each tool is pinned by (for otelcol: the one its other modules follow).
tool_module() {
  case "$1" in
    kubernetes) echo k8s.io/kubernetes ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    kwok) echo sigs.k8s.io/kwok ;;
    helm) echo helm.sh/helm/v4 ;;
    otelcol) echo go.opentelemetry.io/collector/otelcol ;;
    containerd) echo github.com/containerd/containerd/v2 ;;
    runc) echo github.com/opencontainers/runc ;;
    cni-plugins) echo github.com/containernetworking/plugins ;;
    coredns) echo github.com/coredns/coredns ;;
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
      kubectl=k8s.io/kubernetes/cmd/kubectl \
      kubelet=k8s.io/kubernetes/cmd/kubelet \
      kube-proxy=k8s.io/kubernetes/cmd/kube-proxy ;;
    etcd) echo etcd=go.etcd.io/etcd/server/v3 ;;
    kwok) printf '%s\n' kwok=sigs.k8s.io/kwok/cmd/kwok kwokctl=sigs.k8s.io/kwok/cmd/kwokctl ;;
    helm) echo helm=helm.sh/helm/v4/cmd/helm ;;
    # Our own main package: the collector components it links are pinned by its go.mod.
    otelcol) echo otelcol=rl-swarm-operator/e2e/tools/otelcol ;;
    # The node's container runtime: the daemon, its runc shim and the CLI.
    containerd) printf '%s\n' \
      containerd=github.com/containerd/containerd/v2/cmd/containerd \
      containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
      ctr=github.com/containerd/containerd/v2/cmd/ctr ;;
    runc) echo runc=github.com/opencontainers/runc ;;
    # The CNI plugins a pod network on a bridge needs; containerd's CNI bin_dir points at their folder.
    cni-plugins) printf '%s\n' \
      bridge=github.com/containernetworking/plugins/plugins/main/bridge \
      host-local=github.com/containernetworking/plugins/plugins/ipam/host-local \
      loopback=github.com/containernetworking/plugins/plugins/main/loopback \
      portmap=github.com/containernetworking/plugins/plugins/meta/portmap ;;
    coredns) echo coredns=github.com/coredns/coredns ;;   # its main package: the default plugin set
    *) echo "unknown tool: $1" >&2; return 1 ;;
  esac
}

tool_bin_dir() { echo "$TOOLS_DIR/$1-$(tool_version "$1")/bin"; }

# PATH entries for every tool, kubernetes first (so its kubectl wins). Not cni-plugins: those are
# called by containerd from its CNI bin_dir, and `bridge` would shadow iproute2's.
tools_path() {
  local n out=""
  for n in "${TOOL_NAMES[@]}"; do
    [[ $n == cni-plugins ]] || out+="$(tool_bin_dir "$n"):"
  done
  echo "${out%:}"
}
