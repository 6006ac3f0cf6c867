#!/usr/bin/env bash
# Fleet benchmark (issue #12, point 5): a real `steward serve` (release build) with 10,000
# small instances created through the REST API, on the SQLite control plane and on a
# throwaway PostgreSQL (initdb/pg_ctl, stopped at the end): p50/p99 of GET /api/v1/instances
# and of the admin center's pages, the time for every instance's daily system backup, RSS and
# idle CPU. Appends to bench/fleet-results.md. Usage:
#   bench/fleet.sh [--instances 10000] [--backends sqlite,postgres] [--rounds 5]
#                  [--backup-max-minutes M] [--capture-idle] ...   (bench/fleet.py --help)
# Data under target/fleet-bench (removed afterwards unless --keep). PostgreSQL comes from
# apt-get when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
work="$PWD/target/fleet-bench"
prev=
for a in "$@"; do
  case "$prev" in --work) work=$(realpath -m "$a") ;; esac
  case "$a" in --work=*) work=$(realpath -m "${a#--work=}") ;; esac
  prev=$a
done
missing=()
command -v python3 >/dev/null || missing+=(python3)
pg_found() {
  command -v initdb >/dev/null && return 0
  command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
pg_found || missing+=(postgresql)
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
cargo build --release -p steward
# A private copy, so a rebuild by someone else during the run cannot change the binary
# between the server's restarts.
mkdir -p "$work/bin"
cp target/release/steward "$work/bin/steward"
# The server keeps a few descriptors per instance open while it works on it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Whatever happens to the driver, no server outlives the run: the steward processes it
# started (their ids are in $work/steward.pids) and the PostgreSQL cluster in $work/pg.
cleanup() {
  if [ -f "$work/steward.pids" ]; then
    while read -r pid; do
      if [ -n "$pid" ] && grep -qs 'steward' "/proc/$pid/cmdline"; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done <"$work/steward.pids"
    rm -f "$work/steward.pids"
  fi
  if [ -f "$work/pg/data/postmaster.pid" ]; then
    bin=$(python3 -B -c 'import sys; sys.path.insert(0, "bench"); import fleet; print(fleet.find_pg_bin())')
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    else
      "$bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
python3 bench/fleet.py --steward "$work/bin/steward" --work "$work" "$@" &
driver=$!
trap 'kill -TERM $driver 2>/dev/null; wait $driver; exit 130' INT TERM HUP
wait $driver
