#!/usr/bin/env bash
# Entrypoint of the standin/postgres:17 image (written for this project).
#
# Honours the official postgres image's contract:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE,
#   POSTGRES_DB (default: the user), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD
#   (default scram-sha-256), PGDATA (default /var/lib/postgresql/data),
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz run once on a fresh PGDATA.
# An empty PGDATA is initialised; an existing one is used as it is. Runs as root
# (drops to postgres) or as any uid, with or without a passwd entry (nss_wrapper).
set -Eeo pipefail

log() { printf 'standin-postgres: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# VAR [default]: take VAR, or the content of the file named by VAR_FILE.
file_env() {
	local var="$1" fvar="${1}_FILE" def="${2:-}" val
	if [ -n "${!var:-}" ] && [ -n "${!fvar:-}" ]; then
		die "both $var and $fvar are set (but are exclusive)"
	fi
	val="$def"
	if [ -n "${!var:-}" ]; then
		val="${!var}"
	elif [ -n "${!fvar:-}" ]; then
		val="$(< "${!fvar}")"
	fi
	export "$var"="$val"
	unset "$fvar"
}

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = 'postgres' ] && [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA"
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		chown postgres:postgres "$PGDATA"
		chmod 700 "$PGDATA"
	fi
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

with_nss_wrapper() {
	# initdb and psql look the current uid up; give an arbitrary uid a name.
	if getent passwd "$(id -u)" > /dev/null 2>&1; then
		return 0
	fi
	local lib
	lib="$(ls /usr/lib/*/libnss_wrapper.so 2> /dev/null | head -n1)"
	[ -n "$lib" ] || die "uid $(id -u) has no passwd entry and libnss_wrapper is missing"
	NSS_WRAPPER_PASSWD="$(mktemp)"
	NSS_WRAPPER_GROUP="$(mktemp)"
	printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" > "$NSS_WRAPPER_PASSWD"
	printf 'postgres:x:%s:\n' "$(id -g)" > "$NSS_WRAPPER_GROUP"
	export NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP LD_PRELOAD="$lib"
}

without_nss_wrapper() {
	if [ -n "${NSS_WRAPPER_PASSWD:-}" ]; then
		rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
		unset NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP LD_PRELOAD
	fi
}

run_initdb_d() {
	local f
	shopt -s nullglob
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then log "running $f"; "$f"; else log "sourcing $f"; . "$f"; fi ;;
			*.sql) log "running $f"; psql_init -f "$f" ;;
			*.sql.gz) log "running $f"; gunzip -c "$f" | psql_init ;;
			*.sql.xz) log "running $f"; xzcat "$f" | psql_init ;;
			*) if [ -e "$f" ]; then log "ignoring $f"; fi ;;
		esac
	done
}

psql_init() {
	psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password \
		--username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

init_database() {
	mkdir -p "$PGDATA" 2> /dev/null || die "cannot create PGDATA $PGDATA as uid $(id -u)"
	[ -w "$PGDATA" ] || die "PGDATA $PGDATA is not writable by uid $(id -u):$(id -g) (owner: $(stat -c %u:%g "$PGDATA"))"
	chmod 700 "$PGDATA" 2> /dev/null || :

	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
		die "Database is uninitialized and superuser password is not specified.
  You must specify POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value
  for the superuser, or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections
  without a password."
	fi

	with_nss_wrapper
	log "initialising database cluster in $PGDATA"
	local pwargs=() pwfile=''
	if [ -n "$POSTGRES_PASSWORD" ]; then
		pwfile="$(mktemp)"
		chmod 600 "$pwfile"
		printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
		pwargs=(--pwfile="$pwfile")
	fi
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is split on purpose, as upstream does
	if ! initdb --username="$POSTGRES_USER" "${pwargs[@]}" $POSTGRES_INITDB_ARGS > /dev/null; then
		[ -z "$pwfile" ] || rm -f "$pwfile"
		die "initdb failed"
	fi
	[ -z "$pwfile" ] || rm -f "$pwfile"

	{
		printf '\n# added by the standin entrypoint\n'
		printf "listen_addresses = '*'\n"
	} >> "$PGDATA/postgresql.conf"
	{
		printf '\n# added by the standin entrypoint\n'
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >> "$PGDATA/pg_hba.conf"

	# private server for setting up: no TCP, and a socket directory of its own, so that
	# pg_isready (a healthcheck) does not report ready before initialisation is done
	local sockdir
	sockdir="$(mktemp -d)"
	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$sockdir -p ${PGPORT:-5432}" start > /dev/null
	export PGHOST="$sockdir"
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		POSTGRES_DB=postgres psql_init -v db="$POSTGRES_DB" <<- 'EOSQL'
			SELECT format('CREATE DATABASE %I', :'db')
			WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
		EOSQL
		log "created database $POSTGRES_DB"
	fi
	run_initdb_d
	pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
	unset PGHOST
	rmdir "$sockdir" 2> /dev/null || :
	without_nss_wrapper
	log "PostgreSQL init process complete; ready for start up"
}

if [ "$1" = 'postgres' ]; then
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	export POSTGRES_USER POSTGRES_DB POSTGRES_HOST_AUTH_METHOD

	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		init_database
	else
		log "PGDATA $PGDATA already holds a cluster; skipping initialisation"
	fi
	unset POSTGRES_PASSWORD
fi

exec "$@"
