#!/usr/bin/env python3
"""The resident-key benchmark of docs/BENCHMARKS.md: kes with `master_keys: resident`
in front of the CipherTrust stand-in (tests/common/ctm_sim.rs, run as the ignored helper
test tests/ctm_helper.rs: test-only, never in the shipped binary), with latency injected
into every stand-in answer. Measures generate and decrypt with kes-bench at each latency
and connection count: throughput against its ceiling (the calls that can wait for
CipherTrust at once, min(256, connections), ÷ latency), latency, errors, kes's CPU per
request (of the kes process only: the stand-in's and the load generator's own CPU are
not in it) and kes's largest resident memory during the run. Several kes binaries are
measured side by side: each point runs on each binary in turn, RUNS times.

With HANG=1 it measures instead whether a hanging CipherTrust slows keys kes holds
(issue 25): generate with a key kes holds (a CipherTrust secret, cached) on 8
connections, once with the stand-in answering at once and once while it holds every
call (60 s latency) and 256 connections ask for resident-key generates, RUNS times each.

With COMPARE=1 it measures instead the budget of intermediate keys (issue 26): the
same kes once with `intermediate_key:` (resident keys whose data keys are sealed under
intermediate keys that CipherTrust wraps) and once with keys kes holds (`master_keys:
exported`: CipherTrust secrets, loaded once into the key cache), against the one
stand-in at each latency; runs alternate between the two servers, each after a warm-up
run, and the table gives the ratios of throughput and p99.

Usage:
    tools/bench_resident.py HELPER_TEST_BINARY [KES_BINARY ...]

Environment:
    LATENCIES="1 5 20" (ms)  CONNECTIONS="8 64"  OPS="generate decrypt"
    WORKERS=8  RUNS=1  DURATION=10s  BENCH=target/release/kes-bench
    JITTER=25: each stand-in answer's latency varies uniformly by up to that many
    percent either way (a real CM's does: 12-33 ms in Thales' own load sample); with
    JITTER=0 a closed loop against a latency that never varies gathers its requests
    into one convoy (docs/BENCHMARKS.md)
    LOAD=loop (kes-bench --event-loop: one thread drives every connection, all opened
    before the clock starts) or LOAD=threads (a thread per connection, as before
    2026-12-08: on these 2 cores its wake-ups cost the machine about 0.2 core at
    8,000 req/s, docs/BENCHMARKS.md)
    COMPARE=1  IK_TTL=5m  IK_MAX_USES=1000000  HANG=1

Build first:
    cargo build --release -p kes --bin kes && cargo build --release -p kes-bench
    cargo test --release --test ctm_helper --no-run   # prints the helper's path
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, CPU meters)

LATENCIES = [int(x) for x in os.environ.get("LATENCIES", "1 5 20").split()]
CONNECTIONS = [int(c) for c in os.environ.get("CONNECTIONS", "8 64").split()]
OPS = os.environ.get("OPS", "generate decrypt").split()
WORKERS = int(os.environ.get("WORKERS", "8"))
RUNS = int(os.environ.get("RUNS", "1"))
DURATION = os.environ.get("DURATION", "10s")
COMPARE = os.environ.get("COMPARE") == "1"
HANG = os.environ.get("HANG") == "1"
# The default limit of calls the event loops have in flight (kes server --cm-calls).
CM_CALLS = 256
LOAD = os.environ.get("LOAD", "loop")
IK_TTL = os.environ.get("IK_TTL", "5m")
IK_MAX_USES = os.environ.get("IK_MAX_USES", "1000000")


class ResidentServer(bench.Server):
    """A bench.Server whose keystore is the stand-in with resident master keys."""

    def __init__(self, binary, work, ctm, keys="resident"):
        """`keys`: resident, intermediate (resident with intermediate keys) or held
        (master_keys: exported, keys kes holds)."""
        super().__init__(binary, work)
        endpoint, ca, token = ctm
        section = {
            "resident": "    master_keys: resident\n",
            "intermediate": (
                "    master_keys: resident\n"
                f"    intermediate_key: {{ttl: {IK_TTL}, max_uses: {IK_MAX_USES}}}\n"
            ),
            "held": "    master_keys: exported\n",
        }[keys]
        with open(self.config, "w") as f:
            f.write(
                f"tls:\n  key: {self.pki}/server.key\n  cert: {self.pki}/server.cert\n"
                f"admin:\n  identity: {self.identity}\n"
                f"keystore:\n  ciphertrust:\n    endpoint: {endpoint}\n"
                f"    credentials:\n      token: {token}\n"
                f"    tls:\n      ca: {ca}\n"
                + section
            )
        self.extra_args = ["--workers", str(WORKERS)]
        self.ctm_endpoint = endpoint

    def start(self, addr="127.0.0.1:0"):
        super().start(addr)
        # The log names CM's endpoint too ("CipherTrust Manager at https://…"): wait for
        # kes's own address.
        for _ in range(200):
            self.log.seek(0)
            urls = set(re.findall(r"https://127\.0\.0\.1:\d+", self.log.read()))
            urls.discard(self.ctm_endpoint)
            if urls:
                self.url = urls.pop()
                return
            time.sleep(0.05)
        sys.exit("kes did not print its address")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    helper = sys.argv[1]
    binaries = sys.argv[2:] or ["target/release/kes"]
    work = tempfile.mkdtemp(prefix="kes-bench-resident-")
    info = os.path.join(work, "ctm.info")
    latency_file = os.path.join(work, "ctm.latency")
    set_latency(latency_file, 0, settle=0)
    env = dict(os.environ, CTM_SIM_INFO=info, CTM_SIM_LATENCY=latency_file,
               CTM_SIM_JITTER=os.environ.get("JITTER", "25"))
    sim = subprocess.Popen(
        [helper, "--ignored", "--exact", "ctm_sim_server", "--nocapture"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    global SIM_PID
    SIM_PID = sim.pid
    servers = []
    try:
        for _ in range(200):
            if os.path.exists(info):
                break
            time.sleep(0.05)
        with open(info) as f:
            ctm = f.read().split("\n")[:3]
        if COMPARE:
            return compare(binaries[0], work, ctm, latency_file)
        if HANG:
            return hang(binaries[0], work, ctm, latency_file)
        for binary in binaries:
            server = ResidentServer(binary, work, ctm)
            server.start()
            servers.append(server)
            print(f"kes {binary} (--workers {WORKERS}) at {server.url}")
        print(f"stand-in at {ctm[0]} (latency jitter ±{env['CTM_SIM_JITTER']} %); {RUNS} run(s) "
              f"of {DURATION} per point and binary, alternating; load {LOAD}; "
              f"ceiling = min({CM_CALLS}, conns) ÷ latency\n")
        print("| latency | op | conns | kes | req/s (runs) | % of ceiling "
              "| p50 / p99 ms | errors | kes CPU µs/req | stand-in / kes-bench µs/req "
              "| kes RSS MB |")
        print("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for latency in LATENCIES:
            set_latency(latency_file, latency)
            for op in OPS:
                for conns in CONNECTIONS:
                    ceiling = min(CM_CALLS, conns) / (max(latency, 0.001) / 1000)
                    runs = {i: [] for i in range(len(servers))}
                    for _ in range(RUNS):
                        for i, server in enumerate(servers):
                            runs[i].append(measure(server, op, conns, "resident-bench"))
                    for i, server in enumerate(servers):
                        rs = runs[i]
                        med = [statistics.median(x[k] for x in rs) for k in range(8)]
                        errors = sum(x[3] for x in rs)
                        print(f"| {latency} ms | {op} | {conns} | {os.path.basename(server.binary)} "
                              f"| **{med[0]:,.0f}** ({bench.fmt_runs([x[0] for x in rs])}) "
                              f"| {100 * med[0] / ceiling:.0f} % "
                              f"| {med[1]:.2f} / {med[2]:.2f} | {errors} | {med[4]:.0f} "
                              f"| {med[6]:.0f} / {med[7]:.0f} "
                              f"| {max(x[5] for x in rs):.1f} |", flush=True)
    finally:
        for server in servers:
            server.stop()
        if os.path.exists(info):
            os.remove(info)
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
        shutil.rmtree(work, ignore_errors=True)


def set_latency(latency_file, ms, settle=0.5):
    """Tells the stand-in its latency (it reads the file every 100 ms), then waits
    `settle` seconds for it to take effect."""
    with open(latency_file, "w") as f:
        f.write(str(ms))
    time.sleep(settle)


class RssMeter:
    """The largest resident memory of a process while it runs, sampled every 50 ms."""

    def __init__(self, pid):
        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(0.05):
            self.sample()

    def sample(self):
        try:
            self.peak = max(self.peak, bench.rss_kb(self.pid))
        except OSError:  # the process ended
            self.done.set()

    def stop(self):
        self.done.set()
        self.thread.join()
        self.sample()
        return self.peak / 1024


def hang(binary, work, ctm, latency_file):
    """Keys kes holds while CipherTrust hangs and resident calls wait for it."""
    # A key kes holds: a CipherTrust secret made by kes in secrets mode.
    maker = ResidentServer(binary, work, ctm, "held")
    maker.start()
    measure(maker, "generate", 1, "held-bench", "1s")
    maker.stop()
    server = ResidentServer(binary, work, ctm)
    server.start()
    print(f"kes {binary} (--workers {WORKERS}) at {server.url}, stand-in at {ctm[0]}")
    print(f"{RUNS} run(s) of {DURATION} per case; held-key generate on 8 connections\n")
    print("| case | req/s (runs) | p50 / p99 ms (p99 runs) | errors |")
    print("|---|---:|---:|---:|")
    try:
        measure(server, "generate", 8, "resident-bench", "1s")  # the resident key exists
        results = {"CipherTrust answers at once": [], "CipherTrust hangs, 256 resident clients wait": []}
        for _ in range(RUNS):
            set_latency(latency_file, 0, settle=0.3)
            results["CipherTrust answers at once"].append(measure(server, "generate", 8, "held-bench"))
            set_latency(latency_file, 60000, settle=0.3)
            seconds = int(re.sub(r"\D", "", DURATION) or "10") + 3
            waiting = subprocess.Popen(
                [bench.BENCH, "--server", server.url, *server.cred, "--op", "generate",
                 "--connections", "256", "--duration", f"{seconds}s", "--key-name", "resident-bench",
                 "--context", "bucket/object", "--json"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            # The key exists: a create now would be a CipherTrust call that hangs.
            results["CipherTrust hangs, 256 resident clients wait"].append(
                measure(server, "generate", 8, "held-bench", extra=["--existing-key"]))
            waiting.kill()
            waiting.wait()
        set_latency(latency_file, 0, settle=0)
        for case, rs in results.items():
            print(f"| {case} | **{statistics.median(x[0] for x in rs):,.0f}** "
                  f"({bench.fmt_runs([x[0] for x in rs])}) "
                  f"| {statistics.median(x[1] for x in rs):.2f} / {statistics.median(x[2] for x in rs):.2f} "
                  f"({bench.fmt_runs([x[2] for x in rs], 2)}) | {sum(x[3] for x in rs)} |", flush=True)
        base, hung = (statistics.median(x[2] for x in rs) for rs in results.values())
        print(f"\nheld-key p99 with CipherTrust hanging ÷ without: {hung / base:.2f}×")
    finally:
        server.stop()


SIM_PID = None


def measure(server, op, conns, key, duration=None, extra=()):
    """One kes-bench run: (req/s, p50 ms, p99 ms, errors, kes CPU µs per request, kes's
    largest RSS in MB, the stand-in's and kes-bench's CPU µs per request)."""
    meter = bench.CpuMeter(server)
    sim0 = bench.server_cpu(SIM_PID)
    rss = RssMeter(server.proc.pid)
    r = server.bench("--op", op, "--connections", str(conns),
                     "--duration", duration or DURATION, "--key-name", key,
                     "--context", "bucket/object", *extra,
                     *(["--event-loop"] if LOAD == "loop" else []))
    cpu, client = meter.per_request(r["requests"])
    sim = (bench.server_cpu(SIM_PID) - sim0) / max(r["requests"], 1) * 1e6
    return (r["throughput_rps"], r["latency_ms"]["p50"], r["latency_ms"]["p99"],
            r["errors"], cpu, rss.stop(), sim, client)


def compare(binary, work, ctm, latency_file):
    """Intermediate keys against keys kes holds, same stand-in, runs alternating."""
    servers = {}
    try:
        for keys in ("intermediate", "held"):
            servers[keys] = ResidentServer(binary, work, ctm, keys)
            servers[keys].start()
        print(f"kes {binary} (--workers {WORKERS}); intermediate keys at "
              f"{servers['intermediate'].url} (ttl {IK_TTL}, max_uses {IK_MAX_USES}), "
              f"held keys at {servers['held'].url}, stand-in at {ctm[0]}")
        print(f"{RUNS} run(s) of {DURATION} per point and server, alternating, each after "
              "a 1 s warm-up run; medians\n")
        print("| CM latency | op | conns | held req/s (runs) | IK req/s (runs) | IK ÷ held "
              "| held p50 / p99 ms (p99 runs) | IK p50 / p99 ms (p99 runs) | IK p99 ÷ held | errors "
              "| CPU µs/req held / IK |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for latency in LATENCIES:
            set_latency(latency_file, latency)
            for op in OPS:
                for conns in CONNECTIONS:
                    runs = {"held": [], "intermediate": []}
                    for _ in range(RUNS):
                        for keys in ("held", "intermediate"):
                            server, key = servers[keys], f"{keys}-bench"
                            measure(server, op, conns, key, "1s")
                            runs[keys].append(measure(server, op, conns, key))
                    med = {k: [statistics.median(x[i] for x in v) for i in range(5)]
                           for k, v in runs.items()}
                    errors = sum(x[3] for v in runs.values() for x in v)
                    h, i = med["held"], med["intermediate"]
                    print(f"| {latency} ms | {op} | {conns} "
                          f"| **{h[0]:,.0f}** ({bench.fmt_runs([x[0] for x in runs['held']])}) "
                          f"| **{i[0]:,.0f}** ({bench.fmt_runs([x[0] for x in runs['intermediate']])}) "
                          f"| {100 * i[0] / h[0]:.0f} % "
                          f"| {h[1]:.2f} / {h[2]:.2f} ({bench.fmt_runs([x[2] for x in runs['held']], 2)}) "
                          f"| {i[1]:.2f} / {i[2]:.2f} ({bench.fmt_runs([x[2] for x in runs['intermediate']], 2)}) "
                          f"| {i[2] / h[2]:.2f}× | {errors} | {h[4]:.0f} / {i[4]:.0f} |",
                          flush=True)
    finally:
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
