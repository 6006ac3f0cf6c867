#!/usr/bin/env bash
# Benchmarks steward-repo against restic, `sqlite3 .backup` and cp on one generated ~1 GiB
# CRM-like SQLite database, in the same run, and writes medians and ratios to
# bench/results.md. Usage: bench/run.sh [--size-mib 1024] [--runs 3] [--work DIR]
# Needs restic, sqlite3 and /usr/bin/time; on Debian/Ubuntu they are installed when missing
# (apt-get, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
[ -x /usr/bin/time ] || missing+=(time)
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
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }
cargo build --release -p steward-repo --example bench
exec python3 bench/run.py "$@"
