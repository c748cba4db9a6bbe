"""Deploying a bare command (no config file) from the CLI."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_deploy_command_without_config(make_node, tmp_path):
    """`roost deploy --app NAME --cmd ...` runs the command (with $PORT) and routes to it."""
    node = make_node("cmd").start()
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello from roost\n")
    node.cli(
        "deploy",
        str(site),
        "--app",
        "hello",
        "--cmd",
        "python3 -m http.server $PORT --bind 127.0.0.1",
        timeout=60,
    )
    wait_until(lambda: node.started("hello", 1), 20, what="hello instance")
    resp = node.edge.get("/hello.txt", headers={"Host": "hello.localhost"})
    assert resp.status_code == 200 and resp.text == "hello from roost\n"


def test_deploy_without_command_is_refused(make_node, tmp_path):
    """A config with no [processes] and no --cmd is refused with a clear error, nothing created."""
    node = make_node("nocmd").start()
    (tmp_path / "roost.toml").write_text('app = "empty"\n')
    res = node.cli("deploy", str(tmp_path), check=False)
    assert res.returncode == 2
    assert "no command to run" in res.stderr
    assert node.api.get("/v1/apps/empty").status_code == 404
