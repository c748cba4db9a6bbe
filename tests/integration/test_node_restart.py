"""Stopping and starting `roost up` again: what survives and what restarts."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def test_graceful_restart_starts_instances_again(make_node):
    """After Ctrl-C stops a node and its instances, the next `roost up` starts them again."""
    node = make_node("graceful", demo=True).start()
    first = wait_until(lambda: node.started("demo", 3), 30, what="3 demo instances")
    assert node.stop() == 0
    node.start()
    again = wait_until(lambda: node.started("demo", 3), 30, what="3 restarted instances")
    assert {i["id"] for i in again} == {i["id"] for i in first}  # same instances, not new ones
    assert not {i["pid"] for i in again} & {i["pid"] for i in first}
    stopped = [e for e in node.events("demo") if e["type"] == "stopped"]
    assert len(stopped) == 3


def test_user_stopped_instance_stays_stopped_across_restart(make_node):
    """An instance the user stopped is still stopped after the node restarts."""
    node = make_node("userstop", demo=True).start()
    victim = wait_until(lambda: node.started("demo", 3), 30)[0]["id"]
    node.cli("instances", "stop", victim, "--app", "demo")
    node.cli("instances", "wait", victim, "--app", "demo", "--state", "stopped")
    assert node.stop() == 0
    node.start()
    wait_until(lambda: node.started("demo", 2), 30, what="the 2 other instances")
    inst = node.api.get(f"/v1/apps/demo/instances/{victim}").json()
    assert inst["state"] == "stopped" and inst["desired"] == "stopped"
