#!/usr/bin/env bash
# Makes a Debian 12 machine the PostgreSQL of a fleet of taasd (issue 14,
# README "PostgreSQL for a fleet"): Debian's postgresql, listening on the
# management network besides localhost, TLS and SCRAM passwords only for
# the nodes' network (pg_hba), and a role and a database for taasd, the
# role owning the database (taasd runs its own migrations). The Vagrantfile
# runs it in the fleet's db VM; run it as root on the database's machine:
#
#   sudo TAASD_DB_PASSWORD="$(cat db-password)" deploy/provision-postgres.sh \
#       --listen 10.14.0.2 --allow 10.14.0.0/24
#
# The role's password comes from TAASD_DB_PASSWORD (the environment: ps
# shows the command line); without it, one is generated into
# /etc/postgresql/taasd.password (mode 0600, root) and kept for the next
# run. Running it again changes nothing but the password, when it is new.
#
# --db-only makes only the role and the database, on a PostgreSQL of your
# own that psql reaches through the environment (PGHOST, PGPORT, PGUSER: a
# superuser, or a role with CREATEROLE and CREATEDB), as whoever runs it.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: deploy/provision-postgres.sh [options]
  --listen ADDR[,ADDR...]  addresses to listen on besides localhost (the management network's)
  --allow CIDR[,CIDR...]   networks the nodes connect from: hostssl, scram-sha-256 in pg_hba
  --role NAME              taasd's role (default taasd)
  --database NAME          taasd's database (default taas)
  --db-only                only the role and the database, on the server psql reaches
                           through PGHOST, PGPORT, PGUSER (no install, no configuration)
The role's password: TAASD_DB_PASSWORD, else one generated once into
/etc/postgresql/taasd.password.
EOF
}

listen=""
allow=""
role=taasd
database=taas
db_only=no
while [ $# -gt 0 ]; do
	case $1 in
	--listen) listen=$2; shift 2 ;;
	--allow) allow=$2; shift 2 ;;
	--role) role=$2; shift 2 ;;
	--database) database=$2; shift 2 ;;
	--db-only) db_only=yes; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "provision-postgres: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done

say() { echo "provision-postgres: $*"; }
die() { echo "provision-postgres: $*" >&2; exit 1; }

# Names go into SQL (as identifiers, quoted by psql) and pg_hba: plain ones.
for n in "$role" "$database"; do
	[[ $n =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "$n: want a name of a-z 0-9 _ (63 at most, not starting with a digit)"
done
IFS=, read -r -a listen_addrs <<<"$listen"
IFS=, read -r -a allow_nets <<<"$allow"
for a in "${listen_addrs[@]}"; do
	[[ $a =~ ^[0-9A-Za-z.:-]+$ ]] || die "--listen $a: want an address or host name"
done
for a in "${allow_nets[@]}"; do
	[[ $a =~ ^[0-9A-Fa-f.:]+/[0-9]{1,3}$ ]] || die "--allow $a: want a network, ADDRESS/PREFIX"
done

# The role and the database: psql's script, with the names as variables
# (psql quotes them: :"name" an identifier, :'name' a literal) and the
# password read from the environment by psql itself (\getenv), so that it
# is on no command line. Each statement is a no-op when what it makes is
# there; ALTER ROLE sets the password (and takes away what a role of that
# name may have had beyond logging in).
role_sql() {
	cat <<'EOF'
\set ON_ERROR_STOP on
\getenv password TAASD_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'role')
	WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
	PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'database', :'role', 'UTF8')
	WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
ALTER DATABASE :"database" OWNER TO :"role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
EOF
}

run_sql() { # run_sql PSQL...: the role's script through the given psql command
	role_sql | "$@" -X -q -v role="$role" -v database="$database" >/dev/null
}

if [ "$db_only" = yes ]; then
	[ -n "${TAASD_DB_PASSWORD:-}" ] || die "--db-only: set TAASD_DB_PASSWORD to the password of $role"
	command -v psql >/dev/null || die "psql is missing: apt-get install postgresql-client"
	run_sql psql -d "${PGDATABASE:-postgres}"
	say "role $role and database $database ready on ${PGHOST:-the default server}"
	exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (or --db-only)"
if ! command -v pg_lsclusters >/dev/null; then
	say "installing postgresql"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null ||
		die "apt-get install postgresql failed"
fi
# Debian's package makes one cluster: its version and name.
read -r version cluster _ < <(pg_lsclusters -h | head -n 1) || die "no PostgreSQL cluster (pg_createcluster makes one)"
confdir=/etc/postgresql/$version/$cluster
unit=postgresql@$version-$cluster.service

passfile=/etc/postgresql/taasd.password
if [ -z "${TAASD_DB_PASSWORD:-}" ]; then
	if [ ! -s "$passfile" ]; then
		(
			umask 077
			head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$passfile.new"
		)
		mv "$passfile.new" "$passfile"
		say "generated the password of $role into $passfile (mode 0600, root)"
	fi
	TAASD_DB_PASSWORD=$(cat "$passfile")
fi
export TAASD_DB_PASSWORD

# What the server needs to serve the nodes: its own addresses, SCRAM, TLS
# (Debian's package turns it on with the snakeoil certificate; put a
# certificate the nodes can verify in ssl_cert_file for sslmode=verify-full).
changed=no
conf=$confdir/conf.d/taasd.conf
{
	echo "# Written by deploy/provision-postgres.sh: a fleet of taasd connects here."
	addrs=localhost
	for a in "${listen_addrs[@]}"; do addrs="$addrs,$a"; done
	echo "listen_addresses = '$addrs'"
	echo "password_encryption = 'scram-sha-256'"
	echo "ssl = on"
} >"$conf.new"
if cmp -s "$conf.new" "$conf"; then
	rm -f "$conf.new"
else
	mv "$conf.new" "$conf"
	changed=restart
	say "wrote $conf"
fi

# pg_hba: one marked block of ours, rewritten whole; the package's lines
# (local peer for postgres, loopback) stay.
hba=$confdir/pg_hba.conf
begin="# BEGIN taasd (deploy/provision-postgres.sh)"
end="# END taasd"
{
	awk -v b="$begin" -v e="$end" '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }' "$hba"
	echo "$begin"
	for a in "${allow_nets[@]}"; do
		echo "hostssl $database $role $a scram-sha-256"
	done
	echo "$end"
} >"$hba.new"
if cmp -s "$hba.new" "$hba"; then
	rm -f "$hba.new"
else
	chown --reference="$hba" "$hba.new"
	chmod --reference="$hba" "$hba.new"
	mv "$hba.new" "$hba"
	[ "$changed" = restart ] || changed=reload
	say "wrote taasd's lines in $hba: ${allow:-none (localhost only)}"
fi

systemctl enable --quiet "$unit" 2>/dev/null || true # Debian enables it; a re-enable is harmless
case $changed in
restart) systemctl restart "$unit" ;;
reload) systemctl reload "$unit" ;;
esac
systemctl is-active --quiet "$unit" || systemctl start "$unit"

cd / # psql as postgres: a directory it may enter
run_sql runuser -u postgres -- psql -d postgres
say "role $role and database $database ready; PostgreSQL $version ($cluster) listens on localhost${listen:+,$listen}"
