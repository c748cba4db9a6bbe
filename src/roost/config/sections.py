"""Readers for the structured sections of an app config: services, checks, mounts, VMs, restart.

Each function takes a ``values.Table`` (one TOML table and its path) and returns the record
from ``config.model``; problems go to the table's ``Issues``. Key names and defaults follow
fly.toml as its users write it; keys fly has but Roost does not use are warned about.
"""

from __future__ import annotations

import re

from roost.config.model import (
    VM,
    Check,
    Concurrency,
    ConcurrencyType,
    Mount,
    Restart,
    RestartPolicy,
    Service,
    ServicePort,
)
from roost.config.units import parse_size_mb
from roost.config.values import IGNORED, Table

HANDLERS = ("http", "tls", "proxy_proto")
_CONCURRENCY: dict[str, ConcurrencyType] = {"connections": "connections", "requests": "requests"}
_PROTOCOLS: dict[str, str] = {"tcp": "tcp", "udp": "udp"}
_CHECK_TYPES = {"http": "http", "tcp": "tcp", "script": "script"}
_RESTART: dict[str, RestartPolicy] = {
    "always": "always",
    "on-failure": "on-failure",
    "no": "no",
    "never": "no",  # fly's spelling
}
_CPU_KINDS = {"shared": "shared", "performance": "performance"}
_AUTO_STOP = ("off", "stop", "suspend")
_METHOD = re.compile(r"[A-Z]{1,20}")
# fly's presets: shared-cpu-Nx = N shared CPUs, 256 MB each; performance-Nx = 2048 MB each.
_SIZE = re.compile(r"(shared-cpu|performance)-(\d{1,2})x")
_SERVICE_IGNORED = ("http_options", "tls_options", "proxy_proto_options", "machine_checks")
_CHECK_IGNORED = ("tls_skip_verify", "tls_server_name", "restart_limit")


def read_service(t: Table, name: str) -> Service:
    """``[http_service]`` (name "http_service") or one ``[[services]]`` entry ("services.N")."""
    http = name == "http_service"
    internal_port = t.integer("internal_port", 8080, lo=1, hi=65535, numeric_str=True)
    processes = t.groups()
    concurrency = _concurrency(t.table("concurrency"))
    _auto_start_stop(t)
    t.ignore(*_SERVICE_IGNORED)
    self_signed = t.boolean("default_self_signed", False)
    if http:
        force_https = t.boolean("force_https", False)
        ports = (
            ServicePort(port=80, handlers=("http",), force_https=force_https),
            ServicePort(port=443, handlers=("tls", "http")),
        )
        checks = tuple(read_check(c, f"{name}.checks.{i}", "http") for i, c in t.tables("checks"))
        return Service(
            name=name,
            internal_port=internal_port,
            ports=ports,
            concurrency=concurrency,
            processes=processes,
            checks=checks,
            force_https=force_https,
            default_self_signed=self_signed,
        )
    protocol = t.choice("protocol", _PROTOCOLS, "tcp")
    return Service(
        name=name,
        internal_port=internal_port,
        protocol="udp" if protocol == "udp" else "tcp",
        ports=tuple(_port(p) for _, p in t.tables("ports")),
        concurrency=concurrency,
        processes=processes,
        checks=tuple(
            read_check(c, f"{name}.tcp_checks.{i}", "tcp") for i, c in t.tables("tcp_checks")
        )
        + tuple(
            read_check(c, f"{name}.http_checks.{i}", "http") for i, c in t.tables("http_checks")
        ),
        default_self_signed=self_signed,
    )


def _auto_start_stop(t: Table) -> None:
    """Accepted for compatibility and type-checked; Roost does not stop idle instances."""
    t.boolean("auto_start_machines", False)
    t.integer("min_machines_running", 0, lo=0)
    value = t.raw("auto_stop_machines")
    if value is not None and not isinstance(value, bool) and value not in _AUTO_STOP:
        t.expected("auto_stop_machines", "true, false, 'off', 'stop' or 'suspend'", value)


def _port(t: Table) -> ServicePort:
    if not t.has("port"):
        t.error("port", "missing required key")
    port = t.integer("port", 0, lo=1, hi=65535, numeric_str=True)
    handlers = t.strings("handlers")
    for handler in handlers:
        if handler not in HANDLERS:
            t.error("handlers", f"unsupported handler {handler!r} (use http, tls or proxy_proto)")
    t.ignore("start_port", "end_port", "tls_options", "http_options", "proxy_proto_options")
    return ServicePort(
        port=port,
        handlers=handlers,
        force_https=t.boolean("force_https", False),
        default_self_signed=t.boolean("default_self_signed", False),
    )


def _concurrency(t: Table | None) -> Concurrency:
    if t is None:
        return Concurrency()
    kind = t.choice("type", _CONCURRENCY, "connections")
    hard = t.integer("hard_limit", 0, lo=1) if t.has("hard_limit") else None
    # Without a soft limit, a hard limit below the default soft limit (20) is both.
    soft = t.integer("soft_limit", min(20, hard or 20), lo=1)
    if hard is not None and soft > hard:
        t.error("soft_limit", f"soft_limit {soft} is above hard_limit {hard}")
    return Concurrency(type=kind, soft_limit=soft, hard_limit=hard)


def read_check(t: Table, name: str, kind: str | None) -> Check:
    """A service check (``kind`` fixed by where it is) or a top-level ``[checks.NAME]``."""
    port: int | None = None
    processes: tuple[str, ...] = ()
    if kind is None:  # top level: the table says what it is
        if not t.has("type"):
            t.error("type", "missing required key")
        kind = t.choice("type", _CHECK_TYPES, "tcp")
        port = t.integer("port", 0, lo=1, hi=65535) if t.has("port") else None
        processes = t.groups()
    interval = t.duration("interval", 15.0, number_unit=0.001)  # fly: bare numbers are ms
    timeout = t.duration("timeout", 2.0, number_unit=0.001)
    grace = t.duration("grace_period", 0.0, number_unit=0.001, positive=False)
    t.ignore(*_CHECK_IGNORED)
    path, method = "/", "GET"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    if kind == "http":
        path = t.string("path", "/")
        if not path.startswith("/"):
            t.expected("path", "a path starting with '/'", path)
        method = t.string("method", "GET").upper()
        if not _METHOD.fullmatch(method):
            t.expected("method", "an HTTP method such as 'GET'", method)
        headers = t.string_pairs("headers")
        protocol = t.raw("protocol")
        if protocol is not None and protocol != "http":
            t.issues.warnings.append((t.at("protocol"), IGNORED + " (checks use plain http)"))
    elif kind == "script":
        command = t.command("command")
    return Check(
        name=name,
        type="http" if kind == "http" else "script" if kind == "script" else "tcp",
        port=port,
        path=path,
        method=method,
        interval=interval,
        timeout=timeout,
        grace_period=grace,
        command=command,
        headers=headers,
        processes=processes,
    )


def read_mount(t: Table) -> Mount:
    source = t.required_string("source")
    destination = t.required_string("destination")
    if destination is not None and (not destination.startswith("/") or destination == "/"):
        t.expected("destination", "an absolute path other than '/'", destination)
    t.ignore(
        "initial_size",
        "snapshot_retention",
        "scheduled_snapshots",
        "auto_extend_size_threshold",
        "auto_extend_size_increment",
        "auto_extend_size_limit",
    )
    return Mount(source=source or "", destination=destination or "", processes=t.groups())


def read_vm(t: Table) -> VM:
    size = t.string("size", "shared-cpu-1x")
    preset = _SIZE.fullmatch(size)
    cpus, kind, memory_mb = 1, "shared", 256
    if preset is not None:
        cpus = int(preset.group(2))
        kind = "shared" if preset.group(1) == "shared-cpu" else "performance"
        memory_mb = cpus * (256 if kind == "shared" else 2048)
    elif t.has("size"):
        message = f"unknown size {size!r}; give memory and cpus (default 256 MB, 1 CPU)"
        t.issues.warnings.append((t.at("size"), message))
    memory = t.raw("memory")
    if memory is None:
        memory_mb = t.integer("memory_mb", memory_mb, lo=1)
    elif isinstance(memory, int) and not isinstance(memory, bool) and memory > 0:
        memory_mb = memory
    else:
        try:
            memory_mb = parse_size_mb(memory) if isinstance(memory, str) else 0
        except ValueError:
            memory_mb = 0
        if memory_mb <= 0:
            t.expected("memory", "a size like '512mb' or '1gb', or megabytes", memory)
    cpus = t.integer("cpus", cpus, lo=1, hi=256)
    kind = t.choice("cpu_kind", _CPU_KINDS, kind)
    t.ignore("gpus", "gpu_kind", "kernel_args", "host_dedication_id", "persist_rootfs")
    return VM(size=size, memory_mb=memory_mb, cpus=cpus, cpu_kind=kind, processes=t.groups())


def read_restart(t: Table) -> Restart:
    policy = t.choice("policy", _RESTART, "always")
    retries = t.integer("retries", 10, lo=0)  # fly's name for it
    retries = t.integer("max_retries", retries, lo=0)
    return Restart(policy=policy, max_retries=retries, processes=t.groups())
