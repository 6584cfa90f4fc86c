#!/usr/bin/env bash
# Benchmark of the agent's PostgreSQL path against the baselines issue 4 names, side by side in
# one run on one machine: pg_dump -Fc -Z0 > /dev/null (the source's own limit), the playbook's
# pg_dump | gzip, bare pg_restore -j2 from a local file, psql < plain.sql, and the agent to a
# local directory and to S3 on loopback (rclone serve s3). Prints a Markdown table.
#
# Usage: hack/bench/agent-postgres.sh [SCALE] [RANDOM_MB]   (defaults 50 and 300: ~1 GB database)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
scale=${1:-50}
random_mb=${2:-300}
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
export PATH="$pgbin:$PATH"
work=$(mktemp -d /tmp/lifeboat-bench-XXXX)
trap 'kill $pg_pid $s3_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
asuser() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi; }

cargo build -q --release -p lifeboat-agent --manifest-path "$repo/Cargo.toml"
agent=$repo/target/release/lifeboat-agent
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work"
asuser initdb -D "$work/data" -U lifeboat --auth=trust --no-sync --locale=C >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
asuser postgres -D "$work/data" -p "$port" -k "$work" -c listen_addresses=127.0.0.1 -c fsync=off \
  -c shared_buffers=512MB -c max_wal_size=4GB > "$work/pg.log" 2>&1 &
pg_pid=$!
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=lifeboat
until pg_isready -q; do sleep 0.2; done
createdb shop
echo "bench: pgbench -i -s $scale plus ${random_mb} MB of random text/jsonb" >&2
pgbench -i -q -s "$scale" shop >/dev/null 2>&1
rows=$(( random_mb * 1024 * 1024 / 600 ))
psql -q shop -c "CREATE TABLE noise AS SELECT i AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS txt,
  jsonb_build_object('a', md5(random()::text), 'b', random(), 'c', md5(random()::text) || md5(random()::text)) AS doc,
  md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS more
  FROM generate_series(1, $rows) i" >/dev/null
size=$(psql -tA shop -c "SELECT pg_database_size('shop')")
echo "bench: database size $(( size / 1024 / 1024 )) MB" >&2

# Wall seconds of a shell command, and peak RSS in KiB: the agent's own (it reports its VmHWM),
# else the largest process of the command (GNU time).
export LIFEBOAT_REPORT_PEAK_RSS=1
# Backups are signed: a throw-away key for the bench's namespace ("default" for the policy file).
head -c 32 /dev/urandom > "$work/signing.key"
export LIFEBOAT_SIGNING_KEY_FILE=$work/signing.key
measure() {
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/time.out" bash -c "$1" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  rss=$(sed -n 's/.*peak RSS \([0-9]*\) kB.*/\1/p' "$work/last.err" | tail -n1)
  [ -n "$rss" ] || rss=$(tail -n1 "$work/time.out")
  python3 -c "print(f'{$t1-$t0:.1f} $rss')"
}
cat > "$work/policy.yaml" <<YAML
apiVersion: lifeboat.dev/v1alpha1
kind: BackupPolicy
metadata: {name: bench}
spec:
  schedule: "@hourly"
  assets:
    - name: db
      postgres: {host: 127.0.0.1, port: $port, user: lifeboat, sslMode: disable, databases: [shop]}
  retention: {keepLast: 100}
  destination: {volume: {claimName: local}}
YAML

read -r t_fc m_fc < <(measure "pg_dump -Fc -Z0 shop > /dev/null")
read -r t_gz m_gz < <(measure "pg_dump shop | gzip > $work/plain.sql.gz")
read -r t_ag m_ag < <(measure "$agent backup --policy-file $work/policy.yaml --dir $work/backups")
gz_size=$(stat -c %s "$work/plain.sql.gz")
art=$(ls "$work"/backups/default/bench/*/db.shop.pgdump.zst)
ag_size=$(stat -c %s "$art")

# S3 on loopback
mkdir -p "$work/s3/backups" "$work/secrets/s3"
printf lifeboat-bench-ak > "$work/secrets/s3/AWS_ACCESS_KEY_ID"; printf lifeboat-bench-sk-0123456789 > "$work/secrets/s3/AWS_SECRET_ACCESS_KEY"
s3port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rclone serve s3 --addr "127.0.0.1:$s3port" --auth-key lifeboat-bench-ak,lifeboat-bench-sk-0123456789 --config /dev/null "$work/s3" >/dev/null 2>&1 &
s3_pid=$!
until (exec 3<>/dev/tcp/127.0.0.1/$s3port) 2>/dev/null; do sleep 0.2; done
job=$(printf '{"namespace":"b","policy":"bench","asset":{"name":"db","postgres":{"host":"127.0.0.1","port":%s,"user":"lifeboat","sslMode":"disable","databases":["shop"]}},"destination":{"s3":{"endpoint":"http://127.0.0.1:%s","bucket":"backups","forcePathStyle":true,"credentialsSecret":{"name":"s3"}}},"compression":{"algorithm":"zstd","level":3},"retention":{"keepLast":100}}' "$port" "$s3port")
read -r t_s3 m_s3 < <(measure "LIFEBOAT_JOB='$job' LIFEBOAT_SECRETS_DIR=$work/secrets $agent backup")

# Restores
pg_dump -Fc -Z0 shop > "$work/shop.dump"
pg_dump shop > "$work/plain.sql"
createdb r_pgrestore; createdb r_psql
read -r t_pr m_pr < <(measure "pg_restore -j2 --no-owner -d r_pgrestore $work/shop.dump")
read -r t_ps m_ps < <(measure "psql -q -d r_psql -f $work/plain.sql")
cat > "$work/target.yaml" <<YAML
asset: db
postgres: {host: 127.0.0.1, port: $port, user: lifeboat, sslMode: disable, database: r_agent, createDatabase: true}
YAML
read -r t_ar m_ar < <(measure "$agent restore --execute --asset db --policy-file $work/policy.yaml --target-file $work/target.yaml --dir $work/backups")

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
cat <<TABLE
Database: $(( size / 1024 / 1024 )) MB (pgbench scale $scale + ${random_mb} MB random text/jsonb); $(nproc) cores.

| Operation | Wall (s) | Peak RSS (MiB) | Output (MB) | Ratio |
|---|---|---|---|---|
| \`pg_dump -Fc -Z0 > /dev/null\` (source limit) | $t_fc | $(( m_fc / 1024 )) | — | 1.00 |
| playbook: \`pg_dump \| gzip > file\` | $t_gz | $(( m_gz / 1024 )) | $(( gz_size / 1024 / 1024 )) | $(ratio $t_gz $t_fc) |
| **agent backup to a directory** (pg_dump -Fc -Z0 → zstd 3 → sha256) | $t_ag | $(( m_ag / 1024 )) | $(( ag_size / 1024 / 1024 )) | $(ratio $t_ag $t_fc) vs source, $(ratio $t_ag $t_gz) vs gzip |
| **agent backup to S3** (rclone serve s3 on loopback) | $t_s3 | $(( m_s3 / 1024 )) | — | $(ratio $t_s3 $t_ag) vs directory |
| \`pg_restore -j2\` from a local file | $t_pr | $(( m_pr / 1024 )) | — | 1.00 |
| \`psql < plain.sql\` | $t_ps | $(( m_ps / 1024 )) | — | $(ratio $t_ps $t_pr) |
| **agent restore** (verify + decompress + pg_restore -j2) | $t_ar | $(( m_ar / 1024 )) | — | $(ratio $t_ar $t_pr) |
TABLE
