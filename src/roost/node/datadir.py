"""The data directory: where a node keeps its catalog, token, identity, logs and instance files.

<data dir>/catalog.db        SQLite catalog (WAL)
<data dir>/token             API bearer token (0600)
<data dir>/node_id           this node's stable id
<data dir>/api.json          how the CLI reaches a running ``roost up`` (url, edge url, pid)
<data dir>/roost.lock        held (flock) while a node runs: one node per data dir
<data dir>/logs/<app>.jsonl  collected instance logs
<data dir>/instances/<id>/   instance stdout/stderr files
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from pathlib import Path
from typing import Any


class DataDirError(Exception):
    pass


def default_data_dir() -> Path:
    env = os.environ.get("ROOST_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "roost"


def prepare(data_dir: Path) -> Path:
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "logs").mkdir(exist_ok=True)
    (data_dir / "instances").mkdir(exist_ok=True)
    return data_dir


def lock(data_dir: Path) -> int:
    """Hold the data dir's lock for this process's lifetime (released by the kernel on death)."""
    fd = os.open(data_dir / "roost.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DataDirError(
            f"another roost is already running with data dir {data_dir} (pid {other})"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def node_id(data_dir: Path) -> str:
    path = data_dir / "node_id"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = "node-" + secrets.token_hex(4)
    path.write_text(value + "\n")
    return value


def write_api_info(data_dir: Path, info: dict[str, Any]) -> None:
    tmp = data_dir / "api.json.tmp"
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(data_dir / "api.json")


def read_api_info(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / "api.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_api_info(data_dir: Path) -> None:
    (data_dir / "api.json").unlink(missing_ok=True)
