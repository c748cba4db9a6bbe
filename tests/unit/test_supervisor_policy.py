"""Restart policy and instance environment (pure parts of the supervisor)."""

from __future__ import annotations

from roost.catalog.records import App, Instance
from roost.config.model import AppConfig
from roost.machines.supervisor import instance_env, restart_delay, should_restart


def test_always_restarts_on_any_exit():
    """`always` restarts after success, failure and unknown status alike."""
    assert all(should_restart("always", code, 50, 10) for code in (0, 1, -9, None))


def test_on_failure_restarts_only_failures_up_to_max():
    """`on-failure` restarts non-zero/unknown exits until max_retries is reached."""
    assert not should_restart("on-failure", 0, 0, 10)
    assert should_restart("on-failure", 1, 9, 10)
    assert should_restart("on-failure", None, 0, 10)
    assert not should_restart("on-failure", 1, 10, 10)


def test_no_never_restarts():
    """`no` never restarts."""
    assert not should_restart("no", 1, 0, 10)


def test_backoff_doubles_and_is_bounded():
    """Delays double from 0.1 s and never exceed 10 s."""
    assert [restart_delay(n) for n in range(4)] == [0.1, 0.2, 0.4, 0.8]
    assert restart_delay(1000) == 10.0


def test_instance_env_has_platform_variables_over_user_env():
    """PORT and ROOST_* are set, and a user [env] cannot override them."""
    config = AppConfig(app="web", primary_region="ams", env=(("PORT", "1"), ("MODE", "x")))
    app = App(name="web", config=config, counts={"app": 1})
    inst = Instance(
        id="abc", app="web", node="n", region="local", process_group="app", app_version=1, port=4321
    )
    env = instance_env(app, inst, {"8080": 4321})
    assert env["PORT"] == "4321"
    assert env["MODE"] == "x"
    assert env["ROOST_APP_NAME"] == "web" and env["ROOST_INSTANCE_ID"] == "abc"
    assert env["ROOST_REGION"] == "local" and env["PRIMARY_REGION"] == "ams"
    assert env["ROOST_PROCESS_GROUP"] == "app" and env["ROOST_PORT_8080"] == "4321"


def test_argv_expands_instance_variables():
    """`$PORT` and `${VAR}` in a command expand from the instance env; unknown names stay."""
    from roost.machines.supervisor import expand_argv

    env = {"PORT": "4000", "MODE": "x"}
    assert expand_argv(("serve", "--port=$PORT", "${MODE}-y", "$NOPE"), env) == (
        "serve",
        "--port=4000",
        "x-y",
        "$NOPE",
    )
