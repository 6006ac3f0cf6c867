#!/usr/bin/env python3
"""Runs the backup benchmark; see bench/run.sh and BENCHMARKS.md."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN") or os.path.join(ROOT, "target", "release", "examples", "bench")
ENV = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR="/nonexistent-restic-cache")
DRILL = "drill (hash + integrity_check + row counts, 1 thread)"
DEFAULT = "steward default (drill-proven: hash only)"
CHECK_NOW = "steward with integrity_check now"


def du(path):
    total = 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    for d, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(d, f))
    return total


def measure(cmd, cwd=None, env=None):
    """Wall seconds, peak RSS (KiB), CPU percent and stdout of one command."""
    tf = os.path.join(WORK, "time.out")
    full = ["/usr/bin/time", "-f", "%M %P", "-o", tf] + cmd
    t = time.monotonic()
    p = subprocess.run(full, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    secs = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    rss, cpu = open(tf).read().split()[-2:]
    return {"secs": secs, "rss_kib": int(rss), "cpu_pct": int(cpu.rstrip("%") or 0), "out": p.stdout}


def sh(cmd):
    return measure(["sh", "-c", cmd])


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def main():
    global WORK
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.01)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "steward-repo-bench"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.md"))
    args = ap.parse_args()
    WORK = args.work
    global LOAD_START
    LOAD_START = " ".join(f"{x:.2f}" for x in os.getloadavg())
    os.makedirs(WORK, exist_ok=True)
    base = os.path.join(WORK, f"base-{args.size_mib}.db")
    if not os.path.exists(base):
        print("generating", base, flush=True)
        out = subprocess.run([BIN, "gen", base + ".tmp", str(args.size_mib)], check=True,
                             capture_output=True, text=True).stdout
        print(out.strip())
        os.rename(base + ".tmp", base)
    db_bytes = os.path.getsize(base)
    restic_version = subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
    sqlite_version = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True).stdout.split()[0]

    R = {}  # (phase, tool) -> list of dicts

    def rec(phase, tool, m, stored=None):
        m = dict(m)
        m.pop("out", None)
        if stored is not None:
            m["bytes"] = stored
        R.setdefault((phase, tool), []).append(m)
        print(f"  {phase:12} {tool:22} {m['secs']:7.2f}s rss {m['rss_kib']/1024:7.1f} MiB "
              f"cpu {m['cpu_pct']:3}%" + (f" bytes {stored/2**20:9.1f} MiB" if stored is not None else ""),
              flush=True)

    changed = []
    row_count_ms = []  # time each steward backup spent counting rows (in its read transaction)
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", flush=True)
        d = os.path.join(WORK, "run")
        rm(d)
        os.makedirs(d)
        work = os.path.join(d, "work.db")
        shutil.copyfile(base, work)
        rs, rr = os.path.join(d, "steward-repo"), os.path.join(d, "restic-repo")
        subprocess.run([BIN, "init", rs], check=True)
        subprocess.run(["restic", "init", "-q", "--repository-version", "2", "-r", rr], env=ENV,
                       check=True, capture_output=True)
        os.sync()

        # Full backups.
        m = measure([BIN, "backup", rs, work])
        row_count_ms.append(json.loads(m["out"])["row_count_ms"])
        rec("full", "steward", m, du(rs))
        rec("full", "restic", measure(["restic", "-q", "-r", rr, "backup", work]), du(rr))
        rec("full", "sqlite3 .backup", measure(["sqlite3", work, f".backup '{d}/sq.db'"]), du(f"{d}/sq.db"))
        rec("full", "cp", measure(["cp", work, f"{d}/cp.db"]), du(f"{d}/cp.db"))
        rec("full", "cp+sync", sh(f"cp {work} {d}/cps.db && sync {d}/cps.db"), du(f"{d}/cps.db"))
        for f in ("sq.db", "cp.db", "cps.db"):
            rm(os.path.join(d, f))

        # Change ~1% of the pages at random, the same change for every tool.
        m = json.loads(subprocess.run([BIN, "mutate", work, str(args.fraction), str(run + 1)],
                                      check=True, capture_output=True, text=True).stdout)
        changed.append(m["fraction"])
        print(f"  changed {m['changed_pages']} of {m['pages']} pages ({m['fraction']:.2%})")

        # Incremental backups: what each tool adds.
        before = du(rs)
        m = measure([BIN, "backup", rs, work])
        row_count_ms.append(json.loads(m["out"])["row_count_ms"])
        rec("incremental", "steward", m, du(rs) - before)
        before = du(rr)
        rec("incremental", "restic", measure(["restic", "-q", "-r", rr, "backup", work]), du(rr) - before)
        rec("incremental", "sqlite3 .backup", measure(["sqlite3", work, f".backup '{d}/sq.db'"]), du(f"{d}/sq.db"))
        rm(f"{d}/sq.db")

        # A restore drill of the incremental backup: restore into a scratch file, whole-file
        # hash, PRAGMA integrity_check, row counts against the backup's; one thread. It
        # records the proof that lets the default restore below skip integrity_check.
        scratch = os.path.join(d, "drill-scratch")
        m = measure([BIN, "drill", rs, scratch])
        dr = json.loads(m["out"])
        if not dr["passed"]:
            sys.exit(f"the drill failed: {dr}")
        rec("drill", DRILL, m)
        rm(scratch)

        # Restores of the incremental backup into a new file.
        t1 = os.path.join(d, "r-steward.db")
        m = measure([BIN, "restore", rs, t1, "--check-now"])
        if json.loads(m["out"])["integrity"] != "checked_now":
            sys.exit(f"expected integrity_check now: {m['out']}")
        rec("restore", CHECK_NOW, m)
        if subprocess.run(["cmp", "-s", t1, work]).returncode != 0:
            sys.exit("steward restore differs from the source")
        rm(t1)
        m = measure([BIN, "restore", rs, t1])
        if json.loads(m["out"])["integrity"] != "proven_by_drill":
            sys.exit(f"expected a drill-proven restore: {m['out']}")
        rec("restore", DEFAULT, m)
        if subprocess.run(["cmp", "-s", t1, work]).returncode != 0:
            sys.exit("steward restore differs from the source")
        rm(t1)
        rt = os.path.join(d, "r-restic")
        rec("restore", "restic", measure(["restic", "-q", "-r", rr, "restore", "latest", "--target", rt]))
        rm(rt)
        rec("restore", "cp", measure(["cp", work, f"{d}/r-cp.db"]))
        rm(f"{d}/r-cp.db")
        rec("restore", "cp+sync", sh(f"cp {work} {d}/r-cps.db && sync {d}/r-cps.db"))
        rm(f"{d}/r-cps.db")

    # Writer stall: commit latency of a writer alone, then during a full backup.
    d = os.path.join(WORK, "run")
    rm(os.path.join(d, "stall-repo"))
    subprocess.run([BIN, "init", os.path.join(d, "stall-repo")], check=True)
    stall = json.loads(subprocess.run([BIN, "stall", os.path.join(d, "stall-repo"), os.path.join(d, "work.db")],
                                      check=True, capture_output=True, text=True).stdout)
    rm(d)

    def med(phase, tool, key):
        return statistics.median(x[key] for x in R[(phase, tool)])

    lines = []
    w = lines.append
    w(f"Database: {db_bytes / 2**20:.0f} MiB, page size 4096, CRM-like (accounts, contacts, activities; 2 indexes).")
    w(f"Runs: {args.runs}; medians. Pages changed for the incremental: median {statistics.median(changed):.2%}.")
    w(f"Tools: steward-repo (zstd level 2), {restic_version.split(' compiled')[0]} (repository v2, compression auto), sqlite3 {sqlite_version}, cp.")
    w(f"Machine: {os.cpu_count()} cores; page cache warm for every tool. Load average at the start: "
      f"{LOAD_START}, at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    w("")
    w("| phase | tool | time (s) | stored (MiB) | peak RSS (MiB) | CPU % |")
    w("|---|---|---:|---:|---:|---:|")
    for (phase, tool) in R:
        b = f"{med(phase, tool, 'bytes') / 2**20:.1f}" if "bytes" in R[(phase, tool)][0] else ""
        w(f"| {phase} | {tool} | {med(phase, tool, 'secs'):.2f} | {b} | "
          f"{med(phase, tool, 'rss_kib') / 1024:.0f} | {med(phase, tool, 'cpu_pct'):.0f} |")
    w("")
    ratios = [
        ("full backup time / restic", med("full", "steward", "secs") / med("full", "restic", "secs"), "<= 0.5"),
        ("full backup bytes / restic", med("full", "steward", "bytes") / med("full", "restic", "bytes"), "<= 1.05"),
        ("incremental time / restic", med("incremental", "steward", "secs") / med("incremental", "restic", "secs"), "<= 0.2"),
        ("incremental bytes added / restic", med("incremental", "steward", "bytes") / med("incremental", "restic", "bytes"), "<= 0.05"),
        ("default restore time / restic", med("restore", DEFAULT, "secs") / med("restore", "restic", "secs"), "<= 0.5"),
        ("default restore time / cp+sync", med("restore", DEFAULT, "secs") / med("restore", "cp+sync", "secs"), "<= 2"),
        ("default restore time / cp", med("restore", DEFAULT, "secs") / med("restore", "cp", "secs"), "<= 1.5 (older target)"),
        ("restore with integrity_check now / restic", med("restore", CHECK_NOW, "secs") / med("restore", "restic", "secs"), ""),
        ("drill time / restic restore", med("drill", DRILL, "secs") / med("restore", "restic", "secs"), ""),
        ("full backup time / sqlite3 .backup", med("full", "steward", "secs") / med("full", "sqlite3 .backup", "secs"), ""),
        ("restic incremental bytes / database", med("incremental", "restic", "bytes") / db_bytes, ""),
    ]
    peak = max(max(x["rss_kib"] for x in R[(p, t)]) for (p, t) in R
               if t.startswith("steward") or t == DRILL) / 1024
    w("| ratio (medians) | value | target |")
    w("|---|---:|---|")
    for name, v, target in ratios:
        w(f"| {name} | {v:.3f} | {target} |")
    w(f"| steward peak RSS, any phase (MiB) | {peak:.0f} | < 256 |")
    w("")
    w(f"Counting rows per table inside each steward backup's read transaction took a median "
      f"{statistics.median(row_count_ms):.0f} ms (min {min(row_count_ms):.0f}, max {max(row_count_ms):.0f}).")
    w("")
    w("Writer stall (one writer committing small transactions, WAL, synchronous=NORMAL):")
    w(f"alone {stall['idle_commits_per_s']:.0f} commits/s, p99 {stall['idle_p99_ms']:.2f} ms, max {stall['idle_max_ms']:.2f} ms; "
      f"during a {stall['backup_secs']:.1f} s full backup {stall['backup_commits_per_s']:.0f} commits/s, "
      f"p99 {stall['backup_p99_ms']:.2f} ms, max {stall['backup_max_ms']:.2f} ms.")
    text = "\n".join(lines) + "\n"
    open(args.out, "w").write(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
