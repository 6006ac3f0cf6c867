#!/usr/bin/env python3
"""Fleet benchmark (issue #12, point 5): a real `steward serve` (release build) with N small
instances, on the SQLite control plane and on PostgreSQL; see bench/fleet.sh and the
"Fleet: 10,000 instances" section of BENCHMARKS.md.

Per backend, on one fleet created through the REST API:
  create    N sandbox instances with `POST /api/v1/instances`, a few at a time: wall time.
  latency   p50/p99 of `GET /api/v1/instances` (pages of 50 and of 1,000, the first and one
            from the middle by cursor),
            `GET /api/v1/instances/{name}` and the admin center's pages, signed in through the
            web login form; several rounds, one client, keep-alive.
  idle      RSS and CPU of the server over --sample-secs with nothing happening (the
            scheduler's minute tick included), system backups not yet due.
  backups   the server restarted with today's system backup time already passed and a
            spread of 0, so its first scheduler tick queues every instance's daily system
            backup; timed until the last one finished (or, with --backup-max-minutes, until
            that limit, and extrapolated from the measured rate).
  after     the same latency rounds and idle sample after the day's backups, when every
            minute tick walks the whole fleet again.
Continuous capture and restore drills are off in every phase (STEWARD_CONTINUOUS_CAPTURE=false,
STEWARD_RESTORE_DRILL_SCHEDULE=off) unless --capture-idle adds a last idle sample with capture on.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEWARD = os.path.join(ROOT, "target", "release", "steward")
TOKEN = "stw_" + "fleetbench" * 4
USER, PASSWORD = "bench", "fleet-bench-password-1"
LOG = []


def log(*a):
    s = f"[{time.strftime('%H:%M:%S')}] " + " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(xs, p):
    xs = sorted(xs)
    return xs[round((len(xs) - 1) * p)] if xs else float("nan")


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def rm(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signum}")


# ---------------------------------------------------------------- HTTP

class Client:
    """One keep-alive connection; Bearer token or the web session cookie."""

    def __init__(self, port, token=None):
        self.port, self.token, self.cookies = port, token, {}
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        return self.conn

    def request(self, method, path, body=None, form=None):
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in (0, 1):
            try:
                c = self._conn()
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
        for k, v in r.getheaders():
            if k.lower() == "set-cookie":
                name, _, rest = v.partition("=")
                value = rest.split(";", 1)[0]
                if "Max-Age=0" in v or not value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
        return r.status, data, r.getheader("Location")

    def json(self, method, path, body=None, ok=(200, 201, 202)):
        status, data, _ = self.request(method, path, body=body)
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data or b"null")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def sign_in(port):
    """Signs in through the web login form (GET /login for its CSRF cookie, POST /login)."""
    web = Client(port)
    status, page, _ = web.request("GET", "/login")
    m = re.search(rb'name="csrf" value="([0-9a-f]{64})"', page)
    if status != 200 or not m:
        raise RuntimeError(f"GET /login: {status}, no CSRF field")
    status, _, location = web.request("POST", "/login", form={
        "csrf": m.group(1).decode(), "username": USER, "password": PASSWORD})
    if status not in (302, 303) or location != "/instances" or "steward_session" not in web.cookies:
        raise RuntimeError(f"POST /login: {status} → {location}; cookies {list(web.cookies)}")
    return web


# ---------------------------------------------------------------- processes

def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    rss = hwm = threads = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return ticks, rss, hwm, threads


def tree_ticks(root):
    """CPU ticks of a process and its children, living (utime+stime) and reaped
    (cutime+cstime): the whole PostgreSQL cluster when `root` is its postmaster."""
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(d), int(fields[1])
        if pid == root:
            total += sum(int(x) for x in fields[11:15])
        elif ppid == root:
            total += int(fields[11]) + int(fields[12])
    return total


def measure_proc(pid, secs, pg=None):
    """CPU (% of one core) from utime+stime, RSS sampled every second; with `pg`, also the
    CPU of the PostgreSQL cluster over the same time."""
    hz = os.sysconf("SC_CLK_TCK")
    root = pg.postmaster() if pg else None
    p0 = tree_ticks(root) if root else None
    t0 = time.monotonic()
    k0 = proc_sample(pid)[0]
    rss, last, per_sec = [], None, []
    prev = k0
    while time.monotonic() - t0 < secs:
        time.sleep(1)
        last = proc_sample(pid)
        rss.append(last[1])
        per_sec.append((last[0] - prev) / hz * 100)
        prev = last[0]
    wall = time.monotonic() - t0
    out = {"cpu_pct": (last[0] - k0) / hz / wall * 100, "cpu_pct_max_1s": max(per_sec),
           "rss_mib": med(rss) / 1024, "rss_mib_max": max(rss) / 1024,
           "hwm_mib": last[2] / 1024, "threads": last[3], "secs": wall, "load": load()}
    if root:
        out["pg_cpu_pct"] = (tree_ticks(root) - p0) / hz / wall * 100
    return out


def find_pg_bin():
    """initdb's directory: `pg_config --bindir`, the PATH, or /usr/lib/postgresql/*/bin."""
    try:
        d = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        if d and os.path.exists(os.path.join(d, "initdb")):
            return d
    except FileNotFoundError:
        pass
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(os.path.join("/usr/lib/postgresql", v, "bin")
                   for v in os.listdir("/usr/lib/postgresql")) if os.path.isdir("/usr/lib/postgresql") else []
    found = [d for d in found if os.path.exists(os.path.join(d, "initdb"))]
    if not found:
        sys.exit("PostgreSQL's initdb was not found (apt-get install postgresql, or --pg-bin DIR)")
    return found[-1]


class Postgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl), as the `postgres` user when root."""

    def __init__(self, work, bindir, fast):
        self.dir = os.path.join(work, "pg")
        self.data = os.path.join(self.dir, "data")
        self.bindir, self.fast = bindir or find_pg_bin(), fast
        self.port = free_port()
        self.root = os.geteuid() == 0

    def cmd(self, prog, *args):
        c = [os.path.join(self.bindir, prog), *args]
        return ["runuser", "-u", "postgres", "--", *c] if self.root else c

    def start(self):
        rm(self.dir)
        os.makedirs(self.dir)
        if self.root:
            subprocess.run(["chown", "-R", "postgres:postgres", self.dir], check=True)
        subprocess.run(self.cmd("initdb", "-D", self.data, "-U", "steward", "-A", "trust",
                                "-E", "UTF8", "--locale=C"),
                       check=True, stdout=subprocess.DEVNULL)
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        if self.fast:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(self.cmd("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"),
                                "-o", opts, "-w", "start"), check=True, stdout=subprocess.DEVNULL)
        log(f"PostgreSQL on 127.0.0.1:{self.port} ({'fsync off' if self.fast else 'default durability'})")

    def postmaster(self):
        try:
            return int(open(os.path.join(self.data, "postmaster.pid")).readline())
        except (OSError, ValueError):
            return None

    def create_db(self, name):
        subprocess.run(self.cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "steward",
                                name), check=True)
        return f"postgres://steward@127.0.0.1:{self.port}/{name}"

    def db_size(self, name):
        out = subprocess.run(self.cmd("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "steward",
                                      "-At", "-c", f"SELECT pg_database_size('{name}')", "postgres"),
                             capture_output=True, text=True)
        return int(out.stdout.strip() or 0)

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run(self.cmd("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Server:
    def __init__(self, work, backend, database_url, pidfile, steward):
        self.steward = steward
        self.data = os.path.join(work, backend, "data")
        self.logpath = os.path.join(work, backend, "server.log")
        self.backend, self.database_url, self.pidfile = backend, database_url, pidfile
        self.p = None
        self.port = None

    def start(self, **env_extra):
        self.port = free_port()
        env = dict(os.environ, STEWARD_DATA_DIR=self.data, STEWARD_LISTEN=f"127.0.0.1:{self.port}",
                   STEWARD_BOOTSTRAP_TOKEN=TOKEN, STEWARD_SYSTEM_BACKUP_TIME="off",
                   STEWARD_RESTORE_DRILL_SCHEDULE="off", STEWARD_CONTINUOUS_CAPTURE="false",
                   STEWARD_LOG="warn")
        if self.database_url:
            env["STEWARD_DATABASE_URL"] = self.database_url
        env.update({k: str(v) for k, v in env_extra.items()})
        self.env = {k: v for k, v in env.items() if k.startswith("STEWARD_") and k != "STEWARD_BOOTSTRAP_TOKEN"}
        os.makedirs(self.data, exist_ok=True)
        logf = open(self.logpath, "a")
        logf.write(f"\n==== start {datetime.datetime.now(datetime.timezone.utc)} {self.env}\n")
        logf.flush()
        t = time.monotonic()
        self.p = subprocess.Popen([self.steward, "serve"], env=env, stdout=logf, stderr=subprocess.STDOUT,
                                  cwd=self.data, start_new_session=True)
        with open(self.pidfile, "a") as f:
            f.write(f"{self.p.pid}\n")
        api = Client(self.port, TOKEN)
        while True:
            try:
                api.json("GET", "/api/v1/releases")
                break
            except (RuntimeError, ConnectionError, OSError):
                api.close()
                if self.p.poll() is not None or time.monotonic() - t > 600:
                    raise RuntimeError(f"steward serve did not start: see {self.logpath}")
                time.sleep(0.2)
        self.started_secs = time.monotonic() - t
        log(f"{self.backend}: steward serve pid {self.p.pid} on port {self.port}, "
            f"up in {self.started_secs:.1f} s ({' '.join(f'{k}={v}' for k, v in env_extra.items())})")
        return api

    def stop(self):
        if self.p is None:
            return
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p = None

    def log_errors(self):
        try:
            return sum(1 for line in open(self.logpath, errors="replace") if " ERROR " in line)
        except FileNotFoundError:
            return 0


# ---------------------------------------------------------------- phases

def create_fleet(api_port, names, threads):
    """Creates the instances, `threads` requests in flight; per-request latencies."""
    lat, errors = [], []
    lock = threading.Lock()
    done = [0]
    t0 = time.monotonic()

    def work(chunk):
        c = Client(api_port, TOKEN)
        for n in chunk:
            t = time.perf_counter()
            try:
                status, data, _ = c.request("POST", "/api/v1/instances", body={"name": n, "type": "sandbox"})
                if status != 201:
                    raise RuntimeError(f"{status} {data[:200]!r}")
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{n}: {e}")
                continue
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                done[0] += 1
                if done[0] % 1000 == 0:
                    log(f"  created {done[0]} in {time.monotonic() - t0:.0f} s "
                        f"(last 1000: p50 {pct(lat[-1000:], 0.5) * 1000:.0f} ms; load {load()})")
        c.close()

    ths = [threading.Thread(target=work, args=(names[i::threads],), daemon=True) for i in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    wall = time.monotonic() - t0
    first = lat[:1000]
    last = lat[-1000:]
    return {"count": len(lat), "errors": len(errors), "error_sample": errors[:3], "secs": wall,
            "per_sec": len(lat) / wall if wall else 0, "threads": threads,
            "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
            "first1000_p50_ms": pct(first, 0.5) * 1000, "last1000_p50_ms": pct(last, 0.5) * 1000}


def endpoints(names):
    one = names[len(names) // 2]
    return [
        ("api", "GET /api/v1/instances?limit=50", "/api/v1/instances?limit=50"),
        ("api", "GET /api/v1/instances?limit=50&after={middle}", f"/api/v1/instances?limit=50&after={one}"),
        ("api", "GET /api/v1/instances?limit=1000", "/api/v1/instances?limit=1000"),
        ("api", "GET /api/v1/instances/{name}", f"/api/v1/instances/{one}"),
        ("api", "GET /api/v1/jobs", "/api/v1/jobs"),
        ("web", "/ (redirect)", "/"),
        ("web", "/instances", "/instances"),
        ("web", "/instances?page={last}", f"/instances?page={max(1, (len(names) + 49) // 50)}"),
        ("web", "/instances?q={name}", f"/instances?q={one}"),
        ("web", "/instances/{name}", f"/instances/{one}"),
        ("web", "/backups", "/backups"),
        ("web", "/updates", "/updates"),
        ("web", "/workitems", "/workitems"),
        ("web", "/drills", "/drills"),
        ("web", "/notifications", "/notifications"),
        ("web", "/audit", "/audit"),
    ]


def latency_rounds(port, names, rounds, requests, budget):
    """`rounds` rounds; in each, every endpoint gets one warm-up request, then up to
    `requests` sequential requests, stopping early once `budget` seconds are spent (warm-up
    included) and at least 3 were measured."""
    api = Client(port, TOKEN)
    web = sign_in(port)
    out = {}
    for r in range(rounds):
        for kind, label, path in endpoints(names):
            c = api if kind == "api" else web
            expect = 303 if path == "/" else 200
            lat, size = [], 0
            t0 = time.monotonic()
            for i in range(1 + requests):
                t = time.perf_counter()
                status, data, _ = c.request("GET", path)
                dt = time.perf_counter() - t
                if status != expect:
                    raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
                size = len(data)
                if i >= 1:
                    lat.append(dt * 1000)
                if time.monotonic() - t0 > budget and len(lat) >= 3:
                    break
            o = out.setdefault(label, {"rounds": [], "bytes": size, "kind": kind})
            o["rounds"].append({"n": len(lat), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                                "max": max(lat), "mean": statistics.fmean(lat)})
        log(f"  round {r + 1}/{rounds}: " + "; ".join(
            f"{k} {v['rounds'][-1]['p50']:.1f}/{v['rounds'][-1]['p99']:.1f}" for k, v in out.items())
            + f" ms (load {load()})")
    for v in out.values():
        v["p50"] = med([x["p50"] for x in v["rounds"]])
        v["p99"] = med([x["p99"] for x in v["rounds"]])
        v["n"] = sum(x["n"] for x in v["rounds"])
    api.close()
    web.close()
    return out


def wait_for_backups(srv, api, n, first_id, max_minutes, poll):
    """Waits until jobs first_id .. first_id+n-1 (the scheduler's system backups) finished."""
    t0 = time.monotonic()
    hz = os.sysconf("SC_CLK_TCK")
    k0 = proc_sample(srv.p.pid)[0]
    rss_max = 0
    last_log = 0
    progress = []
    queued_all_at = None
    max_seen = None
    while True:
        running = api.json("GET", "/api/v1/jobs?state=running")
        queued = api.json("GET", "/api/v1/jobs?state=queued")
        newest = api.json("GET", "/api/v1/jobs")  # the newest 500 jobs, whatever their state
        el = time.monotonic() - t0
        ids = [j["id"] for j in running + queued if j["kind"] == "backup" and j["id"] >= first_id]
        seen = [j["id"] for j in newest + running + queued if j["kind"] == "backup" and j["id"] >= first_id]
        if seen:
            max_seen = max(max_seen or 0, max(seen))
        if max_seen is not None and max_seen >= first_id + n - 1 and queued_all_at is None:
            queued_all_at = el
        # Jobs run oldest first: those before the oldest open one are done.
        done = (min(ids) - first_id) if ids else (max_seen - first_id + 1 if max_seen else 0)
        rss_max = max(rss_max, proc_sample(srv.p.pid)[1])
        progress.append((el, done))
        if done >= n:
            break
        if max_seen is None and el > 900:
            raise RuntimeError("no system backup was queued within 15 minutes")
        if el - last_log >= 60:
            last_log = el
            log(f"  backups: {el / 60:.1f} min, about {done} done, newest queued job "
                f"{max_seen} (first {first_id}); load {load()}")
        if max_minutes and el > max_minutes * 60:
            log(f"  stopping the wait after {max_minutes} min (extrapolating)")
            break
        time.sleep(poll)
    cpu = (proc_sample(srv.p.pid)[0] - k0) / hz / (time.monotonic() - t0) * 100
    return {"wall_secs": time.monotonic() - t0, "queued_all_secs": queued_all_at, "progress": progress,
            "complete": done >= n, "cpu_pct": cpu, "rss_mib_max": rss_max / 1024}


def backup_result(api, first_id, n, waited):
    """Times from the jobs themselves: first created/started, last finished, failures, and
    per-job durations of the newest 500 succeeded."""
    first = api.json("GET", f"/api/v1/jobs/{first_id}")
    failed = [j for j in api.json("GET", "/api/v1/jobs?state=failed") if j["id"] >= first_id]
    succ = [j for j in api.json("GET", "/api/v1/jobs?state=succeeded") if j["id"] >= first_id]
    durs = [(parse_time(j["finished_at"]) - parse_time(j["started_at"])).total_seconds() * 1000
            for j in succ if j["started_at"] and j["finished_at"]]
    out = {"first_id": first_id, "first_created": first["created_at"], "first_started": first["started_at"],
           "failed": len(failed), "failed_sample": [j.get("last_error") for j in failed[:3]],
           "job_ms_p50": pct(durs, 0.5), "job_ms_p99": pct(durs, 0.99), "job_sample": len(durs)}
    c0 = parse_time(first["created_at"])
    s0 = parse_time(first["started_at"]) if first["started_at"] else c0
    if waited["complete"]:
        last = api.json("GET", f"/api/v1/jobs/{first_id + n - 1}")
        if last["kind"] != "backup":
            raise RuntimeError(f"job {first_id + n - 1} is a {last['kind']} job, not a backup")
        end = parse_time(last["finished_at"])
        out.update(done=n, last_finished=last["finished_at"], total_secs=(end - c0).total_seconds(),
                   run_secs=(end - s0).total_seconds(), extrapolated=False)
    else:
        # Jobs finished so far and the rate over the last half of the wait.
        prog = waited["progress"]
        done = prog[-1][1] if prog else 0
        half = [p for p in prog if p[0] >= prog[-1][0] / 2] if prog else []
        rate = ((half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0])
                if len(half) > 1 and half[-1][0] > half[0][0] else 0)
        elapsed = waited["wall_secs"]
        out.update(done=done, rate_per_sec=rate, extrapolated=True,
                   total_secs=elapsed + (n - done) / rate if rate else float("inf"),
                   run_secs=None)
    return out


def run_backend(args, backend, pg, pidfile):
    work = args.work
    rm(os.path.join(work, backend))
    url = pg.create_db(f"fleet_{int(time.time())}") if backend == "postgres" else None
    srv = Server(work, backend, url, pidfile, args.steward)
    res = {"backend": backend, "instances": args.instances, "load_start": load()}
    names = [f"fleet-{i:05d}" for i in range(args.instances)]
    try:
        api = srv.start()
        res["empty"] = measure_proc(srv.p.pid, 5)
        api.json("POST", "/api/v1/users", {"username": USER, "role": "system_administrator",
                                           "password": PASSWORD})
        log(f"{backend}: creating {args.instances} instances, {args.threads} requests at a time "
            f"(load {load()})")
        res["create"] = create_fleet(srv.port, names, args.threads)
        c = res["create"]
        log(f"{backend}: created {c['count']} in {c['secs']:.0f} s ({c['per_sec']:.1f}/s, "
            f"p50 {c['p50_ms']:.0f} ms, p99 {c['p99_ms']:.0f} ms), {c['errors']} errors {c['error_sample']}")
        if c["errors"]:
            raise RuntimeError(f"{c['errors']} instances were not created: {c['error_sample']}")
        res["disk_instances_mib"] = du(os.path.join(srv.data, "instances")) / 2**20
        # Restart so the measured process holds only what serving a fleet of N needs.
        srv.stop()
        api = srv.start()
        time.sleep(5)
        log(f"{backend}: latency, {args.rounds} rounds (load {load()})")
        res["latency"] = latency_rounds(srv.port, names, args.rounds, args.requests, args.budget)
        time.sleep(5)
        log(f"{backend}: idle sample {args.sample_secs} s (load {load()})")
        res["idle"] = measure_proc(srv.p.pid, args.sample_secs, pg if url else None)
        log(f"{backend}: idle {res['idle']}")
        if args.skip_backups:
            return res
        # System backups: restart with today's backup time already passed and no spread: the
        # first scheduler tick (at start) queues every instance's system backup.
        before = api.json("GET", "/api/v1/jobs")
        first_id = (max(j["id"] for j in before) if before else 0) + 1
        srv.stop()
        now = datetime.datetime.now(datetime.timezone.utc)
        if now.hour == 23 and now.minute >= 58:
            time.sleep((60 - now.minute) * 60 - now.second + 5)
            now = datetime.datetime.now(datetime.timezone.utc)
        at = now.strftime("%H:%M")
        res["backup_env"] = {"STEWARD_SYSTEM_BACKUP_TIME": at, "STEWARD_SYSTEM_BACKUP_SPREAD_MINUTES": 0}
        res["load_backups_start"] = load()
        api = srv.start(STEWARD_SYSTEM_BACKUP_TIME=at, STEWARD_SYSTEM_BACKUP_SPREAD_MINUTES=0)
        waited = wait_for_backups(srv, api, args.instances, first_id, args.backup_max_minutes, args.poll)
        res["backups"] = backup_result(api, first_id, args.instances, waited)
        res["backups"].update({k: v for k, v in waited.items() if k != "progress"})
        res["load_backups_end"] = load()
        b = res["backups"]
        log(f"{backend}: system backups {'extrapolated ' if b['extrapolated'] else ''}"
            f"{b['total_secs'] / 60:.1f} min for {args.instances} ({b['done']} done, {b['failed']} failed; "
            f"job p50 {b['job_ms_p50']:.0f} ms p99 {b['job_ms_p99']:.0f} ms; server CPU {b['cpu_pct']:.0f}%)")
        res["disk_backups_mib"] = du(os.path.join(srv.data, "backups")) / 2**20
        if b["extrapolated"]:
            return res
        time.sleep(5)
        log(f"{backend}: latency after the backups (load {load()})")
        res["latency_after"] = latency_rounds(srv.port, names, args.rounds, args.requests, args.budget)
        log(f"{backend}: idle sample after the backups, {args.sample_secs} s (load {load()})")
        res["idle_after"] = measure_proc(srv.p.pid, args.sample_secs, pg if url else None)
        log(f"{backend}: idle after {res['idle_after']}")
        # The first minute after the day's backups records what they changed (each instance's
        # storage, the repository's total) once; a second sample shows the steady state.
        log(f"{backend}: idle sample, settled, {args.sample_secs} s (load {load()})")
        res["idle_settled"] = measure_proc(srv.p.pid, args.sample_secs, pg if url else None)
        log(f"{backend}: idle settled {res['idle_settled']}")
        if args.capture_idle:
            srv.stop()
            api = srv.start(STEWARD_CONTINUOUS_CAPTURE="true")
            log(f"{backend}: capture on; waiting {args.capture_settle} s before sampling")
            time.sleep(args.capture_settle)
            res["idle_capture"] = measure_proc(srv.p.pid, args.sample_secs, pg if url else None)
            log(f"{backend}: idle with capture {res['idle_capture']}")
        if backend == "postgres":
            res["pg_db_mib"] = pg.db_size(url.rsplit("/", 1)[1]) / 2**20
        else:
            res["store_mib"] = sum(os.path.getsize(os.path.join(srv.data, f))
                                   for f in os.listdir(srv.data) if f.startswith("steward.db")) / 2**20
        return res
    finally:
        res["server_log_errors"] = srv.log_errors()
        res["load_end"] = load()
        srv.stop()
        if not args.keep:
            rm(srv.data)


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except FileNotFoundError:
                pass
    return total


# ---------------------------------------------------------------- report

def ratio(a, b):
    return f"{a / b:.2f}" if a == a and b == b and b else "—"


def report(args, results, started, version):
    path = args.out
    lines = []
    w = lines.append
    w(f"## Run {started:%Y-%m-%d %H:%M} UTC: {args.instances} instances")
    w("")
    w(f"`bench/fleet.py {' '.join(sys.argv[1:])}` at {version}; {os.cpu_count()} cores; continuous "
      f"capture and restore drills off (`STEWARD_CONTINUOUS_CAPTURE=false`, "
      f"`STEWARD_RESTORE_DRILL_SCHEDULE=off`) unless a row says otherwise; PostgreSQL "
      f"{'with fsync off' if args.pg_fast else 'with its default durability (fsync on)'}. Latency: "
      f"medians over {args.rounds} rounds of each round's p50 / p99 (ms), one client, keep-alive.")
    w("")
    by = {r["backend"]: r for r in results}
    bs = [b for b in ("sqlite", "postgres") if b in by]
    two = len(bs) == 2
    w("| | " + " | ".join(bs) + (" | PostgreSQL / SQLite |" if two else " |"))
    w("|---|" + "---:|" * (len(bs) + two))

    def num(v, fmt):
        return fmt.format(v) if isinstance(v, (int, float)) and v == v else "—"

    def row(label, get, fmt="{:.1f}", rat=True):
        """`get` returns one number or a tuple of numbers (shown as a / b)."""
        vals = []
        for b in bs:
            try:
                v = get(by[b])
            except (KeyError, TypeError, IndexError, AttributeError):
                v = None
            vals.append(v if isinstance(v, tuple) else (v,))
        width = max(len(v) for v in vals)
        vals = [v if len(v) == width else (None,) * width for v in vals]
        cells = [" / ".join(num(x, fmt) for x in v) for v in vals]
        if two:
            cells.append(" / ".join(ratio(x, y) if isinstance(x, (int, float)) and isinstance(y, (int, float))
                                    else "—" for x, y in zip(vals[1], vals[0])) if rat else "")
        w(f"| {label} | " + " | ".join(cells) + " |")

    row("load average at start / end (1 min)",
        lambda r: (float(r["load_start"].split()[0]), float(r["load_end"].split()[0])), "{:.2f}", False)
    row("create: wall time (s)", lambda r: r["create"]["secs"], "{:.0f}")
    row("create: instances/s", lambda r: r["create"]["per_sec"])
    row("create: request p50 / p99 (ms)", lambda r: (r["create"]["p50_ms"], r["create"]["p99_ms"]), "{:.0f}")
    row("create: request p50, first / last 1000 (ms)",
        lambda r: (r["create"]["first1000_p50_ms"], r["create"]["last1000_p50_ms"]), "{:.0f}")
    for phase, key in (("", "latency"), ("after backups: ", "latency_after")):
        labels = []
        for b in bs:
            for k in by[b].get(key, {}):
                if k not in labels:
                    labels.append(k)
        for k in labels:
            row(f"{phase}`{k}` p50 / p99 (ms)",
                lambda r, k=k, key=key: (r[key][k]["p50"], r[key][k]["p99"]))
        if labels:
            row(f"{phase}body size (KiB): " + ", ".join(f"`{k}`" for k in labels[:1]) + " … (in order)",
                lambda r, key=key: tuple(r[key][k]["bytes"] / 1024 for k in labels), "{:.0f}", False)
    for phase, key in (("idle", "idle"), ("idle, first minute after backups", "idle_after"),
                       ("idle after backups, settled (the next minute)", "idle_settled"),
                       ("idle after backups, capture on", "idle_capture")):
        row(f"{phase}: CPU (% of a core) / busiest second (%)",
            lambda r, key=key: (r[key]["cpu_pct"], r[key]["cpu_pct_max_1s"]), "{:.2f}")
        row(f"{phase}: RSS median (MiB)", lambda r, key=key: r[key]["rss_mib"], "{:.0f}")
        if "postgres" in by and key in by["postgres"]:
            row(f"{phase}: PostgreSQL's own CPU (% of a core)",
                lambda r, key=key: r[key].get("pg_cpu_pct"), "{:.2f}", False)
    row("system backups: all done after (min; from the first job's creation)",
        lambda r: r["backups"]["total_secs"] / 60)
    row("system backups: extrapolated (1 = yes)", lambda r: float(r["backups"]["extrapolated"]), "{:.0f}", False)
    row("system backups: done / failed", lambda r: (r["backups"]["done"], r["backups"]["failed"]), "{:.0f}", False)
    row("system backups: all queued after (s)", lambda r: r["backups"]["queued_all_secs"], "{:.0f}")
    row("system backup job p50 / p99 (ms, newest 500)",
        lambda r: (r["backups"]["job_ms_p50"], r["backups"]["job_ms_p99"]), "{:.0f}")
    row("server CPU during backups (% of a core) / RSS max (MiB)",
        lambda r: (r["backups"]["cpu_pct"], r["backups"]["rss_mib_max"]), "{:.0f}")
    row("instances on disk / backup repository (MiB)",
        lambda r: (r["disk_instances_mib"], r["disk_backups_mib"]), "{:.0f}", False)
    row("control-plane store (MiB)", lambda r: r.get("store_mib", r.get("pg_db_mib")), "{:.0f}")
    row("ERROR lines in the server log", lambda r: r["server_log_errors"], "{:.0f}", False)
    w("")
    w("Per-round p50/p99 (ms, n = measured requests):")
    w("")
    for b in bs:
        for key in ("latency", "latency_after"):
            for k, v in by[b].get(key, {}).items():
                w(f"- {b} {key} `{k}`: " + ", ".join(f"{x['p50']:.1f}/{x['p99']:.1f} (n={x['n']})"
                                                    for x in v["rounds"]))
    w("")
    w("<details><summary>log</summary>")
    w("")
    w("```")
    lines.extend(LOG)
    w("```")
    w("</details>")
    w("")
    text = "\n".join(lines) + "\n"
    head = ("# Fleet benchmark results\n\nWritten by `bench/fleet.sh` (`bench/fleet.py`); the newest "
            "run first. See the \"Fleet: 10,000 instances\" section of BENCHMARKS.md.\n\n")
    old = ""
    if os.path.exists(path):
        old = open(path).read()
        old = old[len(head):] if old.startswith(head) else old
    with open(path, "w") as f:
        f.write(head + text + ("\n" + old if old else ""))
    log(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--threads", type=int, default=4, help="create requests in flight")
    ap.add_argument("--rounds", type=int, default=5, help="latency rounds (medians of their p50/p99)")
    ap.add_argument("--requests", type=int, default=100, help="requests per endpoint per round")
    ap.add_argument("--budget", type=float, default=20, help="seconds per endpoint per round, at most")
    ap.add_argument("--sample-secs", type=int, default=60)
    ap.add_argument("--skip-backups", action="store_true")
    ap.add_argument("--backup-max-minutes", type=float, default=0,
                    help="stop waiting for the system backups after this long and extrapolate (0: wait)")
    ap.add_argument("--poll", type=float, default=5)
    ap.add_argument("--capture-idle", action="store_true", help="also sample idle CPU with capture on")
    ap.add_argument("--capture-settle", type=int, default=120)
    ap.add_argument("--pg-fast", action="store_true", help="PostgreSQL with fsync off")
    ap.add_argument("--pg-bin", default=None)
    ap.add_argument("--steward", default=STEWARD, help="the steward binary (release build)")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "fleet-bench"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "fleet-results.md"))
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    os.makedirs(args.work, exist_ok=True)
    pidfile = os.path.join(args.work, "steward.pids")
    started = datetime.datetime.now(datetime.timezone.utc)
    version = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h"],
                             capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "crates"],
                           capture_output=True, text=True).stdout.split("\n")
    dirty = [d for d in dirty if d.strip()]
    if dirty:
        version += f" with {len(dirty)} uncommitted files under crates/ (others' work in progress)"
    log(f"fleet benchmark: {args.instances} instances, backends {args.backends}, load {load()}, "
        f"open files limit {' '.join(open('/proc/self/limits').read().split('Max open files')[1].split()[:2])}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    pg = None
    results = []
    try:
        if "postgres" in backends:
            pg = Postgres(args.work, args.pg_bin, args.pg_fast)
            pg.start()
        for b in backends:
            results.append(run_backend(args, b, pg, pidfile))
            with open(os.path.join(args.work, "results.json"), "w") as f:
                json.dump(results, f, indent=1, default=str)
    except (Interrupted, KeyboardInterrupt) as e:
        log(f"interrupted: {e}")
        raise SystemExit(130)
    finally:
        if pg:
            pg.stop()
            if not args.keep:
                rm(pg.dir)
        if results:
            report(args, results, started, version)


if __name__ == "__main__":
    main()
