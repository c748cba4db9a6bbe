"""Records kept in the catalog, their keys, and their byte encoding (JSON via msgspec).

Key layout (one prefix per kind; ``/`` separated, names are validated so they never contain ``/``):

    nodes/<node_id>                     Node
    apps/<app>                          App (config + desired count per process group)
    instances/<app>/<instance_id>       Instance (desired state, actual state, pid, port)
    services/<app>/<service_name>       ServiceRecord (derived from the config on deploy)
    events/<app>/<ts_ns:020d>-<id>      Event (lifecycle; time-ordered within an app)
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

from roost.config.model import AppConfig, Service

DesiredState = Literal["started", "stopped", "destroyed"]
InstanceState = Literal[
    "created",
    "starting",
    "started",
    "exited",
    "restarting",
    "stopping",
    "stopped",
    "failed",
    "destroyed",
]
EventType = Literal[
    "created",
    "starting",
    "started",
    "exited",
    "restarting",
    "stopping",
    "stopped",
    "failed",
    "destroyed",
    "adopted",
    "launch_failed",
]


class Node(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    region: str
    hostname: str
    incarnation: str  # changes on every start of the node process
    started_at: float
    api_url: str = ""


class App(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    config: AppConfig
    counts: dict[str, int]  # process group -> desired instance count
    version: int = 1  # bumped on every deploy
    workdir: str | None = None  # where process-driver commands run (the deployed directory)
    config_file: str = "roost.toml"
    created_at: float = 0.0
    updated_at: float = 0.0


class Instance(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    app: str
    node: str
    region: str
    process_group: str
    app_version: int
    desired: DesiredState = "started"
    state: InstanceState = "created"
    pid: int | None = None
    pid_start_time: int | None = None
    port: int | None = None  # host port the instance's http service listens on ($PORT)
    ports: dict[str, int] = {}  # "internal_port" -> host port, for every service
    healthy: bool = False  # its service port accepts connections (implicit tcp check)
    exit_code: int | None = None
    restarts: int = 0  # consecutive restarts since the last healthy run
    boot: int = 0  # bumped by the API's start/restart: asks the agent for a fresh start
    reason: str = ""  # last failure reason, for humans
    created_at: float = 0.0
    updated_at: float = 0.0


class ServiceRecord(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    service: Service


class Event(msgspec.Struct, frozen=True, kw_only=True):
    time: float
    app: str
    instance_id: str
    type: EventType
    message: str = ""
    exit_code: int | None = None


def node_key(node_id: str) -> str:
    return f"nodes/{node_id}"


def app_key(app: str) -> str:
    return f"apps/{app}"


def instance_key(app: str, instance_id: str) -> str:
    return f"instances/{app}/{instance_id}"


def instances_prefix(app: str | None = None) -> str:
    return "instances/" if app is None else f"instances/{app}/"


def service_key(app: str, name: str) -> str:
    return f"services/{app}/{name}"


def event_key(app: str, ts_ns: int, instance_id: str) -> str:
    return f"events/{app}/{ts_ns:020d}-{instance_id}"


def events_prefix(app: str | None = None) -> str:
    return "events/" if app is None else f"events/{app}/"


_encoder = msgspec.json.Encoder()
T = TypeVar("T")


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def decode(data: bytes, kind: type[T]) -> T:
    return msgspec.json.decode(data, type=kind)
