# shellcheck shell=bash
# A real node for the test cluster, sourced by e2e/bin/cluster: containerd and runc run the pods the
# real kubelet is given, on a private bridge wired by the CNI plugins, with CoreDNS answering the
# cluster's names. Every binary is built by e2e/bin/build-tools from the pinned modules; the images
# are built by scripts/build-oci-images and imported (no registry is reachable, none is needed).
#
# What this VM needs, and why (the table in e2e/README.md, "The real node", says the same):
# - cgroup v1 hierarchies: kubelet 1.36 refuses them unless `failCgroupV1: false`; `cgroupfs` driver
#   (no systemd here) under a cgroup root of the node's own, made in every hierarchy first.
# - no CAP_SYS_RESOURCE: the sandbox may not lower its own oom_score_adj, so containerd runs with
#   `restrict_oom_score_adj = true` and the kubelet with `oomScoreAdj: 0`.
# - no registry: the sandbox image is our own pause (e2e/images/pause), pinned in containerd, and
#   pods use `imagePullPolicy: Never` on imported images.
# - kwok must leave this node alone: its controller runs with `--manage-all-nodes=false` and an
#   annotation selector that only the fake nodes carry (e2e/bin/cluster's kwokctl config).
# - nothing leaves the machine: no masquerade, no forwarding (pods route only the Service range to the
#   host, where kube-proxy rewrites it to the API server on the bridge); the kubelet
#   listens on the bridge address, its healthz on loopback, CoreDNS on the bridge address only.
# - the node is tainted `rlswarm.dev/real-node=true:NoSchedule`, so only pods that ask for it (and
#   tolerate it) run as containers; everything else stays on the kwok nodes.
# - ClusterIP Services (the `kubernetes` one for a pod that talks to the API, as the operator does):
#   kube-proxy (iptables mode) on the host, a route to the Service range via the host in every pod, and
#   the API server advertised at the bridge address, where socat forwards to its loopback listener
#   (it binds 127.0.0.1 only; kwokctl's config sets the advertised address, e2e/bin/cluster).

REAL_NODE_TAINT_KEY=rlswarm.dev/real-node
# Test-network range (RFC 2544), visibly apart from real private networks; one /24 per cluster name,
# so two test clusters never share a bridge, a subnet or a DNS address.
real_node_octet() { echo $(( $(cksum <<<"$NAME" | cut -d' ' -f1) % 250 + 1 )); }

real_node_vars() {
  REAL_DIR="$STATE_DIR/real-node"
  REAL_NODE_NAME="$NAME-real-0"
  local octet; octet=$(real_node_octet)
  REAL_SUBNET="198.18.$octet.0/24"
  REAL_HOST_IP="198.18.$octet.1"
  REAL_BRIDGE="rlso$(cksum <<<"$NAME" | cut -d' ' -f1 | cut -c1-8)"
  REAL_CGROUP_ROOT="/rlso-$NAME"
  CONTAINERD_SOCK="$REAL_DIR/containerd/containerd.sock"
  # kwokctl's Service range (the `kubernetes` Service is 10.0.0.1).
  SERVICE_CIDR=10.0.0.0/24
}

# A TCP port nobody listens on now (the kernel's pick).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

real_pid_alive() { local f="$REAL_DIR/pids/$1.pid"; [[ -f "$f" ]] && kill -0 "$(<"$f")" 2>/dev/null; }

# start_daemon NAME COMMAND...: in the background, its own session, log in logs/NAME.log.
start_daemon() {
  local name=$1; shift
  mkdir -p "$REAL_DIR/pids" "$REAL_DIR/logs"
  setsid "$@" >>"$REAL_DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$REAL_DIR/pids/$name.pid"
}

stop_daemon() { # stop_daemon NAME: SIGTERM, then SIGKILL after 10 s
  local f="$REAL_DIR/pids/$1.pid" pid deadline
  [[ -f "$f" ]] || return 0
  pid=$(<"$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

real_node_network_up() {
  if ! ip link show "$REAL_BRIDGE" >/dev/null 2>&1; then
    ip link add "$REAL_BRIDGE" type bridge
  fi
  ip addr replace "$REAL_HOST_IP/24" dev "$REAL_BRIDGE"
  ip link set "$REAL_BRIDGE" up
  [[ "$(cat /proc/sys/net/ipv4/ip_forward)" == 0 ]] \
    || log "warning: ip_forward is on in this machine; the bridge still has no gateway and no masquerade"
  mkdir -p "$REAL_DIR/cni/net.d" "$REAL_DIR/cni/ipam"
  cat > "$REAL_DIR/cni/net.d/10-rlso.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "rlso",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$REAL_BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$REAL_SUBNET", "rangeStart": "${REAL_HOST_IP%.1}.10", "rangeEnd": "${REAL_HOST_IP%.1}.250"}]],
        "routes": [{"dst": "$SERVICE_CIDR", "gw": "$REAL_HOST_IP"}],
        "dataDir": "$REAL_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

real_node_cgroups_up() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ "$h" == */unified/ ]] && continue
    mkdir -p "$h${REAL_CGROUP_ROOT#/}"
  done
}

real_node_cgroups_down() {
  # Leaf-first, so every child the kubelet made (kubepods, burstable, pod<uid>, ...) goes before its
  # parent; a cgroup with a process left in it stays and is reported.
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h${REAL_CGROUP_ROOT#/}" ]] || continue
    find "$h${REAL_CGROUP_ROOT#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ ! -d "$h${REAL_CGROUP_ROOT#/}" ]] || log "warning: $h${REAL_CGROUP_ROOT#/} still has processes"
  done
}

real_node_containerd_up() {
  local d="$REAL_DIR/containerd"
  mkdir -p "$d"
  cat > "$d/config.toml" <<EOF
version = 3
root = "$d/root"
state = "$d/state"
# NRI would put its socket in /var/run/nri; the test bed does not use it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  # The VM gives no CAP_SYS_RESOURCE: a sandbox may not lower its oom_score_adj below ours.
  restrict_oom_score_adj = true
  # Pod network namespaces under the node's folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$(bin runc runc)"
      Root = "$d/runc"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$(tool_bin_dir cni-plugins)"]
    conf_dir = "$REAL_DIR/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  # Exec, attach and port-forward streams: loopback only.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.internal.v1.opt']
  path = "$d/opt"
EOF
  # The shim is found on PATH, next to containerd.
  PATH="$(tool_bin_dir containerd):$PATH" start_daemon containerd \
    "$(bin containerd containerd)" --config "$d/config.toml"
  wait_for 30 "containerd" "$(bin containerd ctr)" --address "$CONTAINERD_SOCK" version
}

ctr_k8s() { "$(bin containerd ctr)" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

real_node_images_up() {
  local kind name archive n=0
  while read -r kind name archive; do
    [[ "$kind" == image ]] || continue
    ctr_k8s images import "$archive" >/dev/null 2>>"$REAL_DIR/logs/ctr.log" \
      || die "could not import $archive into containerd"
    ctr_k8s images check "name==$name" 2>>"$REAL_DIR/logs/ctr.log" | grep -q complete \
      || die "$name is not in containerd after importing $archive"
    n=$((n + 1))
  done < "$IMAGES_LIST"
  (( n > 0 )) || die "no images listed in $IMAGES_LIST"
  log "imported $n images"
}

real_node_kubelet_up() {
  local d="$REAL_DIR/kubelet" port healthz
  port=$(free_port); healthz=$(free_port)
  mkdir -p "$d/root" "$d/pod-logs" "$d/volume-plugins" "$d/pki"
  cat > "$d/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 is what this VM has; kubelet 1.36 needs this to accept it.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $REAL_CGROUP_ROOT
# The sandbox may not lower oom scores (no CAP_SYS_RESOURCE).
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $REAL_HOST_IP
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz
# Test bed only: anyone who reaches the bridge address may read logs; nothing else is on it.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDNS: [$REAL_HOST_IP]
clusterDomain: cluster.local
# Pods resolve through CoreDNS only: the host's resolver is not theirs.
resolvConf: ""
podLogsDir: $d/pod-logs
volumePluginDir: $d/volume-plugins
failSwapOn: false
# The machine's disk is shared with builds: evict only when it is really full, never collect images
# (they cannot be pulled again).
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
  start_daemon kubelet "$(bin kubernetes kubelet)" \
    --config "$d/config.yaml" \
    --kubeconfig "$KUBECONFIG_PATH" \
    --root-dir "$d/root" \
    --cert-dir "$d/pki" \
    --hostname-override "$REAL_NODE_NAME" \
    --node-ip "$REAL_HOST_IP" \
    --node-labels "rlswarm.dev/real-node=true" \
    --register-with-taints "$REAL_NODE_TAINT_KEY=true:NoSchedule"
  wait_for 60 "the kubelet's healthz" curl -fsS "http://127.0.0.1:$healthz/healthz"
  wait_for 60 "the real node to be Ready" \
    kubectl wait --for=condition=Ready "node/$REAL_NODE_NAME" --timeout=1s
}

real_node_dns_up() {
  local d="$REAL_DIR/coredns"
  mkdir -p "$d"
  # Only the cluster's zone: the pods have no upstream, nothing outside is resolved.
  cat > "$d/Corefile" <<EOF
cluster.local:53 {
    bind $REAL_HOST_IP
    errors
    kubernetes cluster.local {
        kubeconfig $KUBECONFIG_PATH
    }
}
EOF
  start_daemon coredns "$(bin coredns coredns)" -conf "$d/Corefile"
  wait_for 30 "CoreDNS on $REAL_HOST_IP:53" dns_listening
}

dns_listening() { ss -Hlun "src $REAL_HOST_IP:53" | grep -q .; }

# The API server's port, from the kubeconfig kwokctl wrote.
api_port() { sed -n 's|^ *server: https://127.0.0.1:\([0-9]*\).*|\1|p' "$KUBECONFIG_PATH" | head -1; }

real_node_services_up() {
  local port d="$REAL_DIR/kube-proxy"
  port=$(api_port)
  [[ -n "$port" ]] || die "no API server port in $KUBECONFIG_PATH"
  start_daemon apiserver-forward socat "TCP-LISTEN:$port,bind=$REAL_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$port"
  mkdir -p "$d"
  cat > "$d/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $KUBECONFIG_PATH
hostnameOverride: $REAL_NODE_NAME
mode: iptables
clusterCIDR: $REAL_SUBNET
detectLocalMode: ClusterCIDR
# NodePorts only on the bridge; nothing on the machine's own interfaces.
nodePortAddresses: [$REAL_HOST_IP/32]
healthzBindAddress: 127.0.0.1:$(free_port)
metricsBindAddress: 127.0.0.1:$(free_port)
# Leave the machine's conntrack table size alone (the VM may not allow changing it).
conntrack:
  maxPerCore: 0
EOF
  start_daemon kube-proxy "$(bin kubernetes kube-proxy)" --config "$d/config.yaml"
  wait_for 30 "kube-proxy's rules for the kubernetes Service" kube_proxy_synced
}

kube_proxy_synced() { iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes'; }

real_node_up() {
  real_node_vars
  [[ -r "$IMAGES_LIST" ]] || die "no image list at $IMAGES_LIST (scripts/build-oci-images writes it)"
  "$E2E_DIR/../scripts/install-debian-packages" socat conntrack iptables
  PAUSE_IMAGE=$(awk '$1 == "image" && $2 ~ /\/pause:/ { print $2; exit }' "$IMAGES_LIST")
  [[ -n "$PAUSE_IMAGE" ]] || die "no pause image in $IMAGES_LIST"
  local start=$SECONDS
  real_node_network_up
  real_node_cgroups_up
  real_pid_alive containerd || real_node_containerd_up
  real_node_images_up
  real_pid_alive coredns || real_node_dns_up
  real_pid_alive kubelet || real_node_kubelet_up
  # After the kubelet: kube-proxy waits for its Node to exist.
  real_pid_alive kube-proxy || real_node_services_up
  log "real node $REAL_NODE_NAME Ready in $((SECONDS - start))s (bridge $REAL_BRIDGE $REAL_HOST_IP, DNS $REAL_HOST_IP)"
}

# The chains the kubelet adds to the host's tables (IPv4 and IPv6): its canaries and mode hint, and
# KUBE-FIREWALL (which drops traffic to 127/8 from other addresses). The next kubelet makes them again.
kubelet_chains_down() {
  local cmd table chain
  for cmd in iptables ip6tables; do
    while "$cmd" -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    while "$cmd" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null && "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

real_node_down() {
  real_node_vars
  [[ -d "$REAL_DIR" ]] || return 0
  stop_daemon kubelet
  # The kubelet is gone: stop every pod's sandbox and container through the CRI, so their shims,
  # network namespaces and mounts go with them, before containerd stops.
  if real_pid_alive containerd; then
    local id
    for id in $(ctr_k8s tasks list -q 2>/dev/null); do
      ctr_k8s tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr_k8s tasks list -q 2>/dev/null); do ctr_k8s tasks delete --force "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_k8s containers list -q 2>/dev/null); do ctr_k8s containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop_daemon coredns
  stop_daemon kube-proxy
  # Its rules in the host's nat and filter tables go with it.
  [[ ! -f "$REAL_DIR/kube-proxy/config.yaml" ]] || "$(bin kubernetes kube-proxy)" --cleanup >/dev/null 2>&1 || true
  stop_daemon apiserver-forward
  kubelet_chains_down
  stop_daemon containerd
  # Shims outlive containerd by design; those of this node are known by their socket dir.
  pkill -9 -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  # Mounts the node made (pod volumes, snapshots, network namespaces) under its folder.
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done \
    < <(awk -v d="$REAL_DIR" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
  real_node_cgroups_down
  ip link del "$REAL_BRIDGE" 2>/dev/null || true
}
