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
# without touching the operator's configuration. A kept configuration whose
# auth mode differs from --auth fails the run, unless --keep-config says to
# keep it anyway: what is printed is what the kept file does.
#
# Authentication is on by default (issue 13): --auth token (the default)
# generates an admin token into /etc/taasd/tokens (mode 0640, root:taasd),
# printed once; --auth keystone validates Keystone tokens with the service
# user's password from $TAASD_KEYSTONE_PASSWORD; an open API (--auth noauth)
# only when asked for by name, and taasd then warns at every start.
#
# TLS is on by default (review of issue 13: tokens went in clear on
# 0.0.0.0): a self-signed certificate is generated into /etc/taasd/tls (key
# mode 0640, root:taasd) and its fingerprint printed; --tls-cert/--tls-key
# install one's own; --no-tls serves plain HTTP, and taasd then warns at
# every start unless it listens on loopback.
#
# A fleet node (issue 14, README "A fleet with Vagrant" and "PostgreSQL for
# a fleet"): --db names the fleet's PostgreSQL (a postgres:// URL) and
# --node this appliance's node name. Secrets come from the environment, not
# the command line (ps shows it): TAASD_DB_PASSWORD goes into
# /etc/taasd/pgpass (mode 0640, root:taasd), which the URL then names
# (passfile=), and TAASD_ADMIN_TOKEN is the admin token every node of the
# fleet shares, written instead of a generated one.
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
  --tls-cert FILE  the server's PEM certificate (chain), with --tls-key: installed into
                   /etc/taasd/tls (default: a self-signed one generated there once)
  --tls-key FILE   its PEM key
  --no-tls         plain HTTP: tokens cross the network in clear (loopback or a lab only)
  --db URL         the database: default the SQLite file /var/lib/taasd/taas.db; a
                   postgres:// URL makes this appliance a node of a fleet. Put no password
                   in it: give it in TAASD_DB_PASSWORD, which goes into /etc/taasd/pgpass
                   (mode 0640, root:taasd) that the URL then names (passfile=)
  --db-file FILE   the URL from FILE instead (its first line neither blank nor #), one
                   that holds its password, say: it goes into taasd.toml (0640 root:taasd)
  --node NAME      this appliance's node name in the fleet (default: taasd's, the host name)
  --keep-config    keep an existing /etc/taasd/taasd.toml even when its auth mode, db or
                   node is not what this run asks for
  --no-start       install and check, but do not enable or start the service
environment (secrets stay off the command line, which ps shows):
  TAASD_DB_PASSWORD        the database's password, with a postgres:// --db
  TAASD_ADMIN_TOKEN        the fleet's admin token, the same on every node (default: generated)
  TAASD_KEYSTONE_PASSWORD  with --auth keystone: the service user's password
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
tls=yes
tls_cert=""
tls_key=""
keep_config=no
db=""
db_file=""
node=""
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
	--tls-cert) tls_cert=$2; shift 2 ;;
	--tls-key) tls_key=$2; shift 2 ;;
	--no-tls) tls=no; shift ;;
	--db) db=$2; shift 2 ;;
	--db-file) db_file=$2; shift 2 ;;
	--node) node=$2; shift 2 ;;
	--keep-config) keep_config=yes; shift ;;
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
	case $TAASD_KEYSTONE_PASSWORD in *'"'* | *\\* | *[[:cntrl:]]*)
		die "TAASD_KEYSTONE_PASSWORD: no \", \\ or control characters please (it goes into a TOML string)" ;;
	esac
	;;
*) die "--auth $auth: want token, keystone or noauth" ;;
esac
if [ -n "$tls_cert$tls_key" ]; then
	[ "$tls" = yes ] || die "--no-tls with --tls-cert/--tls-key: choose one"
	if [ -z "$tls_cert" ] || [ -z "$tls_key" ]; then die "--tls-cert and --tls-key go together"; fi
	[ -r "$tls_cert" ] || die "--tls-cert $tls_cert: not readable"
	[ -r "$tls_key" ] || die "--tls-key $tls_key: not readable"
fi

# The database and the node. A password must not travel on the command
# line; the URL goes into a TOML string, so no " or \ (a URL
# percent-encodes them anyway).
pgpass=/etc/taasd/pgpass
has_password() { [[ $1 =~ ^postgres(ql)?://[^/@:]*:[^/@]*@ || $1 =~ [?\&]password= ]]; }
redact() { sed -E 's#(://[^/@:]*:)[^/@]*@#\1xxxxx@#; s#([?&]password=)[^&]*#\1xxxxx#' <<<"$1"; }
if [ -n "$db_file" ]; then
	[ -z "$db" ] || die "--db and --db-file: choose one"
	[ -r "$db_file" ] || die "--db-file $db_file: not readable"
	db=$(sed -n '/^[[:space:]]*\(#\|$\)/!{s/^[[:space:]]*//;s/[[:space:]]*$//;p;q}' "$db_file")
	[ -n "$db" ] || die "--db-file $db_file: no URL in it"
elif [ -n "$db" ] && has_password "$db"; then
	die "--db: the URL holds a password, which ps and the shell's history show: give it in TAASD_DB_PASSWORD, or the URL in --db-file"
fi
case $db in *'"'* | *\\* | *[[:cntrl:]]* | *[[:space:]]*)
	die "--db: no \", \\, spaces or control characters please (percent-encode them: it goes into a TOML string)" ;;
esac
fleet=no
case $db in postgres://* | postgresql://*) fleet=yes ;; esac
if [ -n "${TAASD_DB_PASSWORD:-}" ]; then
	[ "$fleet" = yes ] || die "TAASD_DB_PASSWORD is for a postgres:// --db, got ${db:-none}"
	has_password "$db" && die "TAASD_DB_PASSWORD and a password in the URL: choose one"
	case $TAASD_DB_PASSWORD in *[[:cntrl:]]*) die "TAASD_DB_PASSWORD: no control characters please" ;; esac
	case $db in *[?\&]passfile=*) die "TAASD_DB_PASSWORD and passfile= in the URL: choose one" ;; esac
	# The URL names the file the password goes into below.
	case $db in *\?*) db="$db&passfile=$pgpass" ;; *) db="$db?passfile=$pgpass" ;; esac
fi
if [ -n "$node" ] && ! [[ $node =~ ^[A-Za-z0-9._-]{1,64}$ ]]; then
	die "--node $node: want 1 to 64 of A-Z a-z 0-9 . _ -"
fi
admin_token=${TAASD_ADMIN_TOKEN:-}
if [ -n "$admin_token" ]; then
	[ "$auth" = token ] || die "TAASD_ADMIN_TOKEN is for --auth token, not --auth $auth"
	[[ $admin_token =~ ^[A-Za-z0-9._~+/=-]{16,}$ ]] ||
		die "TAASD_ADMIN_TOKEN: want 16 or more of A-Z a-z 0-9 . _ ~ + / = - (head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' makes one)"
fi
db_in_config=${db:-/var/lib/taasd/taas.db}

# What a kept configuration does, not what this run would write: its auth
# mode (taasd's default, noauth, when it names none), its tokens file and
# whether it serves TLS. Read with awk: the file is ours, or the
# operator's edit of ours.
conf=/etc/taasd/taasd.toml
tokens=/etc/taasd/tokens
kept_key() { # kept_key SECTION KEY: the string value of KEY in [SECTION] ("" = top level)
	awk -v want="$1" -v key="$2" '
		/^[[:space:]]*\[/ { sec = $0; gsub(/[][[:space:]]/, "", sec); next }
		sec == want && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
			v = $0; sub(/^[^=]*=[[:space:]]*"/, "", v); sub(/".*/, "", v); print v; exit
		}' "$conf"
}
mode_in_effect=$auth
tokens_in_effect=$tokens
tls_in_effect=$tls
if [ -e "$conf" ]; then
	mode_in_effect=$(kept_key auth mode)
	mode_in_effect=${mode_in_effect:-noauth}
	tokens_in_effect=$(kept_key auth tokens)
	tls_in_effect=no
	[ -n "$(kept_key "" tls_cert)" ] && tls_in_effect=yes
	if [ "$mode_in_effect" != "$auth" ]; then
		echo "provision: !!! $conf is kept, and its auth mode is $mode_in_effect, not --auth $auth !!!" >&2
		if [ "$keep_config" != yes ]; then
			die "move $conf away to write a new one, or pass --auth $mode_in_effect, or --keep-config to keep it as it is"
		fi
		say "--keep-config: keeping $conf with auth mode $mode_in_effect"
	fi
	# A fleet node must not stay an island, nor join under another name,
	# because its old configuration was kept.
	db_kept=$(kept_key "" db)
	node_kept=$(kept_key "" node)
	if [ "$db_kept" != "$db_in_config" ] || [ "$node_kept" != "$node" ]; then
		echo "provision: !!! $conf is kept, with db $(redact "${db_kept:-taas.db}") and node ${node_kept:-(the host name)}, not db $(redact "$db_in_config") and node ${node:-(the host name)} !!!" >&2
		if [ "$keep_config" != yes ]; then
			die "move $conf away to write a new one, or pass the --db and --node it has, or --keep-config to keep it as it is"
		fi
		say "--keep-config: keeping $conf with db $(redact "${db_kept:-taas.db}") and node ${node_kept:-(the host name)}"
	fi
fi

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
# readable by root and the service only, shown once at the end, and only
# when the configuration in effect reads it. Should the run fail after
# writing it, the EXIT trap says where it is.
new_token=""
token_shown=no
token_note() {
	if [ -n "$new_token" ] && [ "$token_shown" = no ]; then
		echo "provision: the generated admin token is in $tokens (readable by root and taasd)" >&2
	fi
}
trap token_note EXIT
uses_tokens=no
[ "$mode_in_effect" = token ] && [ "$tokens_in_effect" = "$tokens" ] && uses_tokens=yes
if [ "$uses_tokens" = yes ] && [ -e "$tokens" ] && [ -n "$admin_token" ] &&
	! awk -v t="$admin_token" '!/^[[:space:]]*#/ && $1 == t && $3 ~ /(^|,)admin(,|$)/ { found = 1 } END { exit !found }' "$tokens"; then
	die "$tokens is kept and lacks TAASD_ADMIN_TOKEN, the fleet's admin token: add the line \"TOKEN admin admin\" to it, or move it away"
fi
if [ "$uses_tokens" = yes ] && [ ! -e "$tokens" ]; then
	new_token=${admin_token:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
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
	if [ -n "$admin_token" ]; then
		say "wrote $tokens (mode 0640, root:taasd) with the fleet's admin token (TAASD_ADMIN_TOKEN)"
		token_shown=yes # the operator has it already
	else
		say "wrote $tokens (mode 0640, root:taasd) with a generated admin token"
	fi
fi

# The database's password, in libpq's password file format
# (host:port:database:user:password, * for any; \ and : escaped), which
# taasd's driver reads when the URL names it (passfile=). Rewritten at
# every run that gives one: a new password is a re-run and a restart.
if [ -n "${TAASD_DB_PASSWORD:-}" ]; then
	escaped=${TAASD_DB_PASSWORD//\\/\\\\}
	escaped=${escaped//:/\\:}
	(
		umask 077
		{
			echo "# The password of taasd's PostgreSQL role, named by db in $conf (passfile=)."
			echo "*:*:*:*:$escaped"
		} >"$pgpass.new"
	)
	chown root:taasd "$pgpass.new"
	chmod 0640 "$pgpass.new"
	mv "$pgpass.new" "$pgpass"
	say "wrote $pgpass (mode 0640, root:taasd) with the database's password"
fi

# TLS: one's own pair, else the one generated before, else a new
# self-signed one, valid for this host's names and addresses.
tlsdir=/etc/taasd/tls
crt=$tlsdir/taasd.crt
key=$tlsdir/taasd.key
if [ "$tls" = yes ]; then
	install -d -m 0750 -o root -g taasd "$tlsdir"
	if [ -n "$tls_cert" ]; then
		install -m 0644 -o root -g taasd "$tls_cert" "$crt.new"
		install -m 0640 -o root -g taasd "$tls_key" "$key.new"
		mv -f "$crt.new" "$crt"
		mv -f "$key.new" "$key"
		say "installed $tls_cert and $tls_key as $crt and $key (mode 0640, root:taasd)"
	elif [ ! -e "$crt" ] || [ ! -e "$key" ]; then
		if ! command -v openssl >/dev/null; then
			command -v apt-get >/dev/null || die "openssl is missing: install it, or pass --tls-cert/--tls-key"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl >/dev/null ||
				die "apt-get install openssl failed"
		fi
		fqdn=$(hostname -f 2>/dev/null || hostname)
		san="DNS:$fqdn,DNS:$(hostname),DNS:localhost,IP:127.0.0.1,IP:::1"
		for ip in $(hostname -I 2>/dev/null); do san="$san,IP:$ip"; done
		(
			umask 027
			openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
				-subj "/CN=$fqdn" -addext "subjectAltName=$san" \
				-keyout "$key.new" -out "$crt.new" 2>/dev/null
		) || die "openssl could not make a certificate"
		chown root:taasd "$key.new" "$crt.new"
		chmod 0640 "$key.new"
		chmod 0644 "$crt.new"
		mv -f "$key.new" "$key"
		mv -f "$crt.new" "$crt"
		say "generated a self-signed certificate $crt ($san), key $key (mode 0640, root:taasd)"
	fi
	say "certificate $crt: $(openssl x509 -noout -fingerprint -sha256 -in "$crt")"
fi

# The configuration: the example's comments, with this machine's NICs.
{
	echo "# Written by deploy/provision.sh; every field is documented in"
	echo "# /usr/local/share/doc/taasd/taasd.toml and the README's Configuration section."
	echo "listen = \"$listen\""
	if [ "$tls" = yes ]; then
		echo "tls_cert = \"$crt\""
		echo "tls_key = \"$key\""
	else
		echo '# --no-tls: tokens cross the network in clear.'
	fi
	if [ "$fleet" = yes ]; then
		echo '# A node of a fleet: the fleet'"'"'s PostgreSQL (README "PostgreSQL for a fleet").'
	fi
	echo "db = \"$db_in_config\""
	if [ -n "$node" ]; then
		echo "node = \"$node\""
	fi
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
	say "kept $conf (auth $mode_in_effect, TLS $tls_in_effect, db $(redact "${db_kept:-taas.db}"), node ${node_kept:-(the host name)}); the configuration for these NICs is in $conf.new"
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

host=${listen%:*}
case $host in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
port=${listen##*:}
scheme=http
curl_ca=""
os_ca=""
if [ "$tls_in_effect" = yes ]; then
	scheme=https
	# A kept configuration may name another pair: its certificate then.
	cacert=$crt
	[ -e "$conf" ] && cacert=$(kept_key "" tls_cert)
	curl_ca="--cacert $cacert "
	os_ca="--os-cacert $cacert "
fi
if [ -n "$new_token" ] && [ "$uses_tokens" = yes ] && [ -z "$admin_token" ]; then
	token_shown=yes
	cat <<EOF

provision: the admin token, shown this once (it stays in $tokens, readable by root and taasd):

    $new_token

Send it as X-Auth-Token (or Authorization: Bearer):

    curl ${curl_ca}-H "X-Auth-Token: $new_token" $scheme://$host:$port/v2.0/taas/tap_services
    openstack --os-auth-type admin_token --os-token $new_token ${os_ca}\\
        --os-endpoint $scheme://$host:$port tap service list

Give each project its own line in $tokens (TOKEN PROJECT_ID member), then
systemctl reload taasd.
EOF
elif [ "$uses_tokens" = yes ]; then
	if [ -n "$admin_token" ]; then
		say "auth token: the fleet's admin token (TAASD_ADMIN_TOKEN) is in $tokens (readable by root and taasd):"
	else
		say "auth token: the admin token is in $tokens (readable by root and taasd), as before:"
	fi
	say "    curl ${curl_ca}-H \"X-Auth-Token: \$(sudo awk '!/^#/ && NF {print \$1; exit}' $tokens)\" $scheme://$host:$port/v2.0/taas/tap_services"
elif [ "$mode_in_effect" = token ]; then
	say "auth token: the tokens are in ${tokens_in_effect:-the file $conf names} (not $tokens: no token generated)"
fi
if [ "$fleet" = yes ]; then
	say "a node of a fleet: node ${node:-$(hostname) (the host name)}, database $(redact "$db_in_config")"
fi
if [ "$mode_in_effect" = noauth ]; then
	say "WARNING: auth noauth: anyone who reaches $listen is admin of every project"
fi
if [ "$tls_in_effect" = no ] && [ "$mode_in_effect" != noauth ]; then
	case $host in 127.* | "[::1]" | localhost) ;;
	*) say "WARNING: no TLS: tokens cross the network to $listen in clear" ;;
	esac
fi
