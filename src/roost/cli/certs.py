"""``roost certs``: add, list, show, remove and import TLS certificates (via the API).

Wired into the main command with ``cli.add_command(certs)``; it reads the same global options
(``--data-dir``, ``--api-url``, ``--token``) from the click context object, and its errors are
``CliError`` lines printed by the main group.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import click

from roost.api.certs import AddCertRequest, CertOut, ImportCertRequest
from roost.cli.client import ApiClient, CliError


@contextlib.contextmanager
def _client(ctx: click.Context) -> Iterator[ApiClient]:
    """An API client for this command, closed when the command ends."""
    obj = ctx.find_root().obj or {}
    client = ApiClient.discover(obj.get("data_dir"), obj.get("api_url"), obj.get("token"))
    try:
        yield client
    finally:
        client.http.close()


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def _first_error(exc: ValueError) -> str:
    """A pydantic ValidationError as one line: ``field: message``."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        for err in errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "input"
            return f"{where}: {err.get('msg', 'invalid')}"
    return str(exc)


def _line(cert: CertOut) -> str:
    expiry = _when(cert.not_after) if cert.not_after else "-"
    line = f"{cert.hostname:<40} {cert.app:<16} {cert.source:<11} {cert.status:<8} {expiry}"
    return line + (f"  ({cert.last_error})" if cert.last_error else "")


def _show(cert: CertOut) -> None:
    click.echo(f"hostname     {cert.hostname}")
    click.echo(f"app          {cert.app}")
    click.echo(f"source       {cert.source}")
    click.echo(f"status       {cert.status}")
    click.echo(f"issuer       {cert.issuer or '-'}")
    click.echo(f"valid        {_when(cert.not_before)} .. {_when(cert.not_after)}")
    click.echo(f"fingerprint  {cert.fingerprint or '-'}")
    if cert.source == "acme":
        label = "retry at" if cert.last_error else "renew from"
        click.echo(f"{label:<12} {_when(cert.renew_after)}")
    if cert.last_error:
        click.echo(f"last error   {cert.last_error} (failures: {cert.failures})")


@click.group()
def certs() -> None:
    """Manage TLS certificates served by the edge."""


@certs.command("add")
@click.argument("hostname")
@click.option("-a", "--app", required=True, help="the app this hostname serves")
@click.option("--self-signed", is_flag=True, help="make a self-signed certificate now")
@click.option("--wait", is_flag=True, help="wait until the certificate is issued (or fails)")
@click.option("--wait-timeout", default=120.0, show_default=True, help="seconds to wait")
@click.pass_context
def certs_add(
    ctx: click.Context, hostname: str, app: str, self_signed: bool, wait: bool, wait_timeout: float
) -> None:
    """Get a certificate for HOSTNAME (ACME, issued and renewed in the background)."""
    try:
        body = AddCertRequest(
            hostname=hostname, app=app, source="self-signed" if self_signed else "acme"
        )
    except ValueError as exc:
        raise CliError(_first_error(exc), 2) from None
    with _client(ctx) as client:
        _add(client, body, wait, wait_timeout)


def _add(client: ApiClient, body: AddCertRequest, wait: bool, wait_timeout: float) -> None:
    cert = CertOut(**client.request("POST", "/v1/certs", json=body.model_dump()))
    if cert.status == "ready":
        click.echo(f"certificate for {cert.hostname} is ready ({cert.source})")
        return
    click.echo(f"certificate for {cert.hostname} requested; the edge is getting it from the CA")
    if not wait:
        click.echo(f"  see `roost certs show {cert.hostname}`")
        return
    deadline = time.monotonic() + wait_timeout
    while time.monotonic() < deadline:
        cert = CertOut(**client.request("GET", f"/v1/certs/{cert.hostname}"))
        if cert.status == "ready":
            click.echo(f"certificate for {cert.hostname} issued by {cert.issuer}")
            return
        if cert.status == "failed":
            raise CliError(f"certificate for {cert.hostname} not issued: {cert.last_error}")
        time.sleep(0.5)  # polling a remote API from a CLI, with a deadline
    raise CliError(f"certificate for {cert.hostname} still {cert.status} after {wait_timeout}s")


@certs.command("list")
@click.option("-a", "--app", help="only this app's certificates")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def certs_list(ctx: click.Context, app: str | None, as_json: bool) -> None:
    """List certificates."""
    params = {"app": app} if app else {}
    with _client(ctx) as client:
        items = [CertOut(**x) for x in client.request("GET", "/v1/certs", params=params)]
    if as_json:
        click.echo(json.dumps([x.model_dump(exclude={"chain_pem"}) for x in items], indent=2))
        return
    if not items:
        click.echo("no certificates")
    for cert in items:
        click.echo(_line(cert))


@certs.command("show")
@click.argument("hostname")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--chain", is_flag=True, help="also print the PEM chain")
@click.pass_context
def certs_show(ctx: click.Context, hostname: str, as_json: bool, chain: bool) -> None:
    """Show one certificate: status, dates, issuer and the last error, if any."""
    with _client(ctx) as client:
        cert = CertOut(**client.request("GET", f"/v1/certs/{hostname}"))
    if as_json:
        click.echo(json.dumps(cert.model_dump(), indent=2))
        return
    _show(cert)
    if chain and cert.chain_pem:
        click.echo(cert.chain_pem.rstrip())


@certs.command("remove")
@click.argument("hostname")
@click.option("-y", "--yes", is_flag=True, help="do not ask")
@click.pass_context
def certs_remove(ctx: click.Context, hostname: str, yes: bool) -> None:
    """Remove a certificate (the edge stops serving it)."""
    if not yes:
        click.confirm(f"remove the certificate for {hostname}?", abort=True)
    with _client(ctx) as client:
        client.request("DELETE", f"/v1/certs/{hostname}")
    click.echo(f"removed the certificate for {hostname}")


@certs.command("import")
@click.argument("hostname")
@click.option("-a", "--app", required=True, help="the app this hostname serves")
@click.option(
    "--cert",
    "cert_file",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="PEM certificate chain, leaf first",
)
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="PEM private key",
)
@click.pass_context
def certs_import(
    ctx: click.Context, hostname: str, app: str, cert_file: Path, key_file: Path
) -> None:
    """Upload a certificate and key for HOSTNAME (checked: key matches, name covered)."""
    try:
        body = ImportCertRequest(
            hostname=hostname,
            app=app,
            chain_pem=cert_file.read_text(),
            key_pem=key_file.read_text(),
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {cert_file} / {key_file}: {exc}", 2) from None
    except ValueError as exc:
        raise CliError(_first_error(exc), 2) from None
    with _client(ctx) as client:
        cert = CertOut(**client.request("POST", "/v1/certs/import", json=body.model_dump()))
    click.echo(
        f"imported the certificate for {cert.hostname} (valid until {_when(cert.not_after)})"
    )
