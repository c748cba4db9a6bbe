"""A small synchronous API client for the CLI (httpx), with errors as one clear line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from roost.node import datadir


class CliError(Exception):
    """Printed as one line; ``exit_code`` 1 for API/connection errors, 2 for bad input."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    @classmethod
    def discover(
        cls, data_dir: Path | None, url: str | None = None, token: str | None = None
    ) -> ApiClient:
        data_dir = (data_dir or datadir.default_data_dir()).expanduser()
        url = url or os.environ.get("ROOST_API_URL")
        token = token or os.environ.get("ROOST_API_TOKEN")
        if url is None:
            info = datadir.read_api_info(data_dir)
            if info is None:
                raise CliError(
                    f"no running roost found for data dir {data_dir} (start one with `roost up`, "
                    "or pass --api-url)"
                )
            url = str(info["url"])
        if token is None:
            try:
                token = (data_dir / "token").read_text().strip()
            except OSError as exc:
                raise CliError(f"cannot read the API token in {data_dir}: {exc.strerror}") from None
        return cls(url, token)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise CliError(f"the API at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            raise CliError(_error_message(resp), 2 if resp.status_code == 422 else 1)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def stream_lines(self, path: str, **kw: Any) -> Iterator[dict[str, Any]]:
        try:
            with self.http.stream("GET", path, timeout=None, **kw) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise CliError(_error_message(resp))
                for line in resp.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise CliError(f"lost the API at {self.url}: {exc}") from None


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json()["error"]
        message = str(err["message"])
    except (ValueError, KeyError, TypeError):
        message = resp.text.strip()[:200] or resp.reason_phrase
    return f"{message} (HTTP {resp.status_code})"


def client_for(ctx: click.Context) -> ApiClient:
    """An API client from the root group's ``--data-dir``, ``--api-url`` and ``--token``."""
    obj = ctx.obj
    return ApiClient.discover(obj["data_dir"], obj["api_url"], obj["token"])
