"""HTTP/1.1 req/s through the edge alone vs the full path (edge -> backhaul -> host proxy).

    .venv/bin/python bench/host_path.py [--seconds 10] [--connections 50] [--src DIR]

Starts a trivial keep-alive backend (uvloop, fixed 2-byte answer) and wrk on CPU 1, and the
proxy process on CPU 0, in two modes:

- ``direct``: the edge sends straight to the backend (no host proxy, no limits);
- ``full``: edge and host proxy in one process (as ``roost up`` runs them): client -> edge
  -> unix-socket backhaul -> host proxy (admission, hard_limit 10000) -> backend.

``--src DIR`` runs the proxy from another source tree (e.g. ``git archive HEAD src`` to
compare with the previous commit; only ``direct`` exists there). Prints req/s and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Backend(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        data = self.tail + data
        n = data.count(b"\r\n\r\n")
        self.tail = data[data.rfind(b"\r\n\r\n") + 4 :] if n else data
        if n:
            self.transport.write(REPLY * n)  # type: ignore[attr-defined]


async def backend(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(_Backend, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


async def proxy(port: int, backend_port: int, mode: str) -> None:
    from roost.proxy.edge import start_edge
    from roost.proxy.routes import Backend, RouteHolder, RouteTable

    if mode == "direct":
        b = Backend("i1", "127.0.0.1", backend_port)
        holder = RouteHolder(RouteTable.build([("bench", [])], {"bench": [b]}))
        await start_edge("127.0.0.1", port, holder, region="bench")
    else:
        from roost.proxy.admission import HostTarget, InstanceTable, TableHolder
        from roost.proxy.host import start_host_proxy

        table = TableHolder(
            InstanceTable([HostTarget("i1", "bench", backend_port, hard_limit=10000)])
        )
        sock = os.path.join(tempfile.mkdtemp(), "backhaul.sock")
        host = await start_host_proxy(sock, table)
        b = Backend("i1", "127.0.0.1", backend_port, backhaul=host.address, hard_limit=10000)
        holder = RouteHolder(RouteTable.build([("bench", [])], {"bench": [b]}))
        await start_edge("127.0.0.1", port, holder, region="bench", admission=host.admission)
    await asyncio.Event().wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def run(mode: str, args: argparse.Namespace) -> str:
    bport, pport = free_port(), free_port()
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = args.src
    me = str(Path(__file__).resolve())
    procs = [
        subprocess.Popen(["taskset", "-c", "1", str(PYTHON), me, "--child", "backend", str(bport)]),
        subprocess.Popen(
            ["taskset", "-c", "0", str(PYTHON), me, "--child", mode, str(pport), str(bport)],
            env=env,
        ),
    ]
    try:
        wait_port(bport)
        wait_port(pport)
        url = f"http://127.0.0.1:{pport}/"
        wrk = [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{args.connections}",
            "-H",
            "Host: bench.localhost",
        ]
        subprocess.run([*wrk, "-d2s", url], capture_output=True, check=True)  # warm-up
        out = subprocess.run(
            [*wrk, f"-d{args.seconds}s", "--latency", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        f"{mode:7s} {float(rps.group(1)) if rps else 0:10.0f} req/s  "
        f"p50 {p50.group(1) if p50 else '?':>8s}  p99 {p99.group(1) if p99 else '?':>8s}  "
        f"non-2xx {errors.group(1) if errors else 0}"
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        import uvloop

        role, ports = sys.argv[2], [int(p) for p in sys.argv[3:]]
        coro = backend(ports[0]) if role == "backend" else proxy(ports[0], ports[1], role)
        uvloop.run(coro)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--src", help="run the proxy from this source tree")
    parser.add_argument("--modes", default="direct,full")
    args = parser.parse_args()
    for mode in args.modes.split(","):
        print(run(mode, args), flush=True)


if __name__ == "__main__":
    main()
