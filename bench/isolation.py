"""Isolation: app A flooded past its limits while app B gets steady paced load.

    bench/setup.sh && .venv/bin/python bench/isolation.py [--repeat 3] [--quick]

One ``roost up`` node (pinned to CPU 0) runs two apps built from ``bench/apps/cpu_app.py``
(instances re-pinned to CPU 1):

- **A**: ``--a-instances`` instances with ``hard_limit`` ``--a-hard-limit``, flooded on
  ``/sleep?ms=--a-sleep-ms`` (its capacity is instances x hard_limit x 1000/ms req/s);
- **B**: one instance, a cheap ``/``, offered a steady ``--b-rate`` req/s (open loop, from
  this script, pinned to CPU 1).

The same phases also run through **haproxy** (``--peer haproxy``, the default when installed;
``--peer none`` skips it) on CPU 0, in front of the same instances: ``maxconn
--a-hard-limit`` per A server, A's queue capped at Roost's per-app queue length (200, beyond it
503 at once), ``timeout queue`` = Roost's wait (5 s); B unlimited. What a mature proxy's B
p99 does under the same flood, measured in the same run, says how much of B's loss is the
flood's shape on this machine and how much is Roost.

Phases (each ``--duration`` s, rotated order per round): ``baseline`` (B alone),
``flood-paced`` (hey: ``--flood-clients`` clients each capped at ``--flood-rate``/clients
req/s, i.e. well past A's capacity but paced) and ``flood-max`` (wrk ``-c--flood-clients``
closed loop at full speed: as much as the load generator's core can send). Reported: B's
p50/p99/errors per phase, B's p99 ratio vs the baseline (target <= 1.2x), what A's flood
got (2xx/503/other) and how busy the Roost process was. The flood generators run at
``nice 19``, and B's generator (while it measures) and B's instance at real-time priority
(``SCHED_FIFO``; ``--no-rt`` turns that off), so that on the shared CPU 1 the flood's
generator does not delay them: else B's latency measures the load generator, not the proxy
(with ``nice`` alone, B sent straight to its instance -- the "direct" control -- still got
~2x slower under the paced flood). The proxies (Roost, haproxy) run at ordinary priority.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _loadgen
from _common import (
    BENCH,
    LOAD_CPU,
    PROXY_CPU,
    PYTHON,
    CpuMeter,
    LoadResult,
    Procs,
    banner,
    busy_note,
    fmt,
    free_port,
    have,
    install_sigterm,
    machine_note,
    median,
    ratio,
    run_hey,
    run_wrk,
    table,
    workdir,
    write_results_json,
)
from _peers import RoostNode, haproxy_head, run_haproxy, start_roost_node, write_app

APP = BENCH / "apps" / "cpu_app.py"
PHASES = ("baseline", "flood-paced", "flood-max")
TARGET = 1.2
RT_PRIORITY = 10  # SCHED_FIFO priority of B's generator and instance (--rt)
A_QUEUE = 200  # Roost's default per-app wait queue length (the peer's A queue matches it)
WAIT_S = 5  # Roost's default per-app wait (the peer's timeout queue)


@dataclass
class Target:
    """Where B's load and the flood go, and which process's CPU to account."""

    name: str
    port: int
    pid: int


def haproxy_two_apps(port: int, a_ports: list[int], b_port: int, hard_limit: int) -> str:
    """haproxy, one thread, routing ``a.localhost`` / ``b.localhost`` like the Roost edge:
    A's servers take ``hard_limit`` each (leastconn), A's queue is capped like Roost's."""
    a_servers = "\n".join(
        f"    server a{i} 127.0.0.1:{p} maxconn {hard_limit}" for i, p in enumerate(a_ports, 1)
    )
    return (
        haproxy_head(maxconn=8000, queue_timeout=WAIT_S)
        + f"""frontend fe
    bind 127.0.0.1:{port}
    option forwardfor
    acl host_a hdr(host) -i a.localhost
    http-request return status 503 content-type text/plain string "app a is at capacity" \
        if host_a {{ queue(a) ge {A_QUEUE} }}
    use_backend a if host_a
    default_backend b
backend a
    balance leastconn
{a_servers}
backend b
    server b1 127.0.0.1:{b_port}
"""
    )


def deploy_apps(node: RoostNode, work: Path, args: argparse.Namespace) -> None:
    common = {"command": f"{PYTHON} cpu_app.py", "files": {"cpu_app.py": APP}}
    b_env = {"BENCH_CPUS": LOAD_CPU, **({"BENCH_RT": str(RT_PRIORITY)} if args.rt else {})}
    node.deploy(
        write_app(
            work / "app-a",
            name="a",
            count=args.a_instances,
            soft_limit=max(1, args.a_hard_limit // 2),
            hard_limit=args.a_hard_limit,
            env={"BENCH_CPUS": LOAD_CPU},
            **common,
        ),
        "a",
    )  # type: ignore[arg-type]
    node.deploy(
        write_app(
            work / "app-b", name="b", count=1, soft_limit=20, hard_limit=100, env=b_env, **common
        ),
        "b",
    )  # type: ignore[arg-type]


@contextlib.contextmanager
def _b_priority(rt: bool) -> Iterator[None]:
    """B's generator (the calling thread) at real-time priority for the block, if ``rt``."""
    if not rt:
        yield
        return
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def run_phase(
    target: Target, phase: str, args: argparse.Namespace, b_port: int
) -> dict[str, object]:
    """B's load via the edge (and, first, straight to B's instance as a control), with or
    without A's flood running in a thread."""
    flood: dict[str, LoadResult] = {}
    a_path = f"/sleep?ms={args.a_sleep_ms}"
    flood_secs = int(args.control + args.duration + 3)

    def do_flood() -> None:
        if phase == "flood-paced":
            flood["r"] = run_hey(
                target.port,
                "a.localhost",
                rate=args.flood_rate,
                workers=args.flood_clients,
                duration=flood_secs,
                path=a_path,
                nice=19,
            )
        else:
            flood["r"] = run_wrk(
                target.port,
                "a.localhost",
                connections=args.flood_clients,
                duration=flood_secs,
                path=a_path,
                nice=19,
            )

    thread = None
    if phase != "baseline":
        thread = threading.Thread(target=do_flood, daemon=True)
        thread.start()
        time.sleep(1.5)  # the flood is in full swing before B's measurement starts
    control = None
    with _b_priority(args.rt):  # (this thread only: the flood thread started before)
        if args.control > 0:  # same load straight to B's instance: what the proxy did not cause
            direct = _loadgen.run(
                _loadgen.open_loop(
                    b_port,
                    "b.localhost",
                    "/",
                    rate=args.b_rate,
                    duration=args.control,
                    timeout=args.timeout,
                )
            )
            control = _loadgen.summarize(direct, args.control)
        meter = CpuMeter([target.pid])
        meter.start()
        started = time.monotonic()
        samples = _loadgen.run(
            _loadgen.open_loop(
                target.port,
                "b.localhost",
                "/",
                rate=args.b_rate,
                duration=args.duration,
                timeout=args.timeout,
            )
        )
        elapsed = time.monotonic() - started
        cpu = meter.stop()
    if thread is not None:
        thread.join(flood_secs + 40)
    return {
        "b": _loadgen.summarize(samples, elapsed),
        "direct": control,
        "flood": flood.get("r"),
        "cpu": cpu / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15, help="seconds per phase")
    parser.add_argument("--b-rate", type=float, default=200, help="B's steady req/s")
    parser.add_argument("--a-instances", type=int, default=2)
    parser.add_argument("--a-hard-limit", type=int, default=5)
    parser.add_argument("--a-sleep-ms", type=int, default=100)
    parser.add_argument(
        "--flood-clients",
        type=int,
        default=1000,
        help="more than A's capacity + the edge's per-app queue (200)",
    )
    parser.add_argument(
        "--flood-rate", type=int, default=2000, help="flood-paced: total req/s cap over all clients"
    )
    parser.add_argument(
        "--control",
        type=float,
        default=8,
        help="seconds of B's load straight to its instance per phase (0: none)",
    )
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--quick", action="store_true", help="1 round of 6 s phases")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument(
        "--rt",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="B's generator (while measuring) and B's instance run SCHED_FIFO on CPU 1, so "
        "the flood's generator on the same CPU cannot delay them (--no-rt: ordinary priority)",
    )
    parser.add_argument(
        "--peer",
        choices=("haproxy", "none"),
        default="haproxy" if have("haproxy") else "none",
        help="also run the phases through this proxy in front of the same instances",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.duration = 1, 6
    phases = [p for p in args.phases.split(",") if p in PHASES]
    missing = [t for t in ("wrk", "hey", "taskset") if not have(t)]
    if missing:
        print(f"missing tools: {', '.join(missing)}: run bench/setup.sh", file=sys.stderr)
        return 2
    install_sigterm()
    print(f"isolation: {machine_note()}")
    if warn := busy_note():
        print(warn)
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # B's generator shares CPU 1 with the flood
    a_capacity = args.a_instances * args.a_hard_limit * 1000 / args.a_sleep_ms
    print(
        f"A: {args.a_instances} instances, hard_limit {args.a_hard_limit}, "
        f"/sleep?ms={args.a_sleep_ms} -> capacity {a_capacity:.0f} req/s; "
        f"B: 1 instance, {args.b_rate:.0f} req/s open loop on /"
    )
    print(
        f"pinning: roost up on CPU {PROXY_CPU}; instances, B's generator and the flood on "
        f"CPU {LOAD_CPU}"
        + (" (B's generator and instance SCHED_FIFO: --rt)" if args.rt else " (--no-rt)")
    )
    results: dict[str, dict[str, list[dict[str, object]]]] = {}
    try:
        with workdir("isolation") as work, Procs(work) as procs:
            node = start_roost_node(procs, work, PROXY_CPU)
            deploy_apps(node, work, args)
            b_port = node.instance_ports("b")[0]
            layout = "edge + host proxy" if node.host_proxy() else "edge only (no host proxy)"
            print(f"roost up: 1 process ({layout}, API, agent)")
            targets = [Target("roost", node.port, node.proc.pid)]
            if args.peer == "haproxy":
                port = free_port()
                cfg = haproxy_two_apps(port, node.instance_ports("a"), b_port, args.a_hard_limit)
                proc = run_haproxy(procs, work, cfg, port, PROXY_CPU)
                targets.append(Target("haproxy", port, proc.pid))
                print("haproxy: 1 process, nbthread 1, CPU 0, in front of the same instances")
            for rnd in range(args.repeat):
                banner(f"round {rnd + 1}/{args.repeat}")
                order = phases[rnd % len(phases) :] + phases[: rnd % len(phases)]
                for target in targets:
                    for phase in order:
                        out = run_phase(target, phase, args, b_port)
                        _print_phase(target.name, phase, out)
                        results.setdefault(target.name, {}).setdefault(phase, []).append(out)
                        time.sleep(1)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    for name, by_phase in results.items():
        report(name, by_phase, args)
    if args.json:
        write_results_json(
            args.json,
            {f"{name}/{phase}": runs for name, by in results.items() for phase, runs in by.items()},
        )
    return 0


def _print_phase(name: str, phase: str, out: dict[str, object]) -> None:
    b = out["b"]
    assert isinstance(b, LoadResult)
    d = out["direct"]
    ctl = f", direct p99 {d.p99:.2f} ms" if isinstance(d, LoadResult) and d.p99 else ""
    print(
        f"  {name} {phase}: B p50 {fmt(b.p50, '.2f')} ms, p99 {fmt(b.p99, '.2f')} ms,"
        f" ok {b.ok}/{b.requests}, {name} CPU {out['cpu']:.0%}{ctl}",
        flush=True,
    )


def _flood_summary(runs: list[dict[str, object]]) -> str:
    floods = [r["flood"] for r in runs if isinstance(r.get("flood"), LoadResult)]
    if not floods:
        return ""
    rps = median(f.rps for f in floods)  # type: ignore[union-attr]
    ok = median(f.ok / f.duration if f.duration else None for f in floods)  # type: ignore[union-attr]
    bad = median(f.non2xx for f in floods)  # type: ignore[union-attr]
    errs = median(f.errors for f in floods)  # type: ignore[union-attr]
    return (
        f"{fmt(rps, '.0f')} req/s ({fmt(ok, '.0f')} ok/s, non-2xx {fmt(bad, '.0f')}, "
        f"errors {fmt(errs, '.0f')})"
    )


def report(
    name: str, results: dict[str, list[dict[str, object]]], args: argparse.Namespace
) -> None:
    banner(
        f"isolation through {name}: B at {args.b_rate:.0f} req/s, median of {args.repeat} rounds"
    )
    base = results.get("baseline", [])
    base_p99 = median(r["b"].p99 for r in base)  # type: ignore[attr-defined]
    rows = []
    for phase in PHASES:
        runs = results.get(phase)
        if not runs:
            continue
        bs: list[LoadResult] = [r["b"] for r in runs]  # type: ignore[misc]
        direct: list[LoadResult] = [r["direct"] for r in runs if r.get("direct")]  # type: ignore[misc]
        p99 = median(b.p99 for b in bs)
        vs_base = fmt(ratio(p99, base_p99), ".2f", "x") if phase != "baseline" else "1.00x"
        rows.append(
            [
                phase,
                fmt(median(b.p50 for b in bs), ".2f"),
                fmt(p99, ".2f"),
                vs_base,
                fmt(median(d.p99 for d in direct), ".2f"),
                sum(b.non2xx + b.errors for b in bs),
                fmt(median(r["cpu"] for r in runs), ".0%"),  # type: ignore[misc]
                _flood_summary(runs),
            ]
        )
    headers = ["phase", "B p50 ms", "B p99 ms", "p99 vs baseline", "direct p99 ms"]
    headers += ["B failed (sum)", f"{name} CPU", "flood to A (achieved)"]
    print(table(headers, rows))
    print(
        f"target: B's p99 under the flood <= {TARGET}x the baseline "
        f"(flood-paced: hey -c{args.flood_clients} up to {args.flood_rate} req/s; "
        f"flood-max: wrk -c{args.flood_clients}, closed loop)"
    )
    print(
        "direct p99: the same B load sent straight to B's instance in the same phase, a "
        "control for what the shared CPU 1 (not the proxy) does to B"
    )


if __name__ == "__main__":
    sys.exit(main())
