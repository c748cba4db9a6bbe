"""Throughput vs peers: Roost's edge against nginx, haproxy and envoy, same backend.

    bench/setup.sh && .venv/bin/python bench/throughput.py [--repeat 3] [--quick]

Every proxy forwards to the same small-body backend (nginx ``return 200 "ok"``). Pinning:
the proxy on CPU 0; load generator and backend on CPU 1. Per proxy, per round:

1. ``wrk -t1 -c50 -d10s --latency``: HTTP/1.1 keep-alive req/s, p50, p99;
2. ``h2load -c10 -m10 -D10`` over h2c (prior knowledge) where the proxy speaks it;
3. paced load at fixed rates (``hey -c50 -q rate/50``, keep-alive): the proxy processes'
   own CPU time (``/proc/<pid>/task/*/schedstat``) divided by requests completed
   -> µs/request, and p99 at that rate.

Peers: ``roost-edge`` is ``start_edge`` alone in a child process routing straight to the
backend (the edge path); ``roost-full`` is ``roost up --no-demo`` with an nginx instance
deployed (edge -> host proxy -> instance, when the node runs a host proxy).
Rounds are run back to back, peers in rotated order; tables show the median of the rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import (
    BENCH,
    LOAD_CPU,
    PROXY_CPU,
    CpuMeter,
    LoadResult,
    Procs,
    banner,
    busy_note,
    fmt,
    have,
    install_sigterm,
    machine_note,
    median,
    ratio,
    run_h2load,
    run_hey,
    run_wrk,
    table,
    workdir,
    write_results_json,
)
from _peers import (
    Proxy,
    peer_available,
    start_backend,
    start_bare_relay,
    start_envoy,
    start_haproxy,
    start_nginx,
    start_policy_relay,
    start_roost_edge,
    start_roost_node,
    write_app,
)

# Targets from issue 3 (per worker, vs nginx).
TARGET_RPS = 0.7  # HTTP/1.1 edge req/s >= 0.7x nginx
TARGET_CPU = 1.5  # CPU per request <= 1.5x nginx
TARGET_P99 = 1.5  # p99 at a fixed rate <= 1.5x nginx
TARGET_H2 = 0.25  # h2c req/s >= 0.25x nginx
REFERENCE_US = {"nginx": 14.7, "haproxy": 17.1, "envoy": 36.7, "bare uvloop+httptools": 14.8}

Starter = Callable[[Procs, Path, int, str], Proxy]
PEERS: dict[str, Starter] = {
    "nginx": start_nginx,
    "haproxy": start_haproxy,
    "envoy": start_envoy,
    "roost-edge": start_roost_edge,
    "bare-relay": start_bare_relay,
    "policy-relay": start_policy_relay,
}

BACKEND = "backend: nginx return 200, 1 worker, CPU 1"
Round = dict[str, object]  # one proxy's measurements in one round


def h2c_works(port: int, host: str) -> bool:
    """Whether a handful of h2c (prior knowledge) requests succeed within a few seconds."""
    try:
        out = subprocess.run(
            [
                "h2load",
                "-n10",
                "-c1",
                "-m1",
                "-T3",
                "-H",
                f":authority: {host}",
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            timeout=8,
            stdin=subprocess.DEVNULL,
        ).stdout
    except subprocess.TimeoutExpired:
        return False
    return "10 succeeded" in out


def measure(proxy: Proxy, args: argparse.Namespace, notes: list[str]) -> Round:
    """One round of every measurement against a running proxy."""
    out: Round = {"layout": proxy.layout}
    print(f"  {proxy.name}: wrk", end="", flush=True)
    run_wrk(proxy.port, proxy.host, connections=args.connections, duration=2)  # warm pools
    meter = CpuMeter(proxy.pids())
    meter.start()
    h1 = run_wrk(proxy.port, proxy.host, connections=args.connections, duration=args.duration)
    cpu = meter.stop()
    out["h1"] = h1
    # CPU per request at full speed, and how busy the proxy was (below 100 %: not the limit)
    out["h1cpu"] = cpu / h1.requests * 1e6 if h1.requests else None
    out["h1busy"] = cpu / h1.duration if h1.duration else None
    if not args.no_h2:
        if proxy.h2c_port is not None and h2c_works(proxy.h2c_port, proxy.host):
            print(", h2load", end="", flush=True)
            out["h2"] = run_h2load(
                proxy.h2c_port, proxy.host, clients=10, streams=10, duration=args.duration
            )
        else:
            notes.append(f"{proxy.name}: no h2c (prior knowledge) support detected: h2 skipped")
    for rate in args.rates:
        print(f", {rate}/s", end="", flush=True)
        meter = CpuMeter(proxy.pids())
        meter.start()
        res = run_hey(
            proxy.port, proxy.host, rate=rate, duration=args.duration, workers=args.workers
        )
        cpu = meter.stop()
        out[f"rate{rate}"] = res
        out[f"cpu{rate}"] = cpu / res.requests * 1e6 if res.requests else None
    print(flush=True)
    return out


def start_full(procs: Procs, work: Path, notes: list[str]) -> Proxy:
    """``roost up`` on CPU 0 with one nginx instance (re-pinned to CPU 1) deployed."""
    node = start_roost_node(procs, work, PROXY_CPU)
    app = write_app(
        work / "fast-app",
        name="fast",
        command="sh nginx_app.sh",
        env={"BENCH_CPUS": LOAD_CPU},
        files={"nginx_app.sh": BENCH / "apps" / "nginx_app.sh"},
    )
    node.deploy(app, "fast")
    backhaul = node.host_proxy()
    if backhaul is None:
        layout = "roost up: 1 process (edge + API + agent; NO host proxy found), CPU 0"
        notes.append(
            "roost-full: the node runs no host proxy yet (no backhaul socket in its "
            "data dir): the 'full path' is edge -> instance"
        )
    else:
        layout = "roost up: 1 process (edge + host proxy + API + agent), CPU 0"
    layout += "; instance (the backend): nginx return 200, 1 process, CPU 1"
    # account the roost process only: its descendants are the instance (= the backend)
    return Proxy(
        "roost-full",
        node.port,
        [node.proc],
        node.port,
        host="fast.localhost",
        layout=layout,
        children=False,
    )


def run(args: argparse.Namespace) -> dict[str, list[Round]]:
    results: dict[str, list[Round]] = {}
    notes: list[str] = args.notes
    peers = [p for p in args.peers if p in PEERS]
    for name in list(peers):
        why = peer_available(name)
        if why:
            notes.append(f"{name}: skipped: {why}")
            peers.remove(name)
    with workdir("throughput", keep=args.keep) as work, Procs(work) as procs:
        backend = start_backend(procs, work, LOAD_CPU)
        for rnd in range(args.repeat):
            banner(f"round {rnd + 1}/{args.repeat}")
            order = peers[rnd % len(peers) :] + peers[: rnd % len(peers)] if peers else []
            if args.full:
                order.append("roost-full")
            for name in order:
                rdir = work / f"{name}-{rnd}"
                rdir.mkdir()
                try:
                    if name == "roost-full":
                        proxy = start_full(procs, rdir, notes if rnd == 0 else [])
                    else:
                        proxy = PEERS[name](procs, rdir, backend, PROXY_CPU)
                except Exception as exc:
                    msg = f"{name}: failed to start: {str(exc).strip().splitlines()[0]}"
                    print("  " + msg)
                    notes.append(msg)
                    continue
                try:
                    results.setdefault(name, []).append(
                        measure(proxy, args, notes if rnd == 0 else [])
                    )
                except Exception as exc:
                    notes.append(f"{name}: round {rnd + 1} failed: {exc}")
                finally:
                    for proc in proxy.procs:
                        procs.stop(proc, timeout=30)
    return results


# ---------------------------------------------------------------- report


def _med(rounds: list[Round], key: str, attr: str) -> float | None:
    values = []
    for r in rounds:
        res = r.get(key)
        if isinstance(res, LoadResult):
            values.append(getattr(res, attr))
        elif attr == "value" and isinstance(res, float):
            values.append(res)
    return median(values)


def _spread(rounds: list[Round], key: str, attr: str) -> str:
    values = [getattr(r[key], attr) for r in rounds if isinstance(r.get(key), LoadResult)]
    if len(values) < 2:
        return ""
    return f"{min(values):.0f}-{max(values):.0f}"


def _errors(rounds: list[Round], key: str) -> int:
    return sum(r[key].errors + r[key].non2xx for r in rounds if isinstance(r.get(key), LoadResult))


def report(results: dict[str, list[Round]], args: argparse.Namespace) -> None:
    order = [n for n in [*PEERS, "roost-full"] if n in results]
    banner(
        f"HTTP/1.1 keep-alive: wrk -t1 -c{args.connections} -d{args.duration}s "
        f"(median of {args.repeat}; range of req/s)"
    )
    rows = []
    for name in order:
        rr = results[name]
        rows.append(
            [
                name,
                fmt(_med(rr, "h1", "rps"), ".0f"),
                _spread(rr, "h1", "rps"),
                fmt(_med(rr, "h1", "p50"), ".2f"),
                fmt(_med(rr, "h1", "p99"), ".2f"),
                fmt(median(r.get("h1cpu") for r in rr), ".1f"),  # type: ignore[misc]
                fmt(median(r.get("h1busy") for r in rr), ".0%"),  # type: ignore[misc]
                _errors(rr, "h1"),
            ]
        )
    headers = ["proxy", "req/s", "range", "p50 ms", "p99 ms", "CPU µs/req", "proxy CPU"]
    print(table([*headers, "errors+non2xx"], rows))
    print(
        "(proxy CPU: the share of CPU 0 the proxy used during the wrk run; well below 100 %: "
        "the proxy was not the limit, CPU 1 -- wrk + backend -- was)"
    )

    if any("h2" in r for rr in results.values() for r in rr):
        banner(f"h2c (prior knowledge): h2load -c10 -m10 -D{args.duration}")
        rows = []
        for name in order:
            rr = results[name]
            if not any("h2" in r for r in rr):
                rows.append([name, "skipped", "", "", "", ""])
                continue
            rows.append(
                [
                    name,
                    fmt(_med(rr, "h2", "rps"), ".0f"),
                    _spread(rr, "h2", "rps"),
                    fmt(_med(rr, "h2", "p50"), ".2f"),
                    fmt(_med(rr, "h2", "p99"), ".2f"),
                    _errors(rr, "h2"),
                ]
            )
        print(table(["proxy", "req/s", "range", "p50 ms", "p99 ms", "errors+non2xx"], rows))

    for rate in args.rates:
        banner(
            f"fixed rate {rate} req/s (hey -c{args.workers} -q{max(1, round(rate / args.workers))}"
            f" keep-alive, {args.duration}s): proxy CPU per request"
        )
        rows = []
        for name in order:
            rr = results[name]
            cpu = median(r.get(f"cpu{rate}") for r in rr)  # type: ignore[misc]
            rows.append(
                [
                    name,
                    fmt(_med(rr, f"rate{rate}", "rps"), ".0f"),
                    fmt(cpu, ".1f"),
                    fmt(_med(rr, f"rate{rate}", "p50"), ".2f"),
                    fmt(_med(rr, f"rate{rate}", "p99"), ".2f"),
                    _errors(rr, f"rate{rate}"),
                ]
            )
        print(
            table(
                ["proxy", "achieved req/s", "CPU µs/req", "p50 ms", "p99 ms", "errors+non2xx"], rows
            )
        )
    print(
        "reference CPU µs/req measured on this machine class by others (15k req/s): "
        + ", ".join(f"{k} {v}" for k, v in REFERENCE_US.items())
    )

    banner("ratios vs nginx (median rounds) and the targets of issue 3")
    base = results.get("nginx")
    if not base:
        print("nginx did not run: no ratios")
        return
    rows = []
    for name in order:
        if name == "nginx":
            continue
        rr = results[name]
        rows.append(
            [
                f"{name} HTTP/1.1 req/s",
                fmt(ratio(_med(rr, "h1", "rps"), _med(base, "h1", "rps")), ".2f", "x"),
                f">= {TARGET_RPS}x" if name.startswith("roost") else "",
            ]
        )
        if any("h2" in r for r in rr) and any("h2" in r for r in base):
            rows.append(
                [
                    f"{name} h2c req/s",
                    fmt(ratio(_med(rr, "h2", "rps"), _med(base, "h2", "rps")), ".2f", "x"),
                    f">= {TARGET_H2}x" if name.startswith("roost") else "",
                ]
            )
        for rate in args.rates:
            cpu = median(r.get(f"cpu{rate}") for r in rr)  # type: ignore[misc]
            base_cpu = median(r.get(f"cpu{rate}") for r in base)  # type: ignore[misc]
            rows.append(
                [
                    f"{name} CPU/req @{rate}/s",
                    fmt(ratio(cpu, base_cpu), ".2f", "x"),
                    f"<= {TARGET_CPU}x" if name.startswith("roost") else "",
                ]
            )
            rows.append(
                [
                    f"{name} p99 @{rate}/s",
                    fmt(
                        ratio(_med(rr, f"rate{rate}", "p99"), _med(base, f"rate{rate}", "p99")),
                        ".2f",
                        "x",
                    ),
                    f"<= {TARGET_P99}x" if name.startswith("roost") else "",
                ]
            )
    print(table(["measure (proxy / nginx)", "ratio", "target"], rows))

    banner("processes and cores")
    rows = []
    for name in order:
        proxy_side, _, other = str(results[name][0].get("layout", "")).partition("; ")
        rows.append([name, proxy_side, f"load generator (wrk/h2load/hey) + {other or BACKEND}"])
    print(table(["proxy", "proxy side", "CPU 1"], rows, left=3))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--workers", type=int, default=50, help="hey workers at fixed rates")
    parser.add_argument(
        "--rates",
        default="2000,5000",
        help="fixed rates (req/s) for CPU per request, comma-separated",
    )
    parser.add_argument(
        "--peers",
        default="nginx,haproxy,envoy,roost-edge,bare-relay,policy-relay",
        help="comma-separated subset of " + ",".join(PEERS),
    )
    parser.add_argument(
        "--no-full", dest="full", action="store_false", help="skip the full Roost path (roost up)"
    )
    parser.add_argument("--no-h2", action="store_true", help="skip h2c runs")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s runs (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    parser.add_argument(
        "--src",
        type=Path,
        help="run Roost from this source tree (e.g. a `git worktree` of an older commit's "
        "src/): a before/after comparison in the same minutes",
    )
    args = parser.parse_args()
    if args.src is not None:
        if not (args.src / "roost" / "__init__.py").is_file():
            print(f"--src {args.src}: no roost package there", file=sys.stderr)
            return 2
        os.environ["PYTHONPATH"] = str(args.src.resolve())  # every child inherits it
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    args.notes = []
    if args.quick:
        args.repeat, args.duration = 1, 3
    missing = [t for t in ("nginx", "wrk", "hey", "taskset") if not have(t)]
    if not args.no_h2 and not have("h2load"):
        missing.append("h2load")
    if missing:
        print(f"missing tools: {', '.join(missing)}: run bench/setup.sh", file=sys.stderr)
        return 2
    install_sigterm()
    print(f"throughput: {machine_note()}")
    if args.src is not None:
        print(f"roost from: {args.src.resolve()}")
    print(f"pinning: proxy on CPU {PROXY_CPU}; load generator and backend on CPU {LOAD_CPU}")
    if warn := busy_note():
        print(warn)
    started = time.monotonic()
    try:
        results = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    report(results, args)
    if args.notes:
        banner("notes")
        for note in dict.fromkeys(args.notes):
            print(f"- {note}")
    print(f"\n(took {time.monotonic() - started:.0f} s)")
    if args.json:
        write_results_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
