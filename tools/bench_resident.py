#!/usr/bin/env python3
"""The resident-key benchmark of docs/BENCHMARKS.md: kes with `master_keys: resident`
in front of the CipherTrust stand-in (tests/common/ctm_sim.rs, run as the ignored helper
test tests/ctm_helper.rs: test-only, never in the shipped binary), with latency injected
into every stand-in answer. Measures generate and decrypt with kes-bench at each latency
and connection count, and compares the throughput with pool workers / latency, the most
the pool can carry when every request waits for one CipherTrust call.

With COMPARE=1 it measures instead the budget of intermediate keys (issue 26): the
same kes once with `intermediate_key:` (resident keys whose data keys are sealed under
intermediate keys that CipherTrust wraps) and once with keys kes holds (`master_keys:
exported`: CipherTrust secrets, loaded once into the key cache), against the one
stand-in at each latency; runs alternate between the two servers, each after a warm-up
run, and the table gives the ratios of throughput and p99.

Usage:
    tools/bench_resident.py HELPER_TEST_BINARY [KES_BINARY]

Environment:
    LATENCIES="1 5 20" (ms)  CONNECTIONS="8 64"  OPS="generate decrypt"
    WORKERS=8  RUNS=1  DURATION=10s  BENCH=target/release/kes-bench
    COMPARE=1  IK_TTL=5m  IK_MAX_USES=1000000

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
    binary = sys.argv[2] if len(sys.argv) > 2 else "target/release/kes"
    work = tempfile.mkdtemp(prefix="kes-bench-resident-")
    info = os.path.join(work, "ctm.info")
    latency_file = os.path.join(work, "ctm.latency")
    with open(latency_file, "w") as f:
        f.write("0")
    env = dict(os.environ, CTM_SIM_INFO=info, CTM_SIM_LATENCY=latency_file)
    sim = subprocess.Popen(
        [helper, "--ignored", "--exact", "ctm_sim_server", "--nocapture"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = None
    try:
        for _ in range(200):
            if os.path.exists(info):
                break
            time.sleep(0.05)
        with open(info) as f:
            ctm = f.read().split("\n")[:3]
        if COMPARE:
            return compare(binary, work, ctm, latency_file)
        server = ResidentServer(binary, work, ctm)
        server.start()
        print(f"kes {binary} (--workers {WORKERS}) at {server.url}, stand-in at {ctm[0]}")
        print(f"{RUNS} run(s) of {DURATION} per point; target = 80 % of {WORKERS} workers / latency\n")
        print("| latency | op | conns | req/s (runs) | target req/s | % of workers/latency "
              "| p50 / p99 ms | errors | kes CPU µs/req |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for latency in LATENCIES:
            with open(latency_file, "w") as f:
                f.write(str(latency))
            time.sleep(0.5)
            ceiling = WORKERS / (latency / 1000)
            for op in OPS:
                for conns in CONNECTIONS:
                    rates, p50s, p99s, errors, cpus = [], [], [], 0, []
                    for _ in range(RUNS):
                        meter = bench.CpuMeter(server)
                        r = server.bench("--op", op, "--connections", str(conns),
                                         "--duration", DURATION, "--key-name", "resident-bench",
                                         "--context", "bucket/object")
                        cpus.append(meter.per_request(r["requests"])[0])
                        rates.append(r["throughput_rps"])
                        p50s.append(r["latency_ms"]["p50"])
                        p99s.append(r["latency_ms"]["p99"])
                        errors += r["errors"]
                    rate = statistics.median(rates)
                    print(f"| {latency} ms | {op} | {conns} | **{rate:,.0f}** ({bench.fmt_runs(rates)}) "
                          f"| {0.8 * ceiling:,.0f} | {100 * rate / ceiling:.0f} % "
                          f"| {statistics.median(p50s):.2f} / {statistics.median(p99s):.2f} "
                          f"| {errors} | {statistics.median(cpus):.0f} |", flush=True)
    finally:
        if server:
            server.stop()
        if os.path.exists(info):
            os.remove(info)
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
        shutil.rmtree(work, ignore_errors=True)


def measure(server, op, conns, key, duration=None):
    """One kes-bench run: (req/s, p50 ms, p99 ms, errors, kes CPU µs per request)."""
    meter = bench.CpuMeter(server)
    r = server.bench("--op", op, "--connections", str(conns),
                     "--duration", duration or DURATION, "--key-name", key,
                     "--context", "bucket/object")
    cpu = meter.per_request(r["requests"])[0]
    return (r["throughput_rps"], r["latency_ms"]["p50"], r["latency_ms"]["p99"],
            r["errors"], cpu)


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
            with open(latency_file, "w") as f:
                f.write(str(latency))
            time.sleep(0.5)
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
