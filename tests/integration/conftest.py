"""Fixtures that run a real `roost up` node as a subprocess, and drive it with the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import wait_until

ROOST = str(Path(sys.executable).with_name("roost"))


class RoostNode:
    """One `roost up` process with its own data dir and ephemeral ports."""

    def __init__(self, data_dir: Path, demo: bool = False, args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.demo = demo
        self.args = args  # extra `roost up` options (they override the defaults below)
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.seen_pids: set[int] = set()
        self.log: Any = None

    def start(self, timeout: float = 60.0) -> RoostNode:
        (self.data_dir / "api.json").unlink(missing_ok=True)
        args = [
            ROOST,
            "--data-dir",
            str(self.data_dir),
            "up",
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--api-port",
            "0",
            "--admin-port",
            "0",
        ]
        if not self.demo:
            args.append("--no-demo")
        args += self.args
        if getattr(self, "log", None) is not None:
            self.log.close()
        self.log = open(self.data_dir.parent / f"{self.data_dir.name}-up.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

        def ready() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"roost up exited with {self.proc.returncode}: {self.output()}"
                )
            try:
                info = json.loads((self.data_dir / "api.json").read_text())
            except (FileNotFoundError, ValueError):
                return None
            return info if info.get("pid") == self.proc.pid else None

        self.info = wait_until(ready, timeout, what="roost up to be ready")
        self.token = (self.data_dir / "token").read_text().strip()
        self.close_clients()
        self.api = httpx.Client(
            base_url=self.info["url"],
            trust_env=False,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        self.edge = httpx.Client(base_url=self.info["edge_url"], trust_env=False, timeout=30)
        return self

    def close_clients(self) -> None:
        for client in (getattr(self, "api", None), getattr(self, "edge", None)):
            if client is not None:
                client.close()

    def output(self) -> str:
        return (self.data_dir.parent / f"{self.data_dir.name}-up.log").read_text(errors="replace")

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60.0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [ROOST, "--data-dir", str(self.data_dir), *args],
            text=True,
            capture_output=True,
            timeout=timeout,
            cwd=cwd,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"roost {' '.join(args)} failed ({res.returncode}): {res.stdout}{res.stderr}"
            )
        return res

    def instances(self, app: str) -> list[dict[str, Any]]:
        items = self.api.get(f"/v1/apps/{app}/instances").raise_for_status().json()
        self.seen_pids.update(i["pid"] for i in items if i["pid"])
        return items

    def started(self, app: str, n: int | None = None) -> list[dict[str, Any]] | None:
        items = [i for i in self.instances(app) if i["state"] == "started" and i["healthy"]]
        return items if (n is None and items) or len(items) == n else None

    def events(self, app: str) -> list[dict[str, Any]]:
        return self.api.get(f"/v1/apps/{app}/events", params={"limit": 1000}).json()

    def stop(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.kill()
        for pid in self.seen_pids:  # instances left behind by a killed node
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.close_clients()
        self.log.close()


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Any]:
    nodes: list[RoostNode] = []

    def make(name: str = "data", demo: bool = False, args: tuple[str, ...] = ()) -> RoostNode:
        node = RoostNode(tmp_path / name, demo, args)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.cleanup()


@pytest.fixture(scope="module")
def demo_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostNode]:
    node = RoostNode(tmp_path_factory.mktemp("demo") / "data", demo=True).start()
    yield node
    node.cleanup()
