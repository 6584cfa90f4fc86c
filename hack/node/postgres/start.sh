#!/bin/sh
# The entrypoint of lifeboat.test/postgres:local (hack/node/images.sh): PostgreSQL as a chart
# runs it in a StatefulSet. The first start on an empty volume creates the cluster (superuser
# `postgres`, its password from the file $POSTGRES_PASSWORD_FILE, a mounted Secret key); every
# start then serves $PGDATA on $PGPORT to password clients of any address, over TLS when they ask
# for it (`sslmode=require`), with a self-signed certificate made on the first start, as charts do
# when no certificate is given.
set -eu
: "${PGDATA:=/data/pgdata}" "${PGPORT:=5432}" "${POSTGRES_PASSWORD_FILE:=/run/secrets/postgres/password}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  "$PG_BIN/initdb" -D "$PGDATA" -U postgres --no-locale -E UTF8 --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$POSTGRES_PASSWORD_FILE" >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
fi
# A data directory made by an earlier image has no certificate: it gets one too. PostgreSQL
# refuses a key that others can read, hence the umask.
if [ ! -s "$PGDATA/server.crt" ] || [ ! -s "$PGDATA/server.key" ]; then
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 3650 -subj "/CN=${HOSTNAME:-postgres}" -keyout "$PGDATA/server.key" -out "$PGDATA/server.crt" 2>/dev/null)
fi
exec "$PG_BIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c port="$PGPORT" \
  -c unix_socket_directories=/tmp -c jit=off -c ssl=on
