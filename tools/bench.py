#!/usr/bin/env python3
"""The server benchmark of docs/BENCHMARKS.md: starts one kes server per binary given
(fs keystore, throw-away PKI, 127.0.0.1 only) and measures them side by side, each
measurement interleaved across the binaries and repeated RUNS times; prints medians.
Besides rates and latencies it prints the CPU time per request of the server
(/proc/PID/stat) and of the load generator (rusage of finished children).

Usage:
    tools/bench.py [KES_BINARY ...]          (default: target/release/kes)

Environment:
    RUNS=3  DURATION=10s  CONNECTIONS="1 8 64"  OPS="generate decrypt"
    BENCH=target/release/kes-bench  OHA=oha (skipped when not installed)
    SKIP="oha handshake storm flood ready"  (any of these, to leave them out)
    STORM_CLIENTS=8  FLOOD="--silent 1000 --slow 200 --churn 2"  (the scenarios' sizes)

Build first: cargo build --release -p kes --bin kes && cargo build --release -p kes-bench
"""

import json
import os
import resource
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

RUNS = int(os.environ.get("RUNS", "3"))
DURATION = os.environ.get("DURATION", "10s")
CONNECTIONS = [int(c) for c in os.environ.get("CONNECTIONS", "1 8 64").split()]
OPS = os.environ.get("OPS", "generate decrypt").split()
BENCH = os.environ.get("BENCH", "target/release/kes-bench")
OHA = os.environ.get("OHA", "oha")
SKIP = os.environ.get("SKIP", "").split()
STORM_CLIENTS = os.environ.get("STORM_CLIENTS", "8")
FLOOD = os.environ.get("FLOOD", "--silent 1000 --slow 200 --churn 2").split()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, binary, work):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="kes-bench-", dir=work)
        pki = os.path.join(self.dir, "pki")
        self.identity = subprocess.check_output([BENCH, "certs", pki], text=True).strip()
        os.mkdir(os.path.join(self.dir, "keys"))
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write(
                f"tls:\n  key: {pki}/server.key\n  cert: {pki}/server.cert\n"
                f"admin:\n  identity: {self.identity}\n"
                f"keystore:\n  fs:\n    path: {self.dir}/keys\n"
            )
        self.cred = [
            "--cacert", f"{pki}/server.cert",
            "--cert", f"{pki}/client.cert",
            "--key", f"{pki}/client.key",
        ]
        self.pki = pki
        self.log = open(os.path.join(self.dir, "server.log"), "w+")
        self.proc = None
        self.url = None
        self.extra_args = []  # more `kes server` flags (tools/bench_resident.py: --workers)

    def start(self, addr="127.0.0.1:0"):
        self.proc = subprocess.Popen(
            [self.binary, "server", "--config", self.config, "--addr", addr, *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=self.log,
        )
        for _ in range(200):
            self.log.seek(0)
            m = re.search(r"https://127\.0\.0\.1:\d+", self.log.read())
            if m:
                self.url = m.group(0)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.log.seek(0)
        sys.exit(f"{self.binary} did not start:\n{self.log.read()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def bench(self, *args, mode=()):
        out = subprocess.run(
            [BENCH, *mode, "--server", self.url, *self.cred, "--json", *args],
            capture_output=True, text=True,
        )
        if not out.stdout.strip():
            self.log.seek(0)
            tail = "".join(self.log.readlines()[-20:])
            sys.exit(f"kes-bench failed: {out.stderr}\n{self.binary}'s log ends:\n{tail}")
        return json.loads(out.stdout)


def server_cpu(pid):
    """CPU seconds (user + system) the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu():
    """CPU seconds used so far by finished child processes (the load generators)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """Server and client CPU microseconds per request around one run."""

    def __init__(self, server):
        self.pid = server.proc.pid
        self.server0, self.client0 = server_cpu(self.pid), client_cpu()

    def per_request(self, requests):
        n = max(requests, 1)
        return ((server_cpu(self.pid) - self.server0) / n * 1e6,
                (client_cpu() - self.client0) / n * 1e6)


def median(values):
    return statistics.median(values) if values else float("nan")


def fmt_runs(values, digits=0):
    return " / ".join(f"{v:,.{digits}f}" for v in values)


def oha_run(server, op, connections):
    """One oha run; None if oha is missing or fails."""
    if shutil.which(OHA) is None:
        return None
    key = "kes-bench"
    if op == "generate":
        body = "{}"
    else:
        body = server.bench("--key-name", key, "--op", "generate", "--requests", "1")
        # kes-bench does not print ciphertexts: take one with a direct request.
        res = subprocess.run(
            ["curl", "-sS", "--cacert", f"{server.pki}/server.cert",
             "--cert", f"{server.pki}/client.cert", "--key", f"{server.pki}/client.key",
             "-X", "POST", "-d", "{}", f"{server.url}/v1/key/generate/{key}"],
            capture_output=True, text=True,
        )
        body = json.dumps({"ciphertext": json.loads(res.stdout)["ciphertext"]})
    cmd = [
        OHA, "--no-tui", "--output-format", "json", "-z", DURATION, "-c", str(connections),
        "-m", "POST", "-T", "application/json", "-d", body,
        "--cacert", f"{server.pki}/server.cert",
        "--cert", f"{server.pki}/client.cert", "--key", f"{server.pki}/client.key",
        f"{server.url}/v1/key/{op}/{key}",
    ]
    meter = CpuMeter(server)
    res = subprocess.run(cmd, capture_output=True, text=True)
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        print(f"oha failed: {res.stderr.strip()[:300]}", file=sys.stderr)
        return None
    ok = data.get("statusCodeDistribution", {})
    server_us, client_us = meter.per_request(sum(ok.values()))
    return {
        "server_us": server_us,
        "client_us": client_us,
        "throughput_rps": data["summary"]["requestsPerSec"],
        "p50": data["latencyPercentiles"]["p50"] * 1e3,
        "p99": data["latencyPercentiles"]["p99"] * 1e3,
        "status": ok,
    }


def scenario(servers, name, under, args):
    """`kes-bench storm|flood`: the good client's p99 alone and under the disturbance,
    interleaved across the servers, RUNS times."""
    results = {s.binary: [] for s in servers}
    for _ in range(RUNS):
        for s in servers:
            results[s.binary].append(s.bench(
                "--duration", DURATION, "--server-pid", str(s.proc.pid), *args, mode=(name,)))
    for s in servers:
        rs = results[s.binary]
        alone = [r["alone"]["latency_ms"]["p99"] for r in rs]
        loaded = [r[under]["latency_ms"]["p99"] for r in rs]
        ratio = [r["p99_ratio"] for r in rs]
        cpu = [r["alone"]["server_cpu_us_per_request"] or 0 for r in rs]
        errors = sum(r["alone"]["errors"] + r[under]["errors"] for r in rs)
        line = (f"{name} {s.binary}: good p99 alone {median(alone):.3f} ms "
                f"[{fmt_runs(alone, 3)}]  {under.replace('_', ' ')} {median(loaded):.3f} ms "
                f"[{fmt_runs(loaded, 3)}]  ratio {median(ratio):.2f} [{fmt_runs(ratio, 2)}]  "
                f"p50 {median([r['alone']['latency_ms']['p50'] for r in rs]):.3f} / "
                f"{median([r[under]['latency_ms']['p50'] for r in rs]):.3f} ms  "
                f"good errors {errors}  CPU/req server alone {median(cpu):.1f} us")
        if name == "storm":
            rate = [r["storm"]["ok_per_s"] for r in rs]
            hs_cpu = [r["storm"]["server_cpu_us_per_handshake"] or 0 for r in rs]
            line += (f"\n    storm: {median(rate):,.0f} handshakes/s [{fmt_runs(rate)}]  "
                     f"errors {sum(r['storm']['errors'] for r in rs)}  "
                     f"CPU/handshake+request server {median(hs_cpu):.0f} us  "
                     f"server CPU {median([r['storm']['server_cpu_percent'] or 0 for r in rs]):.0f}%")
        else:
            f = [r["flood"] for r in rs]
            churn = [r["churn"].get("ok_per_s", 0) for r in rs]
            line += (f"\n    flood: reopened silent {median([x['silent']['reopened'] for x in f]):,.0f} "
                     f"slow {median([x['slow']['reopened'] for x in f]):,.0f}  "
                     f"failed opens {sum(x[k]['failed_opens'] for x in f for k in ('silent', 'idle_tls', 'slow'))}  "
                     f"churn {median(churn):,.0f} conns/s, errors "
                     f"{sum(r['churn'].get('errors', 0) for r in rs)}  "
                     f"server CPU {median([x['server_cpu_percent'] or 0 for x in f]):.0f}%")
        print(line)


def main():
    binaries = sys.argv[1:] or ["target/release/kes"]
    work = tempfile.mkdtemp(prefix="kes-bench-run-")
    servers = [Server(b, work) for b in binaries]
    try:
        for s in servers:
            s.start()
        time.sleep(1)
        print(f"# machine: {os.cpu_count()} cores, "
              f"{open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
        print(f"# RUNS={RUNS} DURATION={DURATION}; medians, single runs in brackets\n")
        for s in servers:
            size = os.path.getsize(s.binary)
            print(f"{s.binary}: binary {size / 1e6:.2f} MB ({size} bytes), "
                  f"idle RSS {rss_kb(s.proc.pid) / 1024:.1f} MiB")
        print()
        # Warm up every server (key cache, allocator) before measuring.
        for s in servers:
            for op in OPS:
                s.bench("--op", op, "--connections", "8", "--duration", "2s")

        for op in OPS:
            for c in CONNECTIONS:
                results = {s.binary: [] for s in servers}
                peak = {s.binary: 0 for s in servers}
                for _ in range(RUNS):
                    for s in servers:
                        stop = threading.Event()

                        def sample(s=s, stop=stop):
                            while not stop.is_set():
                                peak[s.binary] = max(peak[s.binary], rss_kb(s.proc.pid))
                                time.sleep(0.25)

                        t = threading.Thread(target=sample)
                        t.start()
                        meter = CpuMeter(s)
                        r = s.bench("--op", op, "--connections", str(c), "--duration", DURATION)
                        r["server_us"], r["client_us"] = meter.per_request(r["requests"])
                        stop.set()
                        t.join()
                        results[s.binary].append(r)
                for s in servers:
                    rs = results[s.binary]
                    rps = [r["throughput_rps"] for r in rs]
                    p50 = [r["latency_ms"]["p50"] for r in rs]
                    p99 = [r["latency_ms"]["p99"] for r in rs]
                    errors = sum(r["errors"] for r in rs)
                    print(f"kes-bench {op:8} c={c:<3} {s.binary}: {median(rps):>9,.0f} req/s "
                          f"[{fmt_runs(rps)}]  p50 {median(p50):.3f} ms  p99 {median(p99):.3f} ms "
                          f"[{fmt_runs(p99, 3)}]  errors {errors}  peak RSS {peak[s.binary] / 1024:.1f} MiB  "
                          f"CPU/req server {median([r['server_us'] for r in rs]):.1f} us "
                          f"client {median([r['client_us'] for r in rs]):.1f} us")

        if "handshake" not in SKIP:
            print()
            for c in (8,):
                results = {s.binary: [] for s in servers}
                for _ in range(RUNS):
                    for s in servers:
                        results[s.binary].append(s.bench(
                            "--op", "generate", "--new-connection", "--connections", str(c),
                            "--duration", DURATION))
                for s in servers:
                    rs = results[s.binary]
                    rps = [r["throughput_rps"] for r in rs]
                    p99 = [r["latency_ms"]["p99"] for r in rs]
                    errors = sum(r["errors"] for r in rs)
                    print(f"kes-bench handshake+generate c={c} {s.binary}: {median(rps):,.0f} /s "
                          f"[{fmt_runs(rps)}]  p99 {median(p99):.3f} ms  errors {errors}")

        if "storm" not in SKIP:
            print()
            scenario(servers, "storm", "under_storm", ["--storm-clients", STORM_CLIENTS])
        if "flood" not in SKIP:
            print()
            scenario(servers, "flood", "under_flood", FLOOD)

        if "oha" not in SKIP:
            print()
            if shutil.which(OHA) is None:
                print(f"oha: not installed ({OHA}); skipped")
            else:
                for op in OPS:
                    results = {s.binary: [] for s in servers}
                    for _ in range(RUNS):
                        for s in servers:
                            r = oha_run(s, op, 8)
                            if r:
                                results[s.binary].append(r)
                    for s in servers:
                        rs = results[s.binary]
                        rps = [r["throughput_rps"] for r in rs]
                        p99 = [r["p99"] for r in rs]
                        print(f"oha {op:8} c=8 {s.binary}: {median(rps):>9,.0f} req/s [{fmt_runs(rps)}]  "
                              f"p50 {median([r['p50'] for r in rs]):.3f} ms  p99 {median(p99):.3f} ms  "
                              f"[{fmt_runs(p99, 3)}]  "
                              f"CPU/req server {median([r['server_us'] for r in rs]):.1f} us "
                              f"client {median([r['client_us'] for r in rs]):.1f} us  "
                              f"status {[r['status'] for r in rs]}")

        for s in servers:
            s.stop()

        if "ready" not in SKIP:
            print()
            for s in servers:
                times = []
                for _ in range(max(RUNS, 5)):
                    out = subprocess.run(
                        [BENCH, "ready-time", "--server", s.url, *s.cred, "--json", "--",
                         s.binary, "server", "--config", s.config,
                         "--addr", s.url.removeprefix("https://")],
                        capture_output=True, text=True,
                    )
                    if out.returncode != 0:
                        print(f"ready-time failed: {out.stderr.strip()}")
                        break
                    times.append(json.loads(out.stdout)["ready_ms"])
                print(f"startup-to-ready {s.binary}: median {median(times):.1f} ms "
                      f"[{fmt_runs(times, 1)}]")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
