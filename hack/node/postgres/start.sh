#!/bin/sh
# The entrypoint of lifeboat.test/postgres:local (hack/node/images.sh): PostgreSQL as a chart
# runs it in a StatefulSet. The first start on an empty volume creates the cluster (superuser
# `postgres`, its password from the file $POSTGRES_PASSWORD_FILE, a mounted Secret key); every
# start then serves $PGDATA on $PGPORT to password clients of any address.
set -eu
: "${PGDATA:=/data/pgdata}" "${PGPORT:=5432}" "${POSTGRES_PASSWORD_FILE:=/run/secrets/postgres/password}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  "$PG_BIN/initdb" -D "$PGDATA" -U postgres --no-locale -E UTF8 --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$POSTGRES_PASSWORD_FILE" >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
fi
exec "$PG_BIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c port="$PGPORT" \
  -c unix_socket_directories=/tmp -c jit=off
