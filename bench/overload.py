"""Overload: a CPU-bound app with 3 instances offered 1.5x its capacity, paced open loop.

    bench/setup.sh && .venv/bin/python bench/overload.py [--repeat 3] [--quick]

The app (``bench/apps/cpu_app.py``) burns ``--ms`` of CPU per request; one instance uses at
most one core (GIL). Capacity is ``instances x 1000/ms`` req/s on paper, but this machine
has 2 cores for 3 instances, proxies and the load generator, so it is also *measured*
(closed loop straight to the instances) and the smaller of the two is used. The offered
load is ``--factor`` x capacity, paced (open loop: latency counted from each request's
due time) for ``--duration`` seconds. Compared:

(a) ``roost-limit``: ``roost up`` + deploy with ``[http_service.concurrency] hard_limit``:
    the host proxy refuses at the limit, the edge retries elsewhere or waits (bounded) and
    answers 503 "at capacity";
(b) ``roost-queue``: the same app without ``hard_limit`` (Roost has no knob to turn
    refusals off, so this is "no hard limit"): requests queue in the instances;
(c) ``haproxy``: ``balance leastconn``, ``maxconn <hard_limit>`` per server, haproxy's own
    queue with ``timeout queue`` equal to Roost's queue wait (5 s).

Nothing is pinned here (the instances need both cores). Per run: p50/p99 of the successful
answers, 503s, other non-2xx, errors (no answer in ``--timeout`` s), and the highest
in-flight count any instance saw (``/stats``: above ``hard_limit`` = the limit was not held).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _loadgen
from _common import (
    BENCH,
    PYTHON,
    LoadResult,
    Procs,
    banner,
    busy_note,
    fmt,
    free_port,
    have,
    http_get,
    install_sigterm,
    machine_note,
    median,
    table,
    wait_http,
    wait_port,
    workdir,
    write_results_json,
)
from _peers import haproxy_config, run_haproxy, start_roost_node, write_app

APP = BENCH / "apps" / "cpu_app.py"
SCENARIOS = ("roost-limit", "roost-queue", "haproxy")


def instance_stats(ports: list[int]) -> list[dict[str, int]]:
    import socket

    stats = []
    for port in ports:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            stats.append(json.loads(data.split(b"\r\n\r\n", 1)[1]))
        except (OSError, ValueError, IndexError):
            stats.append({})
    return stats


def reset_stats(ports: list[int]) -> None:
    for port in ports:
        http_get(port, "/reset")


def start_plain_instances(procs: Procs, count: int) -> list[int]:
    """``count`` cpu_app processes on free ports (for haproxy and the calibration)."""
    ports = []
    for _ in range(count):
        port = free_port()
        proc = procs.start(f"cpu-app-{port}", [PYTHON, APP], env={"PORT": str(port)})
        wait_port(port, proc)
        ports.append(port)
    for port in ports:
        wait_http(port, "/")
    return ports


def calibrate(args: argparse.Namespace) -> float:
    """Measured capacity: closed loop straight to the instances, enough clients to fill them."""
    with workdir("overload-cal") as work, Procs(work) as procs:
        ports = start_plain_instances(procs, args.instances)
        samples = _loadgen.run(
            _loadgen.closed_loop(
                ports,
                "x",
                f"/work?ms={args.ms}",
                concurrency=args.instances * 2,
                duration=args.calibrate,
            )
        )
    ok = sum(1 for s in samples if s.status == 200)
    return ok / args.calibrate


def run_scenario(name: str, args: argparse.Namespace, rate: float, work: Path) -> dict[str, object]:
    path = f"/work?ms={args.ms}"
    with Procs(work) as procs:
        if name == "haproxy":
            ports = start_plain_instances(procs, args.instances)
            port = free_port()
            run_haproxy(
                procs,
                work,
                haproxy_config(
                    port,
                    ports,
                    balance="leastconn",
                    maxconn=args.hard_limit,
                    queue_timeout=args.queue_wait,
                ),
                port,
                None,
            )
            host = "cpu.localhost"
            layout = f"haproxy 1 thread + {args.instances} instances"
        else:
            node = start_roost_node(procs, work, None)
            hard = args.hard_limit if name == "roost-limit" else None
            app = write_app(
                work / "cpu-app",
                name="cpu",
                command=f"{PYTHON} cpu_app.py",
                count=args.instances,
                soft_limit=min(args.soft_limit, hard or args.soft_limit),
                hard_limit=hard,
                files={"cpu_app.py": APP},
            )
            node.deploy(app, "cpu")
            ports = node.instance_ports("cpu")
            port, host = node.port, "cpu.localhost"
            layout = (
                "roost up (edge + host proxy)"
                if node.host_proxy()
                else "roost up (edge only: no host proxy)"
            )
            layout += f" + {len(ports)} instances"
        wait_http(port, "/", host)
        reset_stats(ports)
        started = time.monotonic()
        samples = _loadgen.run(
            _loadgen.open_loop(
                port, host, path, rate=rate, duration=args.duration, timeout=args.timeout
            )
        )
        res = _loadgen.summarize(samples, time.monotonic() - started)
        stats = instance_stats(ports)
    return {
        "result": res,
        "max_inflight": [s.get("max_inflight") for s in stats],
        "served": [s.get("served") for s in stats],
        "layout": layout,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", type=int, default=20, help="CPU ms per request")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--hard-limit", type=int, default=4)
    parser.add_argument("--soft-limit", type=int, default=2)
    parser.add_argument("--factor", type=float, default=1.5, help="offered load / capacity")
    parser.add_argument("--duration", type=float, default=20, help="seconds of offered load")
    parser.add_argument("--timeout", type=float, default=30, help="per-request client timeout")
    parser.add_argument(
        "--queue-wait",
        type=float,
        default=5.0,
        help="haproxy timeout queue (match Roost's queue_timeout)",
    )
    parser.add_argument("--calibrate", type=float, default=5, help="seconds of calibration")
    parser.add_argument("--capacity", type=float, help="skip calibration, use this req/s")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="1 round of 8 s (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.duration = 1, 8
    scenarios = [s for s in args.scenarios.split(",") if s in SCENARIOS]
    if "haproxy" in scenarios and not have("haproxy"):
        print("haproxy missing: run bench/setup.sh", file=sys.stderr)
        return 2
    install_sigterm()
    print(f"overload: {machine_note()}")
    if warn := busy_note():
        print(warn)
    nominal = args.instances * 1000 / args.ms
    try:
        measured = args.capacity or calibrate(args)
        capacity = min(nominal, measured)
        rate = args.factor * capacity
        print(
            f"app: /work?ms={args.ms}, {args.instances} instances, hard_limit "
            f"{args.hard_limit}, soft_limit {args.soft_limit}"
        )
        print(
            f"capacity: nominal {nominal:.0f} req/s ({args.instances} x 1000/{args.ms}), "
            f"measured {measured:.0f} req/s -> using {capacity:.0f}; offered "
            f"{rate:.0f} req/s ({args.factor}x) for {args.duration:.0f} s, open loop"
        )
        results: dict[str, list[dict[str, object]]] = {}
        for rnd in range(args.repeat):
            banner(f"round {rnd + 1}/{args.repeat}")
            order = scenarios[rnd % len(scenarios) :] + scenarios[: rnd % len(scenarios)]
            for name in order:
                with workdir(f"overload-{name}") as work:
                    try:
                        out = run_scenario(name, args, rate, work)
                    except Exception as exc:
                        print(f"  {name}: failed: {exc}")
                        continue
                res = out["result"]
                assert isinstance(res, LoadResult)
                print(
                    f"  {name}: ok {res.ok}, 503 {res.statuses.get(503, 0)}, errors "
                    f"{res.errors}, p50 {fmt(res.p50, '.0f')} ms, p99 {fmt(res.p99, '.0f')} ms,"
                    f" max in-flight {out['max_inflight']}",
                    flush=True,
                )
                results.setdefault(name, []).append(out)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130
    report(results, args, rate)
    if args.json:
        write_results_json(args.json, results)
    return 0


def report(
    results: dict[str, list[dict[str, object]]], args: argparse.Namespace, rate: float
) -> None:
    banner(
        f"overload: {rate:.0f} req/s offered ({args.factor}x capacity), "
        f"median of {args.repeat} rounds"
    )
    rows = []
    med: dict[str, dict[str, float | None]] = {}
    for name in SCENARIOS:
        if name not in results:
            continue
        rr = [r["result"] for r in results[name]]
        res: list[LoadResult] = [r for r in rr if isinstance(r, LoadResult)]
        m = {
            "ok": median(r.ok for r in res),
            "503": median(r.statuses.get(503, 0) for r in res),
            "other": sum(r.non2xx - r.statuses.get(503, 0) for r in res),
            "errors": sum(r.errors for r in res),
            "p50": median(r.p50 for r in res),
            "p99": median(r.p99 for r in res),
            "goodput": median(r.rps for r in res),
        }
        med[name] = m
        worst = max((x or 0) for r in results[name] for x in r["max_inflight"])  # type: ignore[attr-defined]
        rows.append(
            [
                name,
                fmt(m["ok"], ".0f"),
                fmt(m["goodput"], ".0f"),
                fmt(m["503"], ".0f"),
                fmt(m["other"], ".0f"),
                fmt(m["errors"], ".0f"),
                fmt(m["p50"], ".0f"),
                fmt(m["p99"], ".0f"),
                worst,
            ]
        )
    print(
        table(
            [
                "scenario",
                "ok",
                "ok/s",
                "503",
                "other non-2xx (sum)",
                "errors (sum)",
                "p50 ms",
                "p99 ms (ok)",
                "max in-flight/instance",
            ],
            rows,
        )
    )
    print(
        f"(hard_limit {args.hard_limit}; errors = no answer within {args.timeout:.0f} s or "
        "connection failures, summed over rounds; other columns: medians; p50/p99 over "
        "successful answers, from each request's due time)"
    )
    for name in SCENARIOS:
        for r in results.get(name, [])[:1]:
            print(f"{name}: {r['layout']}")
    banner("targets (issue 3)")
    a, c = med.get("roost-limit"), med.get("haproxy")
    if a:
        extra = (a["other"] or 0) + (a["errors"] or 0)
        print(f"(a) errors beyond the configured 503s: {extra:.0f} (target 0)")
        worst = max((x or 0) for r in results["roost-limit"] for x in r["max_inflight"])  # type: ignore[attr-defined]
        held = "held" if worst <= args.hard_limit else "NOT held (no limit enforced)"
        print(
            f"(a) hard_limit {args.hard_limit}: max in-flight seen by an instance {worst}: {held}"
        )
    if a and c and a["p99"] and c["p99"]:
        print(
            f"(a) p99 {a['p99']:.0f} ms vs (c) haproxy p99 {c['p99']:.0f} ms: "
            f"{a['p99'] / c['p99']:.2f}x (target <= 1.0x)"
        )
    print("(b) is 'no hard_limit' (Roost has no knob to disable refusals while keeping a limit)")


if __name__ == "__main__":
    sys.exit(main())
