"""A real single-node Roost (`roost up` subprocess), driven with the real CLI, curl and HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until

APPS = Path(__file__).parent / "apps"
pytestmark = pytest.mark.integration


def curl(edge_url: str, host: str, path: str = "/") -> tuple[int, str]:
    res = subprocess.run(
        [
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            f"Host: {host}",
            f"{edge_url}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, _, code = res.stdout.rpartition("\n")
    return int(code), body


def test_demo_answers_from_several_instances(demo_node):
    """`roost up` serves demo.localhost from 3 instances; repeated requests reach at least 2."""
    wait_until(lambda: demo_node.started("demo", 3), 30, what="3 started demo instances")
    seen = set()
    for _ in range(30):
        code, body = curl(demo_node.info["edge_url"], "demo.localhost")
        assert code == 200, body
        seen.add(json.loads(body)["instance"])
    assert len(seen) >= 2
    assert seen <= {i["id"] for i in demo_node.instances("demo")}


def test_unknown_host_is_404(demo_node):
    """A Host that names no app gets a short 404."""
    code, body = curl(demo_node.info["edge_url"], "nope.localhost")
    assert code == 404
    assert "nope.localhost" in body


def test_api_requires_the_token(demo_node, tmp_path):
    """No token → 401; this node's token → 200; another data dir's token → 401."""
    url = demo_node.info["url"]
    assert httpx.get(f"{url}/v1/apps", trust_env=False).status_code == 401
    assert httpx.get(f"{url}/v1/openapi.json", trust_env=False).status_code == 401
    assert demo_node.api.get("/v1/apps").status_code == 200
    other = tmp_path / "other"
    other.mkdir()
    from roost.api.auth import load_or_create_token

    foreign = load_or_create_token(other)
    assert foreign != demo_node.token
    resp = httpx.get(
        f"{url}/v1/apps", headers={"Authorization": f"Bearer {foreign}"}, trust_env=False
    )
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"


def test_openapi_document_lists_the_api(demo_node):
    """The OpenAPI document describes deploy, scale, instances, events and logs."""
    doc = demo_node.api.get("/v1/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/v1/apps/{app}/deploy",
        "/v1/apps/{app}/scale",
        "/v1/apps/{app}/instances",
        "/v1/apps/{app}/instances/{iid}/wait",
        "/v1/apps/{app}/events",
        "/v1/apps/{app}/logs",
    ):
        assert path in paths


def test_validation_error_is_422_naming_the_field(demo_node):
    """A bad API body is a 422 that names the field."""
    resp = demo_node.api.post("/v1/apps/demo/scale", json={"count": -1})
    assert resp.status_code == 422
    assert resp.json()["error"]["fields"][0]["field"] == "count"


def test_scale_to_five_and_status_json(demo_node):
    """`roost scale count 5` reaches 5 started instances; `status --json` shows their states."""
    demo_node.cli("scale", "count", "5", "--app", "demo", timeout=30)
    wait_until(lambda: demo_node.started("demo", 5), 10, what="5 started instances")
    out = json.loads(demo_node.cli("status", "--json").stdout)
    demo = next(a for a in out["apps"] if a["name"] == "demo")
    assert demo["counts"] == {"app": 5}
    assert sorted(i["state"] for i in demo["instances"]) == ["started"] * 5
    demo_node.cli("scale", "count", "3", "--app", "demo", timeout=30)
    wait_until(lambda: len(demo_node.instances("demo")) == 3, 20, what="scale back to 3")


def test_sigkill_of_instance_restarts_it_with_events(demo_node):
    """A SIGKILLed instance is restarted (policy always) with exited and restarting events."""
    victim = wait_until(lambda: demo_node.started("demo", 3), 30)[0]
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted():
        inst = demo_node.api.get(f"/v1/apps/demo/instances/{victim['id']}").json()
        return inst if inst["state"] == "started" and inst["pid"] != victim["pid"] else None

    wait_until(restarted, 15, what="the killed instance to be restarted")
    types = [e["type"] for e in demo_node.events("demo") if e["instance_id"] == victim["id"]]
    i = types.index("exited", types.index("started"))
    assert "restarting" in types[i:]
    exited = [
        e
        for e in demo_node.events("demo")
        if e["instance_id"] == victim["id"] and e["type"] == "exited"
    ]
    assert exited[-1]["exit_code"] == -signal.SIGKILL


def test_logs_are_collected_and_tagged(demo_node):
    """Instance stdout reaches `roost logs`, tagged with the instance id."""
    ids = {i["id"] for i in wait_until(lambda: demo_node.started("demo", 3), 30)}

    def found():
        out = demo_node.cli("logs", "--app", "demo", "-n", "1000").stdout
        return [line for line in out.splitlines() if "listening on 127.0.0.1" in line]

    lines = wait_until(found, 10, what="demo startup lines in the logs")
    assert any(line.split()[1] in ids for line in lines)


def test_instance_stop_start_restart(demo_node):
    """Stop, start and restart an instance through the CLI; wait reaches each state."""
    inst = wait_until(lambda: demo_node.started("demo", 3), 30)[0]
    iid = inst["id"]
    demo_node.cli("instances", "stop", iid, "--app", "demo")
    demo_node.cli("instances", "wait", iid, "--app", "demo", "--state", "stopped")
    assert demo_node.api.get(f"/v1/apps/demo/instances/{iid}").json()["pid"] is None
    demo_node.cli("instances", "start", iid, "--app", "demo")
    demo_node.cli("instances", "wait", iid, "--app", "demo", "--state", "started")
    before = demo_node.api.get(f"/v1/apps/demo/instances/{iid}").json()["pid"]
    demo_node.cli("instances", "restart", iid, "--app", "demo")

    def new_pid():
        got = demo_node.api.get(f"/v1/apps/demo/instances/{iid}").json()
        return got["state"] == "started" and got["pid"] not in (None, before)

    wait_until(new_pid, 15, what="restart with a new pid")


def test_wait_times_out_with_408(demo_node):
    """Waiting for a state that does not come answers 408 after the timeout."""
    inst = wait_until(lambda: demo_node.started("demo", 3), 30)[0]
    resp = demo_node.api.get(
        f"/v1/apps/demo/instances/{inst['id']}/wait", params={"state": "stopped", "timeout": 0.3}
    )
    assert resp.status_code == 408


def test_deploy_fly_toml_directory(demo_node, tmp_path):
    """`roost deploy DIR` with a fly.toml runs its [processes] with [env], routed by host."""
    app_dir = tmp_path / "envecho"
    shutil.copytree(APPS / "envecho", app_dir)
    res = demo_node.cli("deploy", str(app_dir), timeout=90)
    assert "swap_size_mb" in res.stderr  # ignored fly key is named in a warning
    inst = wait_until(lambda: demo_node.started("envecho", 1), 20)[0]
    assert inst["process_group"] == "web"
    code, body = curl(demo_node.info["edge_url"], "envecho.localhost")
    assert code == 200
    env = json.loads(body)
    assert env["MODE"] == "production" and env["GREETING"] == "42"
    assert env["ROOST_APP_NAME"] == "envecho" and env["ROOST_INSTANCE_ID"] == inst["id"]
    assert env["PRIMARY_REGION"] == "ams" and env["ROOST_PROCESS_GROUP"] == "web"
    assert env["PORT"] == str(inst["port"])
    demo_node.cli("apps", "destroy", "envecho", "--yes", timeout=60)
    assert curl(demo_node.info["edge_url"], "envecho.localhost")[0] == 404
    assert demo_node.api.get("/v1/apps/envecho").status_code == 404


def test_invalid_config_exits_2_and_changes_nothing(demo_node, tmp_path):
    """An invalid config exits 2 with file:line:key and leaves the catalog unchanged."""
    before = demo_node.api.get("/v1/apps").json()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "fly.toml").write_text(
        'app = "broken"\n\n[processes]\napp = "python3 x.py"\n\n[http_service]\n'
        'internal_port = "eighty"\n'
    )
    res = demo_node.cli("deploy", str(bad), check=False)
    assert res.returncode == 2
    assert f"{bad / 'fly.toml'}:7: http_service.internal_port:" in res.stderr
    assert "Traceback" not in res.stderr
    # the API refuses it too, even if a client skips local validation
    resp = demo_node.api.post(
        "/v1/apps/broken/deploy",
        json={"config": (bad / "fly.toml").read_text(), "filename": "fly.toml"},
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["fields"][0]["field"] == "http_service.internal_port"
    assert demo_node.api.get("/v1/apps").json() == before


def test_platform_sigkill_readopts_running_instances(make_node):
    """SIGKILL of `roost up`, then a restart: running instances keep their pids."""
    node = make_node("kill", demo=True).start()
    first = wait_until(lambda: node.started("demo", 3), 30, what="3 demo instances")
    pids = {i["id"]: i["pid"] for i in first}
    node.kill()
    for pid in pids.values():  # still running without the platform
        os.kill(pid, 0)
    node.start()
    again = wait_until(lambda: node.started("demo", 3), 30, what="3 adopted instances")
    assert {i["id"]: i["pid"] for i in again} == pids
    types = [e["type"] for e in node.events("demo")]
    assert types.count("adopted") == 3
    # adopted instances are still supervised: a graceful stop stops them
    assert node.stop() == 0
    for pid in pids.values():
        wait_until(lambda pid=pid: not _alive(pid), 10, what=f"pid {pid} to stop")


def test_two_nodes_cannot_share_a_data_dir(make_node):
    """A second `roost up` on the same data dir fails with one clear line."""
    node = make_node("shared").start()
    res = node.cli(
        "up", "--http-port", "0", "--api-port", "0", "--admin-port", "0", "--no-demo", check=False
    )
    assert res.returncode == 1
    assert "already running" in res.stderr and "Traceback" not in res.stderr


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_edge_serves_h2c_on_the_same_port(demo_node):
    """The edge answers HTTP/2 with prior knowledge (curl) on its HTTP/1.1 port."""
    wait_until(lambda: demo_node.started("demo", 3), 30)
    res = subprocess.run(
        [
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            "-H",
            "Host: demo.localhost",
            f"{demo_node.info['edge_url']}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, _, version = res.stdout.rpartition("\n")
    assert version == "2", res.stderr
    assert json.loads(body)["instance"]
