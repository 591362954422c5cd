# shellcheck shell=bash
# The node half of hack/control-plane (sourced by it; not run on its own):
# containerd, the kubelet, kube-proxy and kube-scheduler beside the control
# plane, so pods really run on this machine. `up --node` starts it and `down`
# removes every trace: processes, pod sandboxes and their network namespaces,
# mounts, the bridge, iptables chains, cgroups and the sysctls the kubelet and
# kube-proxy change.
#
# A node uses machine-wide names (the bridge, the pod CIDR, iptables chains),
# so one runs at a time per machine; /run/sigil-node names the directory that
# owns it.

node_name=sigil-node
node_bridge=sigil0
node_bridge_mac=02:53:49:47:00:01 # locally administered, unicast
node_pod_cidr=10.244.0.0/24
node_ip=10.244.0.1 # the bridge's address: pods' gateway, the node's InternalIP, the apiserver's address
node_owner=/run/sigil-node
# NodePorts the demo and tests use; kind-config.yaml maps the same ones.
# The sysctls the kubelet (overcommit, panic), kube-proxy and we (forwarding,
# bridged traffic through iptables) change; `down` puts them back.
node_sysctls=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
	net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet)
# The kubelet's sync loop: how often it refreshes mounted ConfigMaps and
# Secrets. Kubernetes' default, so the rotation tests see real propagation
# delays; SIGIL_NODE_SYNC_FREQUENCY lowers it for quick experiments only.
node_sync_frequency=${SIGIL_NODE_SYNC_FREQUENCY:-1m}
# Image archives imported into containerd at start (the pause image first)
# and the pause image's name; set by `up`.
node_images=()
pause_image=""

node_packages=(containerd runc containernetworking-plugins iptables conntrack socat podman)

# node_require: the node's commands, installed from Debian's packages when
# missing (root is required anyway).
node_require() {
	((EUID == 0)) || die "--node needs root (containerd, network namespaces, iptables)"
	local missing=0 cmd
	for cmd in containerd runc iptables iptables-save iptables-restore conntrack socat ip podman; do
		command -v "$cmd" >/dev/null || missing=1
	done
	[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing=1
	if ((missing)); then
		command -v apt-get >/dev/null || die "--node needs: ${node_packages[*]} (Debian package names)"
		log "installing ${node_packages[*]}"
		if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${node_packages[@]}"; } >&2; then
			die "could not install ${node_packages[*]}"
		fi
	fi
	[[ -d /proc/sys/net/bridge ]] || die "the br_netfilter kernel module is not loaded (modprobe br_netfilter)"
}

# node_claim DIR: makes DIR the owner of this machine's node, tearing down a
# previous owner whose processes are all gone.
node_claim() {
	local dir=$1 other name pid
	if [[ -f $node_owner ]]; then
		other=$(<"$node_owner")
		if [[ $other != "$dir" && -f $other/pids ]]; then
			while read -r name pid; do
				ours "$other" "$pid" && die "a node already runs for ${other} (${name}, pid ${pid}); run: $0 down ${other}"
			done <"$other/pids"
		fi
		if [[ -d $other ]]; then
			log "cleaning up the node a stopped run left in ${other}"
			node_cleanup "$other"
		fi
	fi
	echo "$dir" >"$node_owner"
}

# node_pki DIR/pki: the node's certificates, beside the control plane's.
node_pki() {
	local client
	client=$(printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth")
	(
		cd "$1"
		umask 077
		issue kubelet "/O=system:nodes/CN=system:node:${node_name}" "$client"
		issue kubelet-serving "/CN=${node_name}" "$(printf '%s\n' \
			"basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
			"subjectAltName=IP:${node_ip},DNS:${node_name}")"
		# The apiserver's identity towards the kubelet (logs, exec, port-forward).
		issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
		issue scheduler "/CN=system:kube-scheduler" "$client"
		issue kube-proxy "/CN=system:kube-proxy" "$client"
		rm -f ca.srl
	) || die "generating the node's certificates failed"
}

# node_network DIR: the bridge pods attach to, forwarding on, sysctls saved.
node_network() {
	local dir=$1 name
	mkdir -p "$dir/node"
	# The values before we touched anything; kept across repeated `up`s of one
	# directory so `down` restores the machine's, not our own.
	if [[ ! -f $dir/node/sysctls ]]; then
		for name in "${node_sysctls[@]}"; do
			[[ -e /proc/sys/${name//.//} ]] && echo "${name} $(sysctl -n "$name")"
		done >"$dir/node/sysctls.tmp"
		mv "$dir/node/sysctls.tmp" "$dir/node/sysctls"
	fi
	[[ -f $dir/node/netns-before ]] || ls /run/netns 2>/dev/null >"$dir/node/netns-before" || :
	if ! ip link show "$node_bridge" >/dev/null 2>&1; then
		ip link add "$node_bridge" type bridge || die "cannot create bridge ${node_bridge}"
	fi
	# A fixed MAC: a bridge without one takes the lowest MAC of its ports, so
	# a new pod's veth could change it, and the pods' cached gateway address
	# would then point nowhere until their ARP entries aged out (seen as
	# failed connections to node ports while another pod started).
	ip link set "$node_bridge" address "$node_bridge_mac"
	ip addr replace "${node_ip}/${node_pod_cidr#*/}" dev "$node_bridge"
	ip link set "$node_bridge" up
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

node_write_configs() {
	local dir=$1 kubelet_port=$2 kubelet_healthz=$3 proxy_healthz=$4 proxy_metrics=$5 node=$1/node
	mkdir -p "$node/containerd" "$node/cni/net.d" "$node/kubelet" "$node/kube-proxy"

	# containerd: everything (root, state, sockets, runc's state) under DIR.
	cat >"$node/containerd/config.toml" <<EOF
version = 2
root = "${node}/containerd/root"
state = "${node}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${node}/containerd/containerd.sock"
[ttrpc]
  address = "${node}/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "${node}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Built here (hack/build-images.sh pause); nothing can be pulled.
  sandbox_image = "${pause_image}"
  # Without CAP_SYS_RESOURCE a container's oom_score_adj may not be lowered;
  # unrestricted, every sandbox fails to start.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "${node}/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${node}/cni/net.d"
EOF

	# One bridge, addresses from the pod CIDR. No masquerading: pods talk to
	# the node and each other only (this machine has no other network).
	cat >"$node/cni/net.d/10-sigil.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sigil",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${node_bridge}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${node_pod_cidr}", "gateway": "${node_ip}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "${node}/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

	write_kubeconfig "$node/kubelet/kubeconfig" "$server" "$dir/pki" kubelet
	cat >"$node/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine is cgroup v1 (with a hybrid unified mount).
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${node}/containerd/containerd.sock
address: ${node_ip}
port: ${kubelet_port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${kubelet_healthz}
tlsCertFile: ${dir}/pki/kubelet-serving.crt
tlsPrivateKeyFile: ${dir}/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${dir}/pki/ca.crt}
authorization:
  mode: Webhook
syncFrequency: ${node_sync_frequency}
podCIDR: ${node_pod_cidr}
failSwapOn: false
serializeImagePulls: false
# A shared test machine: never evict Sigil's pods for a nearly full disk,
# never garbage-collect the images we imported (nothing can be pulled again).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
podLogsDir: ${node}/kubelet/pod-logs
EOF

	write_kubeconfig "$node/kube-proxy/kubeconfig" "$server" "$dir/pki" kube-proxy
	cat >"$node/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${node}/kube-proxy/kubeconfig
hostnameOverride: ${node_name}
mode: iptables
clusterCIDR: ${node_pod_cidr}
healthzBindAddress: 127.0.0.1:${proxy_healthz}
metricsBindAddress: 127.0.0.1:${proxy_metrics}
# NodePorts on the node's bridge address only, never on the machine's
# interfaces; no route_localnet for 127.0.0.1 NodePorts.
nodePortAddresses: ["${node_ip}/32"]
iptables:
  # Pod -> Service -> pod on one bridge needs SNAT for the reply to return
  # through the host; masquerading all Service traffic makes that hold.
  masqueradeAll: true
  localhostNodePorts: false
  minSyncPeriod: 0s
conntrack:
  # Leave the machine's conntrack table size alone.
  maxPerCore: 0
EOF
}

# node_start DIR BIN DEADLINE: containerd, the kubelet, kube-proxy and the
# scheduler; waits until the node is Ready and kube-proxy has synced.
node_start() {
	local dir=$1 bin=$2 deadline=$3 node=$1/node
	local kubelet_port kubelet_healthz proxy_healthz proxy_metrics scheduler_port
	free_port kubelet_port
	free_port kubelet_healthz
	free_port proxy_healthz
	free_port proxy_metrics
	free_port scheduler_port
	node_write_configs "$dir" "$kubelet_port" "$kubelet_healthz" "$proxy_healthz" "$proxy_metrics"

	write_kubeconfig "$dir/scheduler.kubeconfig" "$server" "$dir/pki" scheduler
	spawn "$dir" kube-scheduler "$bin/kube-scheduler" \
		--kubeconfig="$dir/scheduler.kubeconfig" \
		--authentication-kubeconfig="$dir/scheduler.kubeconfig" \
		--authorization-kubeconfig="$dir/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --secure-port="$scheduler_port" \
		--leader-elect=false --profiling=false

	spawn "$dir" containerd containerd --config "$node/containerd/config.toml"
	wait_for "$dir" containerd "$deadline" containerd_up "$node/containerd/containerd.sock" || return 1
	local image
	for image in "${node_images[@]}"; do
		ctr --address "$node/containerd/containerd.sock" -n k8s.io images import "$image" >/dev/null ||
			fail_component "$dir" containerd "could not import ${image}" || return 1
	done

	spawn "$dir" kubelet "$bin/kubelet" \
		--config="$node/kubelet/config.yaml" \
		--kubeconfig="$node/kubelet/kubeconfig" \
		--root-dir="$node/kubelet/root" \
		--cert-dir="$node/kubelet/pki" \
		--hostname-override="$node_name" \
		--node-ip="$node_ip" \
		--v=1
	spawn "$dir" kube-proxy "$bin/kube-proxy" --config="$node/kube-proxy/config.yaml"

	local admin=(--cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key")
	wait_for "$dir" kubelet "$deadline" probe "http://127.0.0.1:${kubelet_healthz}/healthz" || return 1
	wait_for "$dir" kubelet "$deadline" node_ready "$server" "${admin[@]}" || return 1
	wait_for "$dir" kube-proxy "$deadline" probe "http://127.0.0.1:${proxy_healthz}/healthz" || return 1
	wait_for "$dir" kube-scheduler "$deadline" probe "https://127.0.0.1:${scheduler_port}/healthz" -k || return 1
}

containerd_up() {
	ctr --address "$1" version >/dev/null 2>&1
}

# node_ready SERVER CURL_ARGS...: the node reports Ready=True.
node_ready() {
	local server=$1
	shift
	curl -fsS --max-time 2 "$@" "${server}/api/v1/nodes/${node_name}" 2>/dev/null |
		jq -e '.status.conditions[]? | select(.type == "Ready" and .status == "True")' >/dev/null
}

# node_remove_pods DIR: stops and removes every pod sandbox while containerd
# still runs, so the CNI plugin releases addresses and network namespaces and
# containerd unmounts what it mounted. Called by `stop` before containerd.
node_remove_pods() {
	local dir=$1 crictl
	crictl=$(cat "$dir/node/crictl" 2>/dev/null) || return 0
	[[ -x $crictl ]] || return 0
	local cri=(--runtime-endpoint "unix://$dir/node/containerd/containerd.sock" --timeout 20s)
	"$crictl" "${cri[@]}" rmp -fa >/dev/null 2>&1 || log "warning: crictl could not remove every pod"
}

# node_iptables_clean: removes the chains the kubelet, kube-proxy and the CNI
# plugins create (KUBE-*, CNI-*) and every rule that jumps to them, table by
# table, leaving all other rules as they were.
node_iptables_clean() {
	local family table dump
	for family in iptables ip6tables; do
		command -v "${family}-save" >/dev/null || continue
		for table in filter nat mangle raw; do
			dump=$("${family}-save" -t "$table" 2>/dev/null) || continue
			grep -qE '(KUBE|CNI)-' <<<"$dump" || continue
			grep -vE '(^:|-[AIj] |--jump |--goto )(KUBE|CNI)-' <<<"$dump" |
				grep -vE -- '-j (KUBE|CNI)-' | "${family}-restore" -T "$table" ||
				log "warning: could not clean ${family} table ${table}"
		done
	done
}

# node_cleanup DIR: everything the node left on the machine, after its
# processes have stopped. Safe to run twice.
node_cleanup() {
	local dir=$1 name value ns target
	# Container processes whose shim died with containerd.
	local ctrl pid
	for ctrl in /sys/fs/cgroup/*/kubepods; do
		[[ -d $ctrl ]] || continue
		while read -r pid; do
			kill -KILL "$pid" 2>/dev/null || :
		done < <(find "$ctrl" -name cgroup.procs -exec cat {} + 2>/dev/null)
	done
	# Shims of ours (their command line names our containerd socket).
	for pid in $(pgrep -f "containerd-shim.*${dir}/" || :); do
		kill -KILL "$pid" 2>/dev/null || :
	done
	# Network namespaces created while the node ran.
	if [[ -f $dir/node/netns-before ]]; then
		for ns in /run/netns/cni-*; do
			[[ -e $ns ]] || continue
			grep -qx "$(basename "$ns")" "$dir/node/netns-before" && continue
			umount "$ns" 2>/dev/null || :
			rm -f "$ns"
		done
	fi
	# Mounts under DIR (volumes, overlay roots, shm), innermost first.
	while read -r target; do
		umount -l "$target" 2>/dev/null || :
	done < <(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	# Unpacked images and pod volumes are large and worthless once stopped;
	# configuration and logs stay for a post-mortem.
	rm -rf --one-file-system "$dir/node/containerd/root" "$dir/node/containerd/state" "$dir/node/kubelet/root" || :
	ip link del "$node_bridge" 2>/dev/null || :
	# Shims put their sockets under containerd's fixed /run/containerd/s;
	# the directories go if nothing else uses them.
	rmdir /run/containerd/s /run/containerd 2>/dev/null || :
	# The kubelet's links to container logs (a fixed directory).
	local link
	for link in /var/log/containers/*.log; do
		[[ -L $link && $(readlink "$link") == "$dir/"* ]] && rm -f "$link"
	done
	node_iptables_clean
	# The kubelet's cgroups, deepest first.
	for ctrl in /sys/fs/cgroup/*/kubepods; do
		[[ -d $ctrl ]] && find "$ctrl" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	if [[ -f $dir/node/sysctls ]]; then
		while read -r name value; do
			sysctl -qw "${name}=${value}" || log "warning: could not restore ${name}=${value}"
		done <"$dir/node/sysctls"
		rm -f "$dir/node/sysctls" "$dir/node/netns-before"
	fi
	[[ ! -f $node_owner || $(<"$node_owner") != "$dir" ]] || rm -f "$node_owner"
	return 0
}
