#!/usr/bin/env bash
# The lab: the appliance end to end on one machine, as `make run` starts it.
#
#   vm-a (eth0 10.0.0.1) -- vm-a --+                  +-- span0 ==veth== cap0  (capture, taasd)
#                                   +-- br0 "switch" --|
#   vm-b (eth0 10.0.0.2) -- vm-b --+                  |  tc mirred: every frame the bridge
#                                   ports vm-a, vm-b -->+  receives on a VM port (a SPAN port)
#
#   taasd (this namespace) -- mon0 ==veth== eth0 in "monitor"  (tcpdump here)
#
#   taasd -- up0 (uplink, 198.51.100.1/29) ==veth== eth0 in "router" (198.51.100.2/29)
#            router eth1 (198.51.100.9/30) ==veth== eth0 in "collector" (198.51.100.10/30, tcpdump/tshark here)
#
# (198.51.100.0/28 when no lab or benchmark holds it, else the next free
# /28 of 198.51.100.0/24.) Everything but cap0, mon0 and up0 lives in namespaces
# the lab creates; traffic never leaves them (the route to the collector
# via the router goes with up0). The lab registers three ports (vm-a, vm-b, the
# monitor), one tap service and one tap flow through the API, starts a ping
# from vm-a to vm-b, prints where to look and the curl that creates a tap
# mirror to the collector, and on Ctrl-C (SIGINT/SIGTERM) stops what it
# started, by pid, and deletes what it created, by name.
#
# Not root: starts taasd API-only (--dataplane none) and says why.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: perf/lab/lab.sh [options]
  --prefix P        prefix for every namespace and link the lab creates (default none:
                    vm-a, vm-b, switch, monitor, router, collector, cap0, mon0, up0);
                    at most 7 characters
  --listen ADDR     taasd's API address (default 127.0.0.1:9696)
  --bin PATH        the taasd binary (default bin/taasd; `make run` builds it)
  --state DIR       where the lab keeps taasd's config, database and log
                    (default var/lab; removed on exit)
  --db PATH         the database of the API-only run when not root (default var/taas.db)
  --dataplane M     xdp (default) or none
  --direction D     the sample tap flow's direction: IN, OUT or BOTH (default BOTH)
  --ping-count N    echo requests vm-a sends, one every 0.5 s (default 7200: an hour)
EOF
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
prefix=""
listen=127.0.0.1:9696
bin=$repo/bin/taasd
state=$repo/var/lab
db=$repo/var/taas.db
dataplane=xdp
direction=BOTH
ping_count=7200

while [ $# -gt 0 ]; do
	case $1 in
	--prefix) prefix=$2; shift 2 ;;
	--listen) listen=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	--state) state=$2; shift 2 ;;
	--db) db=$2; shift 2 ;;
	--dataplane) dataplane=$2; shift 2 ;;
	--direction) direction=$2; shift 2 ;;
	--ping-count) ping_count=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "lab: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done

say() { echo "lab: $*"; }
die() { echo "lab: $*" >&2; exit 1; }

# Interface names are at most 15 bytes: the longest the lab makes is
# "<prefix>switch" and "<prefix>monitor" (namespaces have no such limit, but
# keep prefixes short and alike).
[ ${#prefix} -le 7 ] || die "--prefix $prefix: at most 7 characters"
[[ $prefix =~ ^[A-Za-z0-9_-]*$ ]] || die "--prefix $prefix: letters, digits, - and _ only"
case $direction in IN | OUT | BOTH) ;; *) die "--direction $direction: must be IN, OUT or BOTH" ;; esac
case $dataplane in xdp | none) ;; *) die "--dataplane $dataplane: must be xdp or none" ;; esac
[[ $ping_count =~ ^[1-9][0-9]*$ ]] || die "--ping-count $ping_count: must be a positive integer"
[ -x "$bin" ] || die "$bin not found: run make build (or make run) first"

api=http://$listen
for tool in ip tc curl jq ping sysctl ethtool; do
	command -v "$tool" >/dev/null || die "$tool not found: apt-get install iproute2 curl jq iputils-ping procps ethtool"
done

if [ "$(id -u)" -ne 0 ]; then
	say "not root: the lab needs CAP_NET_ADMIN to create namespaces, veths and tc rules,"
	say "and the data plane needs CAP_BPF and CAP_NET_RAW for XDP and AF_XDP sockets."
	say "starting taasd API-only (--dataplane none) on $api with $db;"
	say "run it as root (sudo make run) for the whole lab. Ctrl-C stops it."
	mkdir -p "$(dirname "$db")"
	exec "$bin" --listen "$listen" --db "$db" --dataplane none
fi

ns_a=${prefix}vm-a
ns_b=${prefix}vm-b
ns_sw=${prefix}switch
ns_mon=${prefix}monitor
ns_rt=${prefix}router
ns_col=${prefix}collector
cap=${prefix}cap0
mon=${prefix}mon0
up=${prefix}up0
# The way to the collector: the first /28 of TEST-NET-2 that no address of
# this namespace is in (another lab's or a benchmark's). Not TEST-NET-1: it
# may be the host's own network, where a route would take a real host's
# address.
base=""
for ((i = 0; i < 256; i += 16)); do
	if [ -z "$(ip -o -4 addr show to "198.51.100.$i/28")" ]; then
		base=$i
		break
	fi
done
[ -n "$base" ] || die "no free /28 in 198.51.100.0/24 for the collector (ip -4 addr show to 198.51.100.0/24)"
up_ip=198.51.100.$((base + 1))
rt_ip=198.51.100.$((base + 2))
rc_ip=198.51.100.$((base + 9))
col_ip=198.51.100.$((base + 10))
mac_a=fa:16:3e:00:00:0a
mac_b=fa:16:3e:00:00:0b
mac_mon=fa:16:3e:00:00:0f

# Refuse to touch anything the lab did not create: a name already taken is a
# lab still running or one that was killed before it could clean up.
for ns in "$ns_a" "$ns_b" "$ns_sw" "$ns_mon" "$ns_rt" "$ns_col"; do
	if [ -e "/run/netns/$ns" ]; then
		die "namespace $ns exists (another lab running? if not: ip netns del $ns)"
	fi
done
for l in "$cap" "$mon" "$up"; do
	if ip link show dev "$l" >/dev/null 2>&1; then
		die "link $l exists (another lab running? if not: ip link del $l)"
	fi
done
[ -e "$state" ] && die "$state exists (another lab running? if not: rm -r $state)"

created_ns=()
created_links=()
taasd_pid=""
ping_pid=""

# shellcheck disable=SC2317 # stop and cleanup run from the EXIT trap.
# stop sends SIGTERM to pid, waits up to 10 s, then SIGKILL.
stop() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317
cleanup() {
	local rc=$? ns l
	trap - INT TERM EXIT
	echo
	say "stopping"
	[ -n "$ping_pid" ] && stop "$ping_pid"
	[ -n "$taasd_pid" ] && stop "$taasd_pid"
	# Deleting a namespace deletes the veth ends in it, and with them their
	# peers here; the explicit link deletes cover a namespace that was not
	# created yet when the lab failed.
	for ns in "${created_ns[@]}"; do
		ip netns del "$ns" 2>/dev/null && say "deleted namespace $ns"
	done
	for l in "${created_links[@]}"; do
		if ip link show dev "$l" >/dev/null 2>&1; then
			ip link del "$l" && say "deleted link $l"
		fi
	done
	rm -rf "$state" && say "removed $state"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nsadd() {
	ip netns add "$1"
	created_ns+=("$1")
	ip -n "$1" link set lo up
	# No IPv6: router and listener solicitations would be mirrored too and
	# clutter the demo's tcpdump.
	ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# noipv6 keeps the root namespace from sending its own IPv6 chatter out of a
# lab link (the monitor would see it).
noipv6() {
	if [ -e "/proc/sys/net/ipv6/conf/$1" ]; then
		sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1"
	fi
}

say "creating namespaces $ns_a $ns_b $ns_sw $ns_mon $ns_rt $ns_col"
for ns in "$ns_sw" "$ns_a" "$ns_b" "$ns_mon" "$ns_rt" "$ns_col"; do nsadd "$ns"; done

ip -n "$ns_sw" link add br0 type bridge
ip -n "$ns_sw" link set br0 up
for vm in a b; do
	ns_vm=${prefix}vm-$vm
	mac=$mac_a
	[ $vm = b ] && mac=$mac_b
	ip -n "$ns_sw" link add name "vm-$vm" type veth peer name eth0 netns "$ns_vm"
	ip -n "$ns_sw" link set "vm-$vm" master br0 up
	ip -n "$ns_vm" link set eth0 address "$mac" up
done
ip -n "$ns_a" addr add 10.0.0.1/24 dev eth0
ip -n "$ns_b" addr add 10.0.0.2/24 dev eth0

say "creating capture link $cap (SPAN copy of the switch) and monitor link $mon"
created_links+=("$cap")
ip link add name "$cap" type veth peer name span0 netns "$ns_sw"
noipv6 "$cap"
ip link set "$cap" promisc on up
ip -n "$ns_sw" link set span0 up
created_links+=("$mon")
ip link add name "$mon" type veth peer name eth0 netns "$ns_mon"
noipv6 "$mon"
ip link set "$mon" up
ip -n "$ns_mon" link set eth0 up
# GRO on the monitor's end lets a veth take frames redirected by XDP
# (afxdp-notes.md gotcha 10): taasd then copies in the kernel (its fast
# path) instead of through AF_XDP; a physical monitor NIC needs nothing.
ip netns exec "$ns_mon" ethtool -K eth0 gro on >/dev/null

say "creating uplink $up to the router ($rt_ip) and the collector ($col_ip) behind it"
created_links+=("$up")
ip link add name "$up" type veth peer name eth0 netns "$ns_rt"
noipv6 "$up"
ip addr add "$up_ip/29" dev "$up"
ip link set "$up" up
ip -n "$ns_rt" addr add "$rt_ip/29" dev eth0
ip -n "$ns_rt" link set eth0 up
# taasd's fast path redirects tunnelled copies into up0: its peer needs GRO
# (gotcha 10), as the monitor's does.
ip netns exec "$ns_rt" ethtool -K eth0 gro on >/dev/null
ip -n "$ns_rt" link add name eth1 type veth peer name eth0 netns "$ns_col"
ip -n "$ns_rt" addr add "$rc_ip/30" dev eth1
ip -n "$ns_rt" link set eth1 up
ip -n "$ns_col" addr add "$col_ip/30" dev eth0
ip -n "$ns_col" link set eth0 up
ip netns exec "$ns_rt" sysctl -qw net.ipv4.ip_forward=1
# The next hop is the router, not the collector (the route goes with up0).
ip route replace "$col_ip/32" via "$rt_ip" dev "$up"
# A kernel VXLAN device in the collector decapsulates a vxlan mirror with
# VNI 5001 (tcpdump -eni vxlan0 shows the mirrored frames as sent).
ip -n "$ns_col" link add vxlan0 type vxlan id 5001 dstport 4789 local "$col_ip"
ip -n "$ns_col" link set vxlan0 up

# The SPAN port: every frame the bridge receives on a VM's port is mirrored
# into span0 once (ingress only, so no frame is copied twice).
for vm in a b; do
	tc -n "$ns_sw" qdisc add dev "vm-$vm" clsact
	tc -n "$ns_sw" filter add dev "vm-$vm" ingress protocol all u32 match u32 0 0 \
		action mirred egress mirror dev span0
done

mkdir -p "$state"
cat >"$state/taasd.toml" <<EOF
# Written by perf/lab/lab.sh; removed when the lab stops.
listen = "$listen"
db = "$state/taas.db"
dataplane = "$dataplane"

[log]
level = "info"

[[interfaces]]
name = "$cap"
role = "capture"
# The SPAN feed carries the whole bridge: frames no flow wants stop in XDP.
unmatched = "drop"

[[interfaces]]
name = "$mon"
role = "monitor"

# Tap mirrors' tunnelled copies leave here, routed to the collector.
[[interfaces]]
name = "$up"
role = "uplink"
EOF

say "starting taasd --config $state/taasd.toml (log: $state/taasd.log)"
"$bin" --config "$state/taasd.toml" >"$state/taasd.log" 2>&1 &
taasd_pid=$!
say "taasd pid $taasd_pid"

for ((i = 0; i < 100; i++)); do
	curl -sf -o /dev/null "$api/v2.0/" && break
	kill -0 "$taasd_pid" 2>/dev/null || { cat "$state/taasd.log" >&2; die "taasd exited"; }
	sleep 0.1
done
curl -sf -o /dev/null "$api/v2.0/" || { cat "$state/taasd.log" >&2; die "taasd's API did not answer on $api"; }

# api METHOD PATH [BODY]: one API call; prints the response, fails with its
# NeutronError body.
apicall() {
	curl -sS --fail-with-body -X "$1" -H 'Content-Type: application/json' \
		${3:+--data "$3"} "$api$2"
}

net_id=$(apicall GET '/v2.0/networks?name=appliance' | jq -er '.networks[0].id')
# Ports are registered as noauth's admin (no X-Project-Id): only admins bind.
port() { # name mac interface
	apicall POST /v2.0/ports "$(jq -nc --arg n "$1" --arg m "$2" --arg i "$3" --arg net "$net_id" \
		'{port: {name: $n, network_id: $net, mac_address: $m, port_security_enabled: false,
		        "binding:profile": {interface: $i}}}')" | jq -er .port.id
}
port_a=$(port vm-a "$mac_a" "$cap")
port_b=$(port vm-b "$mac_b" "$cap")
port_mon=$(port monitor "$mac_mon" "$mon")
say "registered ports vm-a $port_a, vm-b $port_b (on $cap), monitor $port_mon (on $mon)"

service=$(apicall POST /v2.0/taas/tap_services "$(jq -nc --arg p "$port_mon" \
	'{tap_service: {name: "lab-monitor", port_id: $p}}')" | jq -er .tap_service.id)
flow=$(apicall POST /v2.0/taas/tap_flows "$(jq -nc --arg p "$port_a" --arg s "$service" --arg d "$direction" \
	'{tap_flow: {name: ("vm-a-" + $d), source_port: $p, tap_service_id: $s, direction: $d}}')" |
	jq -er .tap_flow.id)
say "created tap service lab-monitor $service and tap flow vm-a-$direction $flow"

status=DOWN
if [ "$dataplane" = xdp ]; then
	for ((i = 0; i < 100; i++)); do
		status=$(apicall GET "/v2.0/taas/tap_flows/$flow" | jq -r .tap_flow.status)
		[ "$status" = ACTIVE ] && break
		sleep 0.1
	done
fi
say "tap flow status: $status"
if [ "$dataplane" = xdp ]; then
	path=$(apicall GET /v2.0/taas/stats | jq -r --arg c "$cap" \
		'.taas_stats.interfaces[] | select(.name == $c and .role == "capture")
		| if (.path_reason // "") != "" then "\(.path) (\(.path_reason))" else .path end')
	say "data path of $cap: $path"
fi
if [ "$status" != ACTIVE ]; then
	say "the flow is not ACTIVE: nothing will reach the monitor; see $state/taasd.log"
	say "and: curl -s $api/v2.0/taas/stats | jq .taas_stats.tap_flows"
fi

ip netns exec "$ns_a" ping -q -i 0.5 -c "$ping_count" 10.0.0.2 >/dev/null 2>&1 &
ping_pid=$!
sleep 0.6
kill -0 "$ping_pid" 2>/dev/null || die "ping from $ns_a to 10.0.0.2 failed"
say "ping $ns_a -> $ns_b (10.0.0.1 -> 10.0.0.2) every 0.5 s, pid $ping_pid"

cat <<EOF

  The appliance is up.
    dashboard:        http://$listen/ui/
    mirrored traffic: ip netns exec $ns_mon tcpdump -eni eth0
    the SPAN feed:    ip netns exec $ns_sw tcpdump -eni span0 icmp
    the API:          curl -s $api/v2.0/taas/tap_flows | jq
    the CLI:          openstack --os-auth-type none --os-endpoint $api tap flow list
    metrics:          curl -s $api/metrics | grep taas_

  A tap mirror of vm-a to the collector ($col_ip, behind the router), by hand:
    curl -s -X POST $api/v2.0/taas/tap_mirrors -d '{"tap_mirror": {"name": "to-collector",
        "port_id": "$port_a", "directions": {"OUT": 5001}, "remote_ip": "$col_ip", "mirror_type": "vxlan"}}'
    the tunnel:       ip netns exec $ns_col tcpdump -ni eth0 udp port 4789 or ip proto 47
    decoded:          ip netns exec $ns_col tshark -i eth0 -f 'udp port 4789 or ip proto 47' -T fields -e vxlan.vni -e gre.key -e erspan.spanid -e eth.src -e eth.dst
    decapsulated:     ip netns exec $ns_col tcpdump -eni vxlan0

  Press Ctrl-C to stop the lab and remove everything it created.
lab: ready
EOF

# Wait for Ctrl-C (the trap runs cleanup) or for taasd to exit on its own.
set +e
wait "$taasd_pid"
rc=$?
taasd_pid=""
set -e
tail -n 20 "$state/taasd.log" >&2
die "taasd exited with status $rc"
