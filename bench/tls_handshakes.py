"""TLS handshakes per second: Roost's edge vs nginx, same ECDSA P-256 certificate, same run.

    .venv/bin/python bench/tls_handshakes.py [--seconds 5] [--clients 2]

Both servers run one process (nginx ``worker_processes 1``; the edge on uvloop) with TLS 1.2/1.3
and session tickets on. ``openssl s_time`` clients (``--clients`` in parallel) do full handshakes
(``-new``: no resumption) then resumed ones (``-reuse``). Printed per server: handshakes/s seen
by the clients, and handshakes per second of *server* CPU (utime+stime from /proc), which is the
fair number when clients and server share few cores; then the Roost/nginx ratios.

Child mode (``--edge-child PORT CERT KEY``) runs the edge alone with the certificate in a
throw-away catalog; it is started and stopped (by pid) by the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = "bench.test"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def s_time(port: int, seconds: int, clients: int, reuse: bool) -> int:
    """Total connections made by ``clients`` parallel ``openssl s_time`` runs."""
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-time", str(seconds)]
    args.append("-reuse" if reuse else "-new")  # s_time sends no SNI: default_name serves it
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 30)
        found = re.findall(r"(\d+) connections in [\d.]+s", out)
        total += int(found[-1]) if found else 0
    return total


def measure(name: str, pid: int, port: int, seconds: int, clients: int) -> dict[str, float]:
    result = {}
    for kind, reuse in (("full", False), ("resumed", True)):
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        n = s_time(port, seconds, clients, reuse)
        cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
        result[kind] = n / wall
        result[kind + "_cpu"] = n / cpu if cpu else 0.0
        per_cpu = result[kind + "_cpu"]
        print(f"{name:6} {kind:8} {n / wall:9.0f} handshakes/s  {per_cpu:9.0f} /cpu-s")
    return result


def start_nginx(work: Path, port: int, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; master_process off; pid {work}/nginx.pid;
error_log {work}/nginx-error.log; events {{ worker_connections 4096; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port} ssl; server_name {NAME};
    ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on;
    location / {{ return 200 "ok"; }} }} }}
""")
    return subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)])


async def edge_child(port: int, cert: Path, key: Path) -> None:
    from roost.catalog import certs as c
    from roost.catalog.client import Catalog
    from roost.catalog.sqlite import SqliteStore
    from roost.proxy.edge import EdgeTls, start_edge
    from roost.proxy.routes import RouteHolder
    from roost.proxy.tls.certcache import CertCache

    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "catalog.db")
        catalog, seal = Catalog(store), c.KeySeal(b"b" * 32)
        chain = cert.read_text()
        sealed = seal.seal(c.cert_key(NAME), key.read_bytes())
        record = c.Certificate(
            hostname=NAME, app="bench", source="uploaded", status="ready",
            chain_pem=chain, key_sealed=sealed,
        )  # fmt: skip
        await c.put_cert(catalog, record)
        cache = CertCache(catalog, seal, warm=True, default_name=NAME)
        follow = asyncio.ensure_future(cache.run())
        tls = EdgeTls("127.0.0.1", port, cache)
        edge = await start_edge("127.0.0.1", 0, RouteHolder(), region="bench", tls=tls)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await edge.close(1.0)
        follow.cancel()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--edge-child", nargs=3, metavar=("PORT", "CERT", "KEY"))
    args = parser.parse_args()
    if args.edge_child:
        import uvloop

        port, cert, key = args.edge_child
        uvloop.run(edge_child(int(port), Path(cert), Path(key)))
        return
    if shutil.which("nginx") is None or shutil.which("openssl") is None:
        raise SystemExit("needs nginx and openssl (apt-get install -y nginx openssl)")
    sys.path.insert(0, str(ROOT / "src"))
    from roost.proxy.tls import pki

    with tempfile.TemporaryDirectory(prefix="roost-tls-bench-") as tmp:
        work = Path(tmp)
        chain, key = pki.self_signed(NAME, time.time())  # ECDSA P-256
        (work / "cert.pem").write_bytes(chain)
        (work / "key.pem").write_bytes(key)
        started: list[subprocess.Popen[bytes]] = []
        try:
            nginx_port, edge_port = free_port(), free_port()
            started.append(start_nginx(work, nginx_port, work / "cert.pem", work / "key.pem"))
            child = [sys.executable, __file__, "--edge-child", str(edge_port)]
            child += [str(work / "cert.pem"), str(work / "key.pem")]
            started.append(subprocess.Popen(child))
            wait_port(nginx_port)
            wait_port(edge_port)
            s_time(edge_port, 1, 1, False)  # warm-up: the cert cache loads the name
            print(f"{os.cpu_count()} CPUs, {args.clients} s_time clients, {args.seconds}s each")
            nginx = measure("nginx", started[0].pid, nginx_port, args.seconds, args.clients)
            roost = measure("roost", started[1].pid, edge_port, args.seconds, args.clients)
            for kind in ("full", "resumed"):
                ratio = roost[kind] / nginx[kind] if nginx[kind] else 0.0
                cpu = roost[kind + "_cpu"] / nginx[kind + "_cpu"] if nginx[kind + "_cpu"] else 0
                print(f"ratio roost/nginx {kind:8} {ratio:.2f}x (clients)  {cpu:.2f}x (per CPU)")
        finally:
            for proc in started:
                proc.send_signal(signal.SIGTERM)
            for proc in started:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


if __name__ == "__main__":
    main()
