"""The request path inside a real `roost up`: limits from the app's config, graceful drain."""

from __future__ import annotations

import shutil
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import wait_until

APPS = Path(__file__).parent / "apps"
pytestmark = pytest.mark.integration


@pytest.fixture
def slow_node(make_node: Any, tmp_path: Path) -> Any:
    node = make_node().start()
    app_dir = tmp_path / "slowapp"
    shutil.copytree(APPS / "slowapp", app_dir)
    node.cli("deploy", str(app_dir), timeout=90)
    wait_until(lambda: node.started("slowapp", 1), 30, what="slowapp started")
    wait_until(
        lambda: node.edge.get("/max", headers={"Host": "slowapp.localhost"}).status_code == 200,
        20,
        what="slowapp routed",
    )
    return node


def test_node_enforces_hard_limit_from_config(slow_node: Any) -> None:
    """30 concurrent slow requests to an instance with hard_limit 2: never more than 2 at
    once inside the app; all served after waiting (queue) or 503 at capacity."""
    statuses: list[int] = []

    def one() -> None:
        with httpx.Client(base_url=slow_node.info["edge_url"], trust_env=False, timeout=30) as c:
            r = c.get("/slow", params={"ms": "100"}, headers={"Host": "slowapp.localhost"})
            statuses.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 2
    most = slow_node.edge.get("/max", headers={"Host": "slowapp.localhost"}).text
    assert int(most) <= 2


def test_sigterm_drains_in_flight_requests(slow_node: Any, tmp_path: Path) -> None:
    """SIGTERM: the edge stops accepting, an in-flight request still completes (200),
    then the node exits cleanly."""
    mark = tmp_path / "started"
    result: dict[str, Any] = {}

    def slow() -> None:
        with httpx.Client(base_url=slow_node.info["edge_url"], trust_env=False, timeout=30) as c:
            r = c.get(
                "/slow",
                params={"ms": "1500", "mark": str(mark)},
                headers={"Host": "slowapp.localhost"},
            )
            result["status"], result["body"] = r.status_code, r.text
            result["connection"] = r.headers.get("connection")

    thread = threading.Thread(target=slow)
    thread.start()
    wait_until(mark.exists, 10, what="the app to start handling the request")
    slow_node.proc.send_signal(signal.SIGTERM)
    port = int(slow_node.info["edge_url"].rsplit(":", 1)[1])

    def refused() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0

    wait_until(refused, 10, what="the edge to stop accepting")
    thread.join(30)
    assert result == {"status": 200, "body": "done", "connection": "close"}
    assert slow_node.proc.wait(30) == 0
