#!/usr/bin/env bash
# Installs taasd on a Debian 12 machine as the appliance runs it: the binary,
# the taasd system user, the systemd unit, a configuration binding the given
# NICs, and capture NICs that come up promiscuous at boot. Then it runs
# `taasd check` with the service's own privileges and starts the service.
#
# The Vagrantfile runs it in the VM; on bare metal run it as root from a
# checkout after `make build`:
#
#   sudo deploy/provision.sh --capture enp3s0 --monitor enp4s0
#
# An existing /etc/taasd/taasd.toml is kept (the new one is written next to
# it as taasd.toml.new), so re-running it upgrades the binary and the unit
# without touching the operator's configuration.
#
# Authentication is on by default (issue 13): --auth token (the default)
# generates an admin token into /etc/taasd/tokens (mode 0640, root:taasd),
# printed once; --auth keystone validates Keystone tokens with the service
# user's password from $TAASD_KEYSTONE_PASSWORD; an open API (--auth noauth)
# only when asked for by name, and taasd then warns at every start.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: deploy/provision.sh --capture IF[,IF...] --monitor IF[,IF...] [options]
  --capture LIST   capture NICs (SPAN/TAP feeds), comma-separated
  --monitor LIST   monitor NICs (where copies go), comma-separated
  --bin PATH       the taasd binary to install (default: bin/taasd of this checkout)
  --source DIR     the checkout, for the unit and the docs (default: this script's ../)
  --listen ADDR    the API address (default 0.0.0.0:9696)
  --auth MODE      token (default: a generated admin token), keystone, or noauth
                   (anyone who reaches the address is admin: a lab only)
  --keystone-url URL      with --auth keystone: Keystone's URL (https://keystone:5000/v3)
  --keystone-user NAME    taasd's service user (default taasd, role service in its project);
                          its password comes from the environment: TAASD_KEYSTONE_PASSWORD
  --keystone-project NAME its project (default service)
  --no-start       install and check, but do not enable or start the service
EOF
}

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=""
listen=0.0.0.0:9696
capture=""
monitor=""
start=yes
auth=token
keystone_url=""
keystone_user=taasd
keystone_project=service
while [ $# -gt 0 ]; do
	case $1 in
	--capture) capture=$2; shift 2 ;;
	--monitor) monitor=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	--source) src=$2; shift 2 ;;
	--listen) listen=$2; shift 2 ;;
	--auth) auth=$2; shift 2 ;;
	--keystone-url) keystone_url=$2; shift 2 ;;
	--keystone-user) keystone_user=$2; shift 2 ;;
	--keystone-project) keystone_project=$2; shift 2 ;;
	--no-start) start=no; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "provision: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done
bin=${bin:-$src/bin/taasd}

say() { echo "provision: $*"; }
die() { echo "provision: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"
[ -n "$capture" ] || die "--capture: at least one capture NIC is needed"
[ -n "$monitor" ] || die "--monitor: at least one monitor NIC is needed"
[ -x "$bin" ] || die "$bin not found: run make build on the host (the VM installs the host's build)"
[ -f "$src/deploy/taasd.service" ] || die "$src/deploy/taasd.service not found: --source must be the checkout"
case $auth in
token | noauth) ;;
keystone)
	[ -n "$keystone_url" ] || die "--auth keystone needs --keystone-url"
	[ -n "${TAASD_KEYSTONE_PASSWORD:-}" ] || die "--auth keystone: set TAASD_KEYSTONE_PASSWORD to the password of $keystone_user"
	case $TAASD_KEYSTONE_PASSWORD in *'"'* | *\\*) die "TAASD_KEYSTONE_PASSWORD: no \" or \\ please (it goes into a TOML string)" ;; esac
	;;
*) die "--auth $auth: want token, keystone or noauth" ;;
esac

IFS=, read -r -a capture_ifs <<<"$capture"
IFS=, read -r -a monitor_ifs <<<"$monitor"

# taasd compiles flow filters with libpcap (the library tcpdump uses): its
# shared library must be there before the binary runs.
if ! ldconfig -p | grep -q 'libpcap\.so\.0\.8 '; then
	command -v apt-get >/dev/null || die "libpcap.so.0.8 is missing: install your distribution's libpcap"
	say "installing libpcap (flow filters)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libpcap0.8 >/dev/null ||
		die "apt-get install libpcap0.8 failed"
fi

say "installing $bin as /usr/local/bin/taasd ($("$bin" --version))"
install -m 0755 "$bin" /usr/local/bin/taasd.new
mv -f /usr/local/bin/taasd.new /usr/local/bin/taasd

if ! getent passwd taasd >/dev/null; then
	say "creating the taasd system user"
	useradd --system --user-group --home-dir /var/lib/taasd --no-create-home \
		--shell /usr/sbin/nologin --comment "taasd mirror appliance" taasd
fi

install -m 0644 "$src/deploy/taasd.service" /etc/systemd/system/taasd.service
install -d -m 0755 /usr/local/share/doc/taasd
install -m 0644 "$src/README.md" "$src/deploy/taasd.toml" /usr/local/share/doc/taasd/
install -d -m 0750 -o root -g taasd /etc/taasd

# The admin token of --auth token: generated once, kept across re-runs,
# readable by root and the service only, shown once at the end.
tokens=/etc/taasd/tokens
new_token=""
if [ "$auth" = token ] && [ ! -e "$tokens" ]; then
	new_token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	(
		umask 077
		{
			echo '# taasd tokens: TOKEN PROJECT_ID ROLE[,ROLE...] per line (README "Configuration (flags)").'
			echo '# systemctl reload taasd rereads this file.'
			echo "$new_token admin admin"
		} >"$tokens.new"
	)
	chown root:taasd "$tokens.new"
	chmod 0640 "$tokens.new"
	mv "$tokens.new" "$tokens"
	say "wrote $tokens (mode 0640, root:taasd) with a generated admin token"
fi

# The configuration: the example's comments, with this machine's NICs.
conf=/etc/taasd/taasd.toml
{
	echo "# Written by deploy/provision.sh; every field is documented in"
	echo "# /usr/local/share/doc/taasd/taasd.toml and the README's Configuration section."
	echo "listen = \"$listen\""
	echo 'db = "/var/lib/taasd/taas.db"'
	echo 'dataplane = "xdp"'
	echo
	echo '[auth]'
	case $auth in
	token)
		echo '# token: X-Auth-Token (or Authorization: Bearer) from the tokens file.'
		echo 'mode = "token"'
		echo "tokens = \"$tokens\""
		;;
	keystone)
		echo '# keystone: tokens validated by Keystone, with the service user below.'
		echo 'mode = "keystone"'
		echo "keystone_url = \"$keystone_url\""
		echo "username = \"$keystone_user\""
		echo "password = \"$TAASD_KEYSTONE_PASSWORD\""
		echo "project_name = \"$keystone_project\""
		;;
	noauth)
		echo '# noauth, asked for by name (--auth noauth): anyone who reaches the API is'
		echo '# admin of every project, and taasd warns at every start.'
		echo 'mode = "noauth"'
		;;
	esac
	echo
	echo '[log]'
	echo 'level = "info"'
	for i in "${capture_ifs[@]}"; do
		printf '\n[[interfaces]]\nname = "%s"\nrole = "capture"\nunmatched = "drop"\n' "$i"
	done
	for i in "${monitor_ifs[@]}"; do
		printf '\n[[interfaces]]\nname = "%s"\nrole = "monitor"\n' "$i"
	done
} >"$conf.new"
chgrp taasd "$conf.new"
chmod 0640 "$conf.new"
if [ -e "$conf" ]; then
	say "kept $conf; the configuration for these NICs is in $conf.new"
else
	mv "$conf.new" "$conf"
	say "wrote $conf"
fi

# Capture and monitor NICs: up at boot with no address and no IPv6 (the
# appliance must not talk on them); capture NICs promiscuous, so a physical
# NIC does not filter the SPAN feed's foreign MACs.
for i in "${capture_ifs[@]}" "${monitor_ifs[@]}"; do
	ip link show dev "$i" >/dev/null 2>&1 || die "NIC $i does not exist (ip -br link lists them)"
	promisc=off
	for c in "${capture_ifs[@]}"; do [ "$c" = "$i" ] && promisc=on; done
	echo "net.ipv6.conf.$i.disable_ipv6 = 1" >"/etc/sysctl.d/60-taasd-$i.conf"
	sysctl -q -p "/etc/sysctl.d/60-taasd-$i.conf" || true # no IPv6 on this kernel: nothing to disable
	if [ -d /etc/network/interfaces.d ]; then
		cat >"/etc/network/interfaces.d/taasd-$i" <<EOF
# Written by deploy/provision.sh: taasd's NIC, up with no address.
auto $i
iface $i inet manual
	up ip link set dev \$IFACE promisc $promisc up
	down ip link set dev \$IFACE down
EOF
	fi
	ip link set dev "$i" promisc "$promisc" up
	say "NIC $i up, promisc $promisc"
done

systemctl daemon-reload

# The preflight, with exactly the service's user, capabilities and limits.
say "taasd check, as the service runs it:"
if ! systemd-run --quiet --wait --pipe --collect \
	-p User=taasd -p Group=taasd \
	-p AmbientCapabilities="CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK CAP_PERFMON" \
	-p CapabilityBoundingSet="CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK CAP_PERFMON" \
	-p LimitMEMLOCK=infinity \
	/usr/local/bin/taasd check --config "$conf"; then
	die "taasd check failed: fix what it reports, then run this again"
fi

if [ "$start" = yes ]; then
	systemctl enable taasd.service
	if systemctl is-active --quiet taasd.service; then
		# An upgrade: SIGUSR2 leaves the fast path's XDP programs attached and
		# copying while the new binary starts (taasd exits 75, which the unit
		# restarts); a plain restart would stop the copies for ~200 ms
		# (README "Signals: reload, stop, restart").
		old_pid=$(systemctl show -p MainPID --value taasd.service)
		systemctl kill -s USR2 taasd.service
		for _ in $(seq 1 60); do
			new_pid=$(systemctl show -p MainPID --value taasd.service)
			if [ "$new_pid" != 0 ] && [ "$new_pid" != "$old_pid" ] && systemctl is-active --quiet taasd.service; then
				break
			fi
			sleep 0.5
		done
		systemctl is-active --quiet taasd.service ||
			die "taasd did not come back after SIGUSR2: journalctl -u taasd"
	else
		systemctl start taasd.service
	fi
	say "taasd is running: systemctl status taasd; journalctl -u taasd"
fi

if [ -n "$new_token" ]; then
	host=${listen%:*}
	case $host in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
	port=${listen##*:}
	cat <<EOF

provision: the admin token, shown this once (it stays in $tokens, readable by root and taasd):

    $new_token

Send it as X-Auth-Token (or Authorization: Bearer):

    curl -H "X-Auth-Token: $new_token" http://$host:$port/v2.0/taas/tap_services
    openstack --os-auth-type admin_token --os-token $new_token \\
        --os-endpoint http://$host:$port tap service list

Give each project its own line in $tokens (TOKEN PROJECT_ID member), then
systemctl reload taasd.
EOF
fi
if [ "$auth" = noauth ]; then
	say "WARNING: --auth noauth: anyone who reaches $listen is admin of every project"
fi
