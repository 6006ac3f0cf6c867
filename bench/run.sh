#!/usr/bin/env bash
# Benchmarks steward-repo against restic, `sqlite3 .backup` and cp on one generated ~1 GiB
# CRM-like SQLite database, in the same run, and writes medians and ratios to
# bench/results.md. Usage: bench/run.sh [--size-mib 1024] [--runs 3] [--work DIR]
# Needs: restic, sqlite3, /usr/bin/time (Debian: apt-get install -y restic sqlite3 time).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in restic sqlite3 /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y restic sqlite3 time" >&2; exit 1; }
done
cargo build --release -p steward-repo --example bench
exec python3 bench/run.py "$@"
