#!/usr/bin/env bash
# Benchmark of the agent's PostgreSQL path against its baselines, side by side in one run on one
# machine, on two databases: "pgbench" (pgbench scale 50 plus 300 MB of random text/jsonb, as
# issue 4 measured) and "mixed", a less compressible one (random text, jsonb, bytea, numerics;
# ~400 MB). Baselines: pg_dump -Fc -Z0 > /dev/null (the source's own limit), the playbook's
# pg_dump | gzip, bare pg_restore -j2 from a local file and psql < plain.sql. The agent backs up
# to a local directory and to S3 on loopback (rclone serve s3) and restores from both.
#
# Every figure is the median of RUNS runs (min–max); the runs interleave the commands, so a
# moment of load hits the agent and its baseline alike. Prints Markdown tables and, per
# database, the issue's verdicts: backup ≤ 1.05 × the source's limit with an artifact no larger
# than gzip's, restore ≤ 1.10 × pg_restore -j2, agent peak RSS ≤ 64 MiB.
#
# Usage: hack/bench/agent-postgres.sh [--runs N] [--scale S] [--noise MB] [--mixed MB] [--only pgbench|mixed]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
runs=3 scale=50 noise_mb=300 mixed_mb=400 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --noise) noise_mb=$2; shift 2 ;;
    --mixed) mixed_mb=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--scale S] [--noise MB] [--mixed MB] [--only pgbench|mixed]" >&2; exit 2 ;;
  esac
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
export PATH="$pgbin:$PATH"
work=$(mktemp -d /tmp/lifeboat-bench-XXXX)
pg_pid="" s3_pid=""
trap 'kill $pg_pid $s3_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
asuser() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --clear-groups -- "$@"; else "$@"; fi; }

cargo build -q --release -p lifeboat-agent --manifest-path "$repo/Cargo.toml"
agent=$repo/target/release/lifeboat-agent
# Every verb that writes or reads backups needs a namespace's signing key (32 random bytes).
head -c 32 /dev/urandom > "$work/signing.key"
chmod 600 "$work/signing.key"
export LIFEBOAT_SIGNING_KEY_FILE=$work/signing.key
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work"
asuser initdb -D "$work/data" -U lifeboat --auth=trust --no-sync --locale=C >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
asuser postgres -D "$work/data" -p "$port" -k "$work" -c listen_addresses=127.0.0.1 -c fsync=off \
  -c shared_buffers=512MB -c max_wal_size=4GB > "$work/pg.log" 2>&1 &
pg_pid=$!
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=lifeboat
until pg_isready -q; do sleep 0.2; done

# S3 on loopback.
mkdir -p "$work/s3/backups" "$work/secrets/s3"
printf lifeboat-bench-ak > "$work/secrets/s3/AWS_ACCESS_KEY_ID"; printf lifeboat-bench-sk-0123456789 > "$work/secrets/s3/AWS_SECRET_ACCESS_KEY"
s3port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rclone serve s3 --addr "127.0.0.1:$s3port" --auth-key lifeboat-bench-ak,lifeboat-bench-sk-0123456789 --config /dev/null "$work/s3" >/dev/null 2>&1 &
s3_pid=$!
until (exec 3<>/dev/tcp/127.0.0.1/$s3port) 2>/dev/null; do sleep 0.2; done

make_pgbench() {
  createdb pgbench
  pgbench -i -q -s "$scale" pgbench >/dev/null 2>&1
  local rows=$(( noise_mb * 1024 * 1024 / 600 ))
  psql -q pgbench -c "CREATE TABLE noise AS SELECT i AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS txt,
    jsonb_build_object('a', md5(random()::text), 'b', random(), 'c', md5(random()::text) || md5(random()::text)) AS doc,
    md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS more
    FROM generate_series(1, $rows) i" >/dev/null
}

# Less compressible: random text (base64 of random bytes), jsonb of random numbers and strings,
# random bytes (bytea, dumped as hex) and random numerics; ~800 bytes of dump a row.
make_mixed() {
  createdb mixed
  local rows=$(( mixed_mb * 1024 * 1024 / 800 ))
  psql -q mixed -c "CREATE TABLE mixed AS SELECT i AS id,
    translate(encode(decode(md5(random()::text) || md5(random()::text) || md5(random()::text)
      || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
      || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex'), 'base64'),
      E'+/=\n', ' ,. ') AS txt,
    jsonb_build_object('id', gen_random_uuid(), 'score', random() * 1e6, 'n', (random() * 1e9)::bigint,
                       'tags', jsonb_build_array(md5(random()::text), (random() * 1e4)::int), 'v', sqrt(random())) AS doc,
    decode(md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text)
           || md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text), 'hex') AS blob,
    (random() * 1e10)::numeric(20, 6) AS amount, (random() * 1e6)::numeric AS ratio, now() - random() * interval '900 days' AS at
    FROM generate_series(1, $rows) i" >/dev/null
}

# Wall seconds and peak RSS (KiB) of a shell command: the agent's own (it reports its VmHWM),
# else the largest process of the command (GNU time).
export LIFEBOAT_REPORT_PEAK_RSS=1
measure() {
  local t0 t1 rss
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/time.out" bash -c "$1" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  rss=$(sed -n 's/.*peak RSS \([0-9]*\) kB.*/\1/p' "$work/last.err" | tail -n1)
  [ -n "$rss" ] || rss=$(tail -n1 "$work/time.out")
  python3 -c "print(f'{$t1-$t0:.2f} $rss')"
}
# Appends one sample "<seconds> <KiB>" of a command to $work/<db>.<label>.
sample() { measure "$3" >> "$work/$1.$2"; }

bench_db() {
  local db=$1
  cat > "$work/$db.policy.yaml" <<YAML
apiVersion: lifeboat.dev/v1alpha1
kind: BackupPolicy
metadata: {name: $db}
spec:
  schedule: "@hourly"
  assets:
    - name: db
      postgres: {host: 127.0.0.1, port: $port, user: lifeboat, sslMode: disable, databases: [$db]}
  retention: {keepLast: 100}
  destination: {volume: {claimName: local}}
YAML
  cat > "$work/$db.target.yaml" <<YAML
asset: db
postgres: {host: 127.0.0.1, port: $port, user: lifeboat, sslMode: disable, database: r_agent, createDatabase: true}
YAML
  local s3job
  s3job=$(printf '{"namespace":"b","policy":"%s","asset":{"name":"db","postgres":{"host":"127.0.0.1","port":%s,"user":"lifeboat","sslMode":"disable","databases":["%s"]}},"destination":{"s3":{"endpoint":"http://127.0.0.1:%s","bucket":"backups","forcePathStyle":true,"credentialsSecret":{"name":"s3"}}},"compression":{"algorithm":"zstd","level":1},"retention":{"keepLast":100}}' "$db" "$port" "$db" "$s3port")
  pg_dump -Fc -Z0 "$db" > "$work/$db.dump"
  pg_dump "$db" > "$work/$db.plain.sql"
  local r
  for r in $(seq 1 "$runs"); do
    echo "bench: $db, run $r of $runs" >&2
    sample "$db" fc "pg_dump -Fc -Z0 $db > /dev/null"
    sample "$db" ag "$agent backup --policy-file $work/$db.policy.yaml --dir $work/backups"
    sample "$db" gz "pg_dump $db | gzip > $work/$db.plain.sql.gz"
    sample "$db" s3 "LIFEBOAT_JOB='$s3job' LIFEBOAT_SECRETS_DIR=$work/secrets LIFEBOAT_TERMINATION_LOG=$work/s3.summary $agent backup"
    dropdb --if-exists r_pgrestore; createdb r_pgrestore
    sample "$db" pr "pg_restore -j2 --no-owner -d r_pgrestore $work/$db.dump"
    dropdb --if-exists r_agent
    sample "$db" ar "$agent restore --execute --asset db --policy-file $work/$db.policy.yaml --target-file $work/$db.target.yaml --dir $work/backups"
    dropdb --if-exists r_agent
    local id
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backupId"])' "$work/s3.summary")
    sample "$db" ars3 "LIFEBOAT_JOB='$(printf '{"namespace":"b","policy":"%s","backupId":"%s","asset":{"name":"db","postgres":{"host":"127.0.0.1","port":%s,"user":"lifeboat","sslMode":"disable","databases":["%s"]}},"target":{"asset":"db","postgres":{"host":"127.0.0.1","port":%s,"user":"lifeboat","sslMode":"disable","database":"r_agent","createDatabase":true}},"location":{"s3":{"endpoint":"http://127.0.0.1:%s","bucket":"backups","forcePathStyle":true,"credentialsSecret":{"name":"s3"}}},"options":{}}' "$db" "$id" "$port" "$db" "$port" "$s3port")' LIFEBOAT_SECRETS_DIR=$work/secrets $agent restore --execute"
    dropdb --if-exists r_psql; createdb r_psql
    sample "$db" ps "psql -q -d r_psql -f $work/$db.plain.sql"
  done
  local size art
  size=$(psql -tA "$db" -c "SELECT pg_database_size('$db')")
  art=$(ls -t "$work"/backups/*/"$db"/*/db."$db".pgdump.zst | head -n1)
  python3 - "$work" "$db" "$size" "$(stat -c %s "$work/$db.dump")" "$(stat -c %s "$art")" "$(stat -c %s "$work/$db.plain.sql.gz")" "$runs" <<'PY'
import statistics, sys
work, db, size, dump, art, gz, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def load(label):
    rows = [l.split() for l in open(f"{work}/{db}.{label}") if l.strip()]
    return [float(t) for t, _ in rows], [int(m) / 1024 for _, m in rows]
def cell(v, d=2):
    return f"{statistics.median(v):.{d}f} ({min(v):.{d}f}–{max(v):.{d}f})"
t, m = {}, {}
for k in ["fc", "gz", "ag", "s3", "pr", "ps", "ar", "ars3"]:
    t[k], m[k] = load(k)
med = {k: statistics.median(v) for k, v in t.items()}
mb = lambda b: f"{b / 1e6:.0f}"
print(f"Database `{db}`: {size / 1e6:.0f} MB (pg_dump -Fc -Z0: {mb(dump)} MB); medians of {runs} runs (min–max).")
print()
print("| Operation | Wall (s) | Peak RSS (MiB) | Output (MB) | Ratio (of medians) |")
print("|---|---|---|---|---|")
rows = [
    ("`pg_dump -Fc -Z0 > /dev/null` (source limit)", "fc", "—", "1.00"),
    ("playbook: `pg_dump \\| gzip > file`", "gz", mb(gz), f"{med['gz'] / med['fc']:.2f}"),
    ("**agent backup to a directory**", "ag", mb(art), f"{med['ag'] / med['fc']:.2f} vs source, {med['ag'] / med['gz']:.2f} vs gzip"),
    ("**agent backup to S3** (rclone serve s3 on loopback)", "s3", "—", f"{med['s3'] / med['ag']:.2f} vs directory"),
    ("`pg_restore -j2` from a local file", "pr", "—", "1.00"),
    ("`psql < plain.sql`", "ps", "—", f"{med['ps'] / med['pr']:.2f}"),
    ("**agent restore from the directory**", "ar", "—", f"{med['ar'] / med['pr']:.2f}"),
    ("**agent restore from S3**", "ars3", "—", f"{med['ars3'] / med['pr']:.2f}"),
]
for name, k, out, ratio in rows:
    print(f"| {name} | {cell(t[k])} | {cell(m[k], 0)} | {out} | {ratio} |")
print()
ok = lambda c: "met" if c else "MISSED"
agent_rss = max(max(m[k]) for k in ["ag", "s3", "ar", "ars3"])
print(f"- `{db}` backup {med['ag'] / med['fc']:.2f} × the source's limit (target ≤ 1.05): {ok(med['ag'] <= 1.05 * med['fc'])}")
print(f"- `{db}` artifact {mb(art)} MB vs gzip's {mb(gz)} MB (target: no larger): {ok(art <= gz)}")
print(f"- `{db}` restore {med['ar'] / med['pr']:.2f} × `pg_restore -j2` (target ≤ 1.10): {ok(med['ar'] <= 1.10 * med['pr'])}")
print(f"- `{db}` agent peak RSS, every path, every run: {agent_rss:.0f} MiB (target ≤ 64): {ok(agent_rss <= 64)}")
print()
PY
}

nproc_=$(nproc)
echo "Agent and PostgreSQL $(pg_dump --version | awk '{print $3}') on loopback (fsync=off); $nproc_ cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
for db in pgbench mixed; do
  [ -n "$only" ] && [ "$only" != "$db" ] && continue
  echo "bench: building $db" >&2
  "make_$db"
  bench_db "$db"
done
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
