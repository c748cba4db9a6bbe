"""``roost certs`` end to end: the click group against a real uvicorn API with bearer auth."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import uvicorn
from click.testing import CliRunner
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from roost.api.auth import BearerAuth
from roost.api.certs import certs_router
from roost.api.errors import ApiError
from roost.catalog import certs as c
from roost.catalog import records as r
from roost.catalog.client import Catalog
from roost.catalog.sqlite import SqliteStore
from roost.cli.certs import certs
from roost.cli.main import Group
from roost.config import parse_config
from roost.proxy.tls import pki
from tests.helpers import wait_until

pytestmark = pytest.mark.integration
TOKEN = "t0ken"


class ApiThread(threading.Thread):
    """The certs API (and an app ``web``) served by uvicorn on its own loop in a thread."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.data_dir = data_dir
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the fixture
            self.error = exc

    async def _main(self) -> None:
        store = await SqliteStore.open(self.data_dir / "catalog.db")
        catalog = Catalog(store)
        config = parse_config('app = "web"\n', filename="roost.toml").config
        await catalog.create_app(r.App(name="web", config=config, counts={}))
        app = FastAPI()

        @app.exception_handler(ApiError)
        async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
            return JSONResponse(exc.body(), status_code=exc.status)

        app.include_router(certs_router(catalog, c.KeySeal(b"z" * 32)))
        config_ = uvicorn.Config(
            BearerAuth(app, TOKEN), log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config_)
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            await store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiThread]:
    thread = ApiThread(tmp_path)
    thread.start()
    wait_until(lambda: thread.error or (thread.server and thread.server.started), 15, what="API")
    assert thread.error is None
    yield thread
    assert thread.server is not None
    thread.server.should_exit = True
    thread.join(15)
    thread.sock.close()


@click.group(cls=Group)
@click.option("--api-url")
@click.option("--token")
@click.pass_context
def root(ctx: click.Context, api_url: str | None, token: str | None) -> None:
    """Stands in for ``roost`` (same context object and error handling)."""
    ctx.obj = {"data_dir": None, "api_url": api_url, "token": token}


root.add_command(certs)


def run(api: ApiThread, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(root, ["--api-url", api.url, "--token", TOKEN, *args])
    assert result.exit_code == code, result.output
    return result.output


def test_add_list_show_remove(api: ApiThread) -> None:
    """add (self-signed), list, show and remove round-trip through the API."""
    assert "is ready (self-signed)" in run(
        api, "certs", "add", "c.example.com", "-a", "web", "--self-signed"
    )
    assert "requested" in run(api, "certs", "add", "d.example.com", "--app", "web")
    listed = run(api, "certs", "list")
    assert "c.example.com" in listed and "d.example.com" in listed and "pending" in listed
    shown = run(api, "certs", "show", "c.example.com", "--chain")
    assert "status       ready" in shown and "BEGIN CERTIFICATE" in shown
    assert "PRIVATE KEY" not in shown
    assert "removed" in run(api, "certs", "remove", "c.example.com", "-y")
    assert "not found" in run(api, "certs", "show", "c.example.com", code=1)


def test_import_and_errors(api: ApiThread, tmp_path: Path) -> None:
    """import uploads a checked pair; a mismatched key is refused with exit code 2."""
    chain, key = pki.self_signed("imp.example.com", time.time())
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "other.pem").write_bytes(pki.key_to_pem(pki.generate_key()))
    args = [
        "certs",
        "import",
        "imp.example.com",
        "-a",
        "web",
        "--cert",
        str(tmp_path / "chain.pem"),
    ]
    assert "imported" in run(api, *args, "--key", str(tmp_path / "key.pem"))
    out = run(api, *args, "--key", str(tmp_path / "other.pem"), code=2)
    assert "does not match" in out
    assert "app" in run(api, "certs", "add", "x.example.com", "-a", "Bad_App", code=2)
    assert "wildcards" in run(api, "certs", "add", "*.example.com", "-a", "web", code=2)
