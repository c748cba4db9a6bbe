"""``GET /v1/apps/{app}/usage``: an app's usage accounting (``roost.proxy.usage``) as JSON.

The router is built around one callable, ``get_usage(app)``, that returns the app's
:class:`~roost.proxy.usage.AppUsage` or None when the app does not exist (→ 404 in the API's
error shape). It may be a plain function or a coroutine function, so the node can check the
catalog first: an app that exists but had no traffic gets zeros, not a 404.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from roost.api.errors import not_found
from roost.api.schema import ErrorOut
from roost.proxy.usage import AppUsage

GetUsage = Callable[[str], AppUsage | Awaitable[AppUsage | None] | None]


class UsageOut(BaseModel):
    """An app's usage since ``since``; counters start at zero when the node starts."""

    app: str
    since: float = Field(description="unix time counting began (the node's start)")
    requests: int = Field(description="requests answered to clients, refusals included")
    bytes_in: int = Field(description="request body bytes received from clients")
    bytes_out: int = Field(description="response body bytes sent to clients")
    request_seconds: float = Field(description="sum of request durations, seconds")
    refusals: int = Field(description="requests refused for capacity (503)")

    @classmethod
    def of(cls, usage: AppUsage) -> UsageOut:
        return cls(
            app=usage.app,
            since=usage.since,
            requests=usage.requests,
            bytes_in=usage.bytes_in,
            bytes_out=usage.bytes_out,
            request_seconds=usage.request_seconds,
            refusals=usage.refusals,
        )


def usage_router(get_usage: GetUsage) -> APIRouter:
    """A router serving ``GET /v1/apps/{app}/usage`` from ``get_usage``."""
    router = APIRouter()

    @router.get(
        "/v1/apps/{app}/usage",
        response_model=UsageOut,
        responses={404: {"model": ErrorOut}},
        summary="Usage of an app: requests, bytes, request-seconds, refusals",
    )
    async def app_usage(app: str) -> Any:
        found = get_usage(app)
        if inspect.isawaitable(found):
            found = await found
        if found is None:
            err = not_found(f"app {app!r}")
            return JSONResponse(err.body(), status_code=err.status)
        return UsageOut.of(found)

    return router
