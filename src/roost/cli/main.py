"""``roost`` command-line entry point (click). Errors are one line; bad input exits 2."""

from __future__ import annotations

import asyncio
import gc
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from roost.api import schema as s
from roost.cli.certs import certs
from roost.cli.client import ApiClient, CliError
from roost.config import ConfigError, load_config

CONFIG_NAMES = ("roost.toml", "fly.toml")


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(2)


def _client(ctx: click.Context) -> ApiClient:
    obj = ctx.obj
    return ApiClient.discover(obj["data_dir"], obj["api_url"], obj["token"])


@click.group(cls=Group)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="ROOST_DATA_DIR",
    help="node data directory (default ~/.local/share/roost)",
)
@click.option("--api-url", envvar="ROOST_API_URL", help="API URL (default: found in data dir)")
@click.option("--token", envvar="ROOST_API_TOKEN", help="API token (default: data dir's token)")
@click.version_option(package_name="roost")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, api_url: str | None, token: str | None) -> None:
    """Roost: deploy apps, run their instances, route requests to them."""
    ctx.obj = {"data_dir": data_dir, "api_url": api_url, "token": token}


# -- up --------------------------------------------------------------------------------------
@cli.command()
@click.option("--http-port", default=8080, show_default=True, help="edge HTTP port")
@click.option(
    "--https-port", default=8443, show_default=True, help="edge HTTPS port (0 = any free)"
)
@click.option("--no-https", is_flag=True, help="no HTTPS listener on the edge")
@click.option("--acme-directory", metavar="URL", help="ACME directory: issue and renew certs")
@click.option(
    "--acme-ca-bundle",
    type=click.Path(exists=True, dir_okay=False),
    help="CA file that signs the ACME server's own certificate",
)
@click.option("--acme-email", help="contact address for the ACME account")
@click.option(
    "--acme-challenge",
    "acme_challenges",
    multiple=True,
    type=click.Choice(["tls-alpn-01", "http-01"]),
    help="challenge types to answer, in order (default: tls-alpn-01, http-01)",
)
@click.option("--api-port", default=4280, show_default=True, help="control-plane API port")
@click.option("--host", "http_host", default="127.0.0.1", show_default=True, help="edge address")
@click.option(
    "--admin-port",
    default=9280,
    show_default=True,
    help="admin port on 127.0.0.1: Prometheus /metrics and /healthz (0 = any free)",
)
@click.option(
    "--drain-timeout",
    default=30.0,
    show_default=True,
    help="seconds in-flight requests may take to finish on Ctrl-C / SIGTERM",
)
@click.option("--region", default="local", show_default=True, help="this node's region")
@click.option("--demo/--no-demo", default=True, help="deploy the demo app (3 instances)")
@click.pass_context
def up(
    ctx: click.Context,
    http_port: int,
    https_port: int,
    no_https: bool,
    acme_directory: str | None,
    acme_ca_bundle: str | None,
    acme_email: str | None,
    acme_challenges: tuple[str, ...],
    api_port: int,
    http_host: str,
    admin_port: int,
    drain_timeout: float,
    region: str,
    demo: bool,
) -> None:
    """Run a single-node Roost in the foreground (catalog, agent, API, edge)."""
    from roost.node.datadir import default_data_dir
    from roost.node.run import NodeInfo, NodeOptions, StartupError, run_node

    opts = NodeOptions(
        data_dir=ctx.obj["data_dir"] or default_data_dir(),
        http_host=http_host,
        http_port=http_port,
        https_port=None if no_https else https_port,
        acme_directory=acme_directory,
        acme_ca_bundle=acme_ca_bundle,
        acme_email=acme_email,
        api_port=api_port,
        admin_port=admin_port,
        drain_timeout=drain_timeout,
        region=region,
        demo=demo,
        acme_challenges=acme_challenges or ("tls-alpn-01", "http-01"),
    )

    def started(info: NodeInfo) -> None:
        click.echo(f"roost {info.node_id} is up (data dir {info.data_dir})")
        click.echo(f"  edge  {info.edge_url}")
        if info.https_url:
            click.echo(f"  https {info.https_url}")
        click.echo(f"  API   {info.api_url}  (token in {info.data_dir / 'token'})")
        if info.admin_url:
            click.echo(f"  admin {info.admin_url}/metrics")
        if opts.demo:
            host = info.edge_url.split("//", 1)[1]
            click.echo(f"  try   curl -H 'Host: demo.localhost' http://{host}/")
        click.echo("Ctrl-C stops the node and its instances.")
        # Everything allocated at start-up lives as long as the node: move it out of the
        # collector's sight, so full collections scan only what requests allocate (they
        # were stalling the loop for 60-200 ms under connection churn; bench/isolation.py).
        gc.collect()
        gc.freeze()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_node(opts, stop, started)

    try:
        import uvloop

        uvloop.run(main())
    except StartupError as exc:
        raise CliError(str(exc)) from None
    click.echo("roost stopped")


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


@cli.command()
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
    client = _client(ctx)
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
@cli.command()
@click.option("-a", "--app", help="show one app's instances")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def status(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """Show apps and their instances."""
    client = _client(ctx)
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


@cli.group()
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
    client = _client(ctx)
    body = s.ScaleRequest(count=count, process_group=process_group)
    res = s.ScaleResponse(**client.request("POST", f"/v1/apps/{app}/scale", json=body.model_dump()))
    counts = ", ".join(f"{g}={n}" for g, n in res.counts.items())
    click.echo(f"scaled {app}: {counts} ({len(res.created)} new, {len(res.destroyed)} destroyed)")
    if not detach:
        _wait_started(client, app, res.created, wait_timeout)


# -- apps ------------------------------------------------------------------------------------
@cli.group()
def apps() -> None:
    """Create, list, show and destroy apps."""


@apps.command("list")
@click.pass_context
def apps_list(ctx: click.Context) -> None:
    for a in _client(ctx).request("GET", "/v1/apps"):
        app = s.AppOut(**a)
        click.echo(f"{app.name}  v{app.version}  {app.counts}")


@apps.command("create")
@click.argument("name")
@click.pass_context
def apps_create(ctx: click.Context, name: str) -> None:
    app = s.AppOut(**_client(ctx).request("POST", "/v1/apps", json={"name": name}))
    click.echo(f"created app {app.name}")


@apps.command("show")
@click.argument("name")
@click.pass_context
def apps_show(ctx: click.Context, name: str) -> None:
    click.echo(json.dumps(_client(ctx).request("GET", f"/v1/apps/{name}"), indent=2))


@apps.command("destroy")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="do not ask")
@click.pass_context
def apps_destroy(ctx: click.Context, name: str, yes: bool) -> None:
    if not yes:
        click.confirm(f"destroy app {name} and all its instances?", abort=True)
    _client(ctx).request("DELETE", f"/v1/apps/{name}", timeout=60)
    click.echo(f"destroyed app {name}")


# -- instances -------------------------------------------------------------------------------
@cli.group()
def instances() -> None:
    """List and control an app's instances."""


@instances.command("list")
@click.option("-a", "--app", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def instances_list(ctx: click.Context, app: str, as_json: bool) -> None:
    items = _client(ctx).request("GET", f"/v1/apps/{app}/instances")
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
    click.echo(
        json.dumps(_client(ctx).request("GET", f"/v1/apps/{app}/instances/{instance_id}"), indent=2)
    )


def _instance_action(action: str, method: str = "POST") -> Any:
    @click.argument("instance_id")
    @click.option("-a", "--app", required=True)
    @click.pass_context
    def command(ctx: click.Context, instance_id: str, app: str) -> None:
        path = f"/v1/apps/{app}/instances/{instance_id}"
        inst = s.InstanceOut(
            **_client(ctx).request(method, path if method == "DELETE" else f"{path}/{action}")
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
        **_client(ctx).request(
            "GET",
            f"/v1/apps/{app}/instances/{instance_id}/wait",
            params={"state": state, "timeout": timeout},
            timeout=timeout + 5,
        )
    )
    click.echo(f"{inst.id} is {inst.state}")


# -- logs / events ---------------------------------------------------------------------------
@cli.command()
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
        for entry in _client(ctx).stream_lines(f"/v1/apps/{app}/logs", params=params):
            line = s.LogLineOut(**entry)
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(line.ts))
            click.echo(f"{ts}Z {line.instance_id} {line.stream}: {line.line}")
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("-a", "--app", required=True)
@click.option("-n", "--limit", default=50, show_default=True)
@click.pass_context
def events(ctx: click.Context, app: str, limit: int) -> None:
    """Print an app's lifecycle events."""
    for raw in _client(ctx).request("GET", f"/v1/apps/{app}/events", params={"limit": limit}):
        e = s.EventOut(**raw)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e.time))
        click.echo(f"{ts}Z {e.instance_id} {e.type:<12} {e.message}")


cli.add_command(certs)


def main() -> None:
    cli(prog_name="roost")


if __name__ == "__main__":
    sys.exit(main())
