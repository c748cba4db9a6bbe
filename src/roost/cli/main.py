"""``roost`` command-line entry point (click). Errors are one line; bad input exits 2.

The root group and its global options live here; the commands live in ``node`` (``up``),
``apps`` (``deploy``, ``status``, ``scale``, ``apps``), ``instances`` (``instances``, ``logs``,
``events``) and ``certs``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from roost.cli.apps import CONFIG_NAMES, apps, deploy, scale, status
from roost.cli.certs import certs
from roost.cli.client import CliError
from roost.cli.instances import events, instances, logs
from roost.cli.node import up
from roost.config import ConfigError

__all__ = ["CONFIG_NAMES", "Group", "cli", "main"]


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


cli.add_command(up)
cli.add_command(deploy)
cli.add_command(status)
cli.add_command(scale)
cli.add_command(apps)
cli.add_command(instances)
cli.add_command(logs)
cli.add_command(events)
cli.add_command(certs)


def main() -> None:
    cli(prog_name="roost")


if __name__ == "__main__":
    sys.exit(main())
