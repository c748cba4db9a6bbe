"""``roost deploy``, ``status``, ``scale`` and ``apps``: an app's config, versions and instance
counts (API clients; ``deploy`` and ``scale`` wait for the new instances unless ``--detach``)."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click

from roost.api import schema as s
from roost.cli.client import ApiClient, CliError, client_for
from roost.config import load_config

CONFIG_NAMES = ("roost.toml", "fly.toml")


# -- deploy ----------------------------------------------------------------------------------
def _find_config(path: Path | None, config: Path | None) -> Path | None:
    if config is not None:
        return config
    base = path or Path.cwd()
    if base.is_file():
        return base
    for name in CONFIG_NAMES:
        if (base / name).is_file():
            return base / name
    return None


@click.command()
@click.argument("path", required=False, type=click.Path(path_type=Path, exists=True))
@click.option(
    "-c",
    "--config",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="config file (default: DIR/roost.toml, then DIR/fly.toml)",
)
@click.option("-a", "--app", help="app name (overrides the config's `app`)")
@click.option("--cmd", help="command to run when the config has no [processes]")
@click.option("--detach", is_flag=True, help="return without waiting for instances")
@click.option("--wait-timeout", default=60.0, show_default=True, help="seconds to wait")
@click.pass_context
def deploy(
    ctx: click.Context,
    path: Path | None,
    config: Path | None,
    app: str | None,
    cmd: str | None,
    detach: bool,
    wait_timeout: float,
) -> None:
    """Deploy an app from a directory holding roost.toml or fly.toml."""
    file = _find_config(path, config)
    if file is None:
        if app is None or cmd is None:
            raise CliError(
                "no roost.toml or fly.toml found (give DIR, -c FILE, or --app and --cmd)", 2
            )
        text, filename = f'app = "{app}"\n', "<command line>"
    else:
        text, filename = file.read_text(), str(file)
        for warning in load_config(file).warnings:  # exits 2 on an invalid config
            click.echo(f"warning: {warning}", err=True)
    workdir = (file.parent if file else (path or Path.cwd())).resolve()
    if workdir.is_file():
        workdir = workdir.parent
    body = s.DeployRequest(
        config=text,
        filename=filename,
        app=app,
        workdir=str(workdir),
        command=shlex.split(cmd) if cmd else None,
    )
    client = client_for(ctx)
    name = app or _config_app(text, filename)
    result = s.DeployResponse(
        **client.request("POST", f"/v1/apps/{name}/deploy", json=body.model_dump())
    )
    click.echo(
        f"deployed {result.app} v{result.version}: "
        f"{len(result.created)} new, {len(result.destroyed)} replaced"
    )
    if detach:
        return
    _wait_started(client, result.app, result.created, wait_timeout)


def _config_app(text: str, filename: str) -> str:
    from roost.config import parse_config

    return parse_config(text, filename=filename).config.app


def _wait_started(client: ApiClient, app: str, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    failed = []
    for iid in ids:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            inst = s.InstanceOut(
                **client.request(
                    "GET",
                    f"/v1/apps/{app}/instances/{iid}/wait",
                    params={"state": "started", "timeout": min(remaining, 300)},
                    timeout=remaining + 5,
                )
            )
            click.echo(f"  instance {iid} started (pid {inst.pid}, port {inst.port})")
        except CliError as exc:
            failed.append(iid)
            click.echo(f"  instance {iid}: {exc}", err=True)
    if failed:
        raise CliError(f"{len(failed)} instance(s) did not start; see `roost events --app {app}`")


# -- status / scale --------------------------------------------------------------------------
@click.command()
@click.option("-a", "--app", help="show one app's instances")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def status(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """Show apps and their instances."""
    client = client_for(ctx)
    st = s.StatusOut(**client.request("GET", "/v1/status"))
    names = [app] if app else [a.name for a in st.apps]
    instances = {
        n: [s.InstanceOut(**i) for i in client.request("GET", f"/v1/apps/{n}/instances")]
        for n in names
    }
    if as_json:
        out = st.model_dump()
        out["apps"] = [
            dict(a.model_dump(), instances=[i.model_dump() for i in instances[a.name]])
            for a in st.apps
            if a.name in instances
        ]
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"node {st.node} ({st.region}), edge {st.edge_url}")
    for summary in st.apps:
        if summary.name not in instances:
            continue
        states = ", ".join(f"{n} {k}" for k, n in sorted(summary.instances.items())) or "none"
        click.echo(f"app {summary.name} v{summary.version}: {states}")
        for i in instances[summary.name]:
            health = "healthy" if i.healthy else "-"
            click.echo(
                f"  {i.id}  {i.process_group:<8} {i.state:<10} {health:<8} "
                f"pid={i.pid or '-'} port={i.port or '-'} restarts={i.restarts}"
            )


@click.group()
def scale() -> None:
    """Change how many instances an app runs."""


@scale.command("count")
@click.argument("count", type=click.IntRange(0, 1000))
@click.option("-a", "--app", required=True)
@click.option("--process-group", help="only this process group")
@click.option("--detach", is_flag=True)
@click.option("--wait-timeout", default=60.0, show_default=True)
@click.pass_context
def scale_count(
    ctx: click.Context,
    count: int,
    app: str,
    process_group: str | None,
    detach: bool,
    wait_timeout: float,
) -> None:
    """Run COUNT instances (per process group)."""
    client = client_for(ctx)
    body = s.ScaleRequest(count=count, process_group=process_group)
    res = s.ScaleResponse(**client.request("POST", f"/v1/apps/{app}/scale", json=body.model_dump()))
    counts = ", ".join(f"{g}={n}" for g, n in res.counts.items())
    click.echo(f"scaled {app}: {counts} ({len(res.created)} new, {len(res.destroyed)} destroyed)")
    if not detach:
        _wait_started(client, app, res.created, wait_timeout)


# -- apps ------------------------------------------------------------------------------------
@click.group()
def apps() -> None:
    """Create, list, show and destroy apps."""


@apps.command("list")
@click.pass_context
def apps_list(ctx: click.Context) -> None:
    for a in client_for(ctx).request("GET", "/v1/apps"):
        app = s.AppOut(**a)
        click.echo(f"{app.name}  v{app.version}  {app.counts}")


@apps.command("create")
@click.argument("name")
@click.pass_context
def apps_create(ctx: click.Context, name: str) -> None:
    app = s.AppOut(**client_for(ctx).request("POST", "/v1/apps", json={"name": name}))
    click.echo(f"created app {app.name}")


@apps.command("show")
@click.argument("name")
@click.pass_context
def apps_show(ctx: click.Context, name: str) -> None:
    click.echo(json.dumps(client_for(ctx).request("GET", f"/v1/apps/{name}"), indent=2))


@apps.command("destroy")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="do not ask")
@click.pass_context
def apps_destroy(ctx: click.Context, name: str, yes: bool) -> None:
    if not yes:
        click.confirm(f"destroy app {name} and all its instances?", abort=True)
    client_for(ctx).request("DELETE", f"/v1/apps/{name}", timeout=60)
    click.echo(f"destroyed app {name}")
