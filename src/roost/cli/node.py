"""``roost up``: run a single-node Roost in the foreground (the one command that is not an API
client). The node itself is composed by ``node.run.run_node``; this is its options and output."""

from __future__ import annotations

import asyncio
import gc
import signal

import click

from roost.cli.client import CliError


@click.command()
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
