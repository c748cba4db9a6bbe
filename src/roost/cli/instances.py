"""``roost instances``, ``logs`` and ``events``: list, show, control and wait for one app's
instances, and read what they print and what happened to them (API clients)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from roost.api import schema as s
from roost.cli.client import client_for


# -- instances -------------------------------------------------------------------------------
@click.group()
def instances() -> None:
    """List and control an app's instances."""


@instances.command("list")
@click.option("-a", "--app", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def instances_list(ctx: click.Context, app: str, as_json: bool) -> None:
    items = client_for(ctx).request("GET", f"/v1/apps/{app}/instances")
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for raw in items:
        i = s.InstanceOut(**raw)
        click.echo(f"{i.id}  {i.process_group}  {i.state}  pid={i.pid or '-'} port={i.port or '-'}")


@instances.command("show")
@click.argument("instance_id")
@click.option("-a", "--app", required=True)
@click.pass_context
def instances_show(ctx: click.Context, instance_id: str, app: str) -> None:
    found = client_for(ctx).request("GET", f"/v1/apps/{app}/instances/{instance_id}")
    click.echo(json.dumps(found, indent=2))


def _instance_action(action: str, method: str = "POST") -> Any:
    @click.argument("instance_id")
    @click.option("-a", "--app", required=True)
    @click.pass_context
    def command(ctx: click.Context, instance_id: str, app: str) -> None:
        path = f"/v1/apps/{app}/instances/{instance_id}"
        inst = s.InstanceOut(
            **client_for(ctx).request(method, path if method == "DELETE" else f"{path}/{action}")
        )
        click.echo(f"{action} requested for {inst.id} (now {inst.state})")

    command.__doc__ = f"{action.capitalize()} one instance."
    return command


for _action in ("start", "stop", "restart"):
    instances.command(_action)(_instance_action(_action))
instances.command("destroy")(_instance_action("destroy", "DELETE"))


@instances.command("wait")
@click.argument("instance_id")
@click.option("-a", "--app", required=True)
@click.option("--state", default="started", show_default=True)
@click.option("--timeout", default=10.0, show_default=True)
@click.pass_context
def instances_wait(
    ctx: click.Context, instance_id: str, app: str, state: str, timeout: float
) -> None:
    """Wait until an instance reaches STATE."""
    inst = s.InstanceOut(
        **client_for(ctx).request(
            "GET",
            f"/v1/apps/{app}/instances/{instance_id}/wait",
            params={"state": state, "timeout": timeout},
            timeout=timeout + 5,
        )
    )
    click.echo(f"{inst.id} is {inst.state}")


# -- logs / events ---------------------------------------------------------------------------
@click.command()
@click.option("-a", "--app", required=True)
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines")
@click.option("-n", "--lines", default=100, show_default=True, help="lines of history")
@click.option("-i", "--instance", help="only this instance")
@click.pass_context
def logs(ctx: click.Context, app: str, follow: bool, lines: int, instance: str | None) -> None:
    """Print an app's logs."""
    params: dict[str, Any] = {"tail": lines, "follow": follow}
    if instance:
        params["instance"] = instance
    try:
        for entry in client_for(ctx).stream_lines(f"/v1/apps/{app}/logs", params=params):
            line = s.LogLineOut(**entry)
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(line.ts))
            click.echo(f"{ts}Z {line.instance_id} {line.stream}: {line.line}")
    except KeyboardInterrupt:
        pass


@click.command()
@click.option("-a", "--app", required=True)
@click.option("-n", "--limit", default=50, show_default=True)
@click.pass_context
def events(ctx: click.Context, app: str, limit: int) -> None:
    """Print an app's lifecycle events."""
    for raw in client_for(ctx).request("GET", f"/v1/apps/{app}/events", params={"limit": limit}):
        e = s.EventOut(**raw)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e.time))
        click.echo(f"{ts}Z {e.instance_id} {e.type:<12} {e.message}")
