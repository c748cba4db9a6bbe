"""Typed, frozen records for an app's configuration (what ``roost.toml`` / ``fly.toml`` say).

Produced by ``config.reader``; stored inside the catalog's ``App`` record; read by the scheduler,
the host agent and the edge. msgspec Structs: immutable, cheap, JSON-encodable as-is.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ConcurrencyType = Literal["connections", "requests"]
RestartPolicy = Literal["always", "on-failure", "no"]
Handler = Literal["http", "tls", "proxy_proto"]


class Concurrency(msgspec.Struct, frozen=True, kw_only=True):
    type: ConcurrencyType = "connections"
    soft_limit: int = 20
    hard_limit: int | None = None  # None: no hard limit


class ServicePort(msgspec.Struct, frozen=True, kw_only=True):
    port: int
    handlers: tuple[str, ...] = ()
    force_https: bool = False
    default_self_signed: bool = False  # Roost extension: self-signed cert until a real one


class Check(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: Literal["http", "tcp", "script"] = "tcp"
    port: int | None = None  # internal port; None = the service's
    path: str = "/"
    method: str = "GET"
    interval: float = 15.0  # seconds
    timeout: float = 2.0
    grace_period: float = 0.0
    command: tuple[str, ...] = ()  # for script checks
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers for http checks
    processes: tuple[str, ...] = ()  # top-level [checks] only; empty = every process group


class Service(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # "http_service" for [http_service], "services.N" for [[services]]
    internal_port: int = 8080
    protocol: Literal["tcp", "udp"] = "tcp"
    ports: tuple[ServicePort, ...] = ()
    concurrency: Concurrency = Concurrency()
    processes: tuple[str, ...] = ()  # empty = every process group
    checks: tuple[Check, ...] = ()
    # http_service only:
    force_https: bool = False
    # Roost extension: names with no certificate yet get a self-signed one (not an alert)
    default_self_signed: bool = False

    @property
    def is_http(self) -> bool:
        return self.name == "http_service" or any("http" in p.handlers for p in self.ports)


class Mount(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    destination: str
    processes: tuple[str, ...] = ()


class VM(msgspec.Struct, frozen=True, kw_only=True):
    size: str = "shared-cpu-1x"
    memory_mb: int = 256
    cpus: int = 1
    cpu_kind: str = "shared"
    processes: tuple[str, ...] = ()


class Restart(msgspec.Struct, frozen=True, kw_only=True):
    policy: RestartPolicy = "always"
    max_retries: int = 10  # for on-failure (and crash-looping always): then the instance fails
    processes: tuple[str, ...] = ()


class AppConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One app's configuration. ``processes`` maps process group -> command (argv)."""

    app: str
    primary_region: str = "local"
    image: str | None = None  # [build] image; None = the ``process`` driver
    env: tuple[tuple[str, str], ...] = ()
    processes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group, argv); () = "app" from CLI
    services: tuple[Service, ...] = ()
    checks: tuple[Check, ...] = ()  # top-level [checks]
    mounts: tuple[Mount, ...] = ()
    vms: tuple[VM, ...] = ()
    restart: tuple[Restart, ...] = ()
    kill_signal: str = "SIGINT"
    kill_timeout: float = 5.0  # seconds
    count: int | None = None  # [scale] count (Roost extension): instances per process group
    hostnames: tuple[str, ...] = ()  # extra Host names routed to this app (Roost extension)

    def process_groups(self) -> tuple[str, ...]:
        return tuple(g for g, _ in self.processes) or ("app",)

    def command_for(self, group: str) -> tuple[str, ...]:
        for g, argv in self.processes:
            if g == group:
                return argv
        return ()

    def restart_for(self, group: str) -> Restart:
        for r in self.restart:
            if not r.processes or group in r.processes:
                return r
        return Restart()

    def services_for(self, group: str) -> tuple[Service, ...]:
        return tuple(s for s in self.services if not s.processes or group in s.processes)

    def http_service_for(self, group: str) -> Service | None:
        for s in self.services_for(group):
            if s.is_http:
                return s
        return None
