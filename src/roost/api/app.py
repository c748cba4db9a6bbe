"""The control-plane HTTP API: routes only; the work is in ``api.service``.

JSON in and out, OpenAPI at ``/v1/openapi.json``, bearer token on every call (``api.auth``).
Errors share one body: ``{"error": {"code", "message", "fields": [{"field", "message"}]}}``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import msgspec
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

import roost
from roost.api import schema as s
from roost.api.auth import BearerAuth
from roost.api.errors import ApiError
from roost.api.service import ControlPlane
from roost.catalog import records as r
from roost.machines.logs import LogCollector

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": s.ErrorOut},
    404: {"model": s.ErrorOut},
    422: {"model": s.ErrorOut},
}


def instance_out(inst: r.Instance) -> s.InstanceOut:
    data = msgspec.to_builtins(inst)
    return s.InstanceOut(**{k: v for k, v in data.items() if k in s.InstanceOut.model_fields})


def app_out(app: r.App) -> s.AppOut:
    return s.AppOut(
        name=app.name,
        version=app.version,
        counts=app.counts,
        hostnames=list(app.config.hostnames),
        primary_region=app.config.primary_region,
        workdir=app.workdir,
        config=msgspec.to_builtins(app.config),
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


def create_api(
    control: ControlPlane,
    logs: LogCollector,
    token: str,
    *,
    node: r.Node,
    edge_url: str,
    routers: Sequence[APIRouter] = (),
) -> Any:
    """The API app, wrapped in bearer auth. ``routers`` add feature routes (certs, usage)."""
    api = FastAPI(
        title="Roost control plane",
        version=roost.__version__,
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses=ERRORS,
    )

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            fields.append((".".join(loc) or "body", str(err.get("msg", "invalid"))))
        message = "; ".join(f"{f}: {m}" for f, m in fields)
        return JSONResponse(ApiError(422, "invalid", message, fields).body(), status_code=422)

    @api.get("/v1/status", response_model=s.StatusOut)
    async def status() -> s.StatusOut:
        apps = []
        for app in await control.catalog.list_apps():
            states = Counter(i.state for i in await control.catalog.list_instances(app.name))
            apps.append(
                s.AppSummary(
                    name=app.name, version=app.version, counts=app.counts, instances=dict(states)
                )
            )
        return s.StatusOut(
            node=node.id,
            region=node.region,
            version=roost.__version__,
            edge_url=edge_url,
            apps=apps,
        )

    @api.get("/v1/apps", response_model=list[s.AppOut])
    async def list_apps() -> list[s.AppOut]:
        return [app_out(a) for a in await control.catalog.list_apps()]

    @api.post("/v1/apps", response_model=s.AppOut, status_code=201)
    async def create_app(body: s.CreateAppRequest) -> s.AppOut:
        return app_out(await control.create_app(body.name))

    @api.get("/v1/apps/{app}", response_model=s.AppOut)
    async def get_app(app: str) -> s.AppOut:
        return app_out(await control.get_app(app))

    @api.delete("/v1/apps/{app}", status_code=204)
    async def destroy_app(app: str) -> None:
        await control.destroy_app(app)

    @api.post("/v1/apps/{app}/deploy", response_model=s.DeployResponse)
    async def deploy(app: str, body: s.DeployRequest) -> s.DeployResponse:
        result = await control.deploy(
            body.config,
            filename=body.filename,
            app=body.app or app,
            workdir=body.workdir,
            command=body.command,
        )
        return s.DeployResponse(
            app=result.app.name,
            version=result.app.version,
            created=list(result.created),
            destroyed=list(result.destroyed),
            warnings=list(result.warnings),
        )

    @api.post("/v1/apps/{app}/scale", response_model=s.ScaleResponse)
    async def scale(app: str, body: s.ScaleRequest) -> s.ScaleResponse:
        record, created, destroyed = await control.scale(app, body.count, body.process_group)
        return s.ScaleResponse(app=app, counts=record.counts, created=created, destroyed=destroyed)

    @api.get("/v1/apps/{app}/instances", response_model=list[s.InstanceOut])
    async def list_instances(app: str) -> list[s.InstanceOut]:
        await control.get_app(app)
        return [instance_out(i) for i in await control.catalog.list_instances(app)]

    @api.get("/v1/apps/{app}/instances/{iid}", response_model=s.InstanceOut)
    async def get_instance(app: str, iid: str) -> s.InstanceOut:
        return instance_out(await control.get_instance(app, iid))

    @api.post("/v1/apps/{app}/instances/{iid}/{action}", response_model=s.InstanceOut)
    async def act(app: str, iid: str, action: Literal["start", "stop", "restart"]) -> s.InstanceOut:
        return instance_out(await control.instance_action(app, iid, action))

    @api.delete("/v1/apps/{app}/instances/{iid}", response_model=s.InstanceOut)
    async def destroy_instance(app: str, iid: str) -> s.InstanceOut:
        return instance_out(await control.instance_action(app, iid, "destroy"))

    @api.get("/v1/apps/{app}/instances/{iid}/wait", response_model=s.InstanceOut)
    async def wait(
        app: str,
        iid: str,
        state: s.InstanceStateName = "started",
        timeout: float = Query(10.0, gt=0, le=300),
    ) -> s.InstanceOut:
        return instance_out(await control.wait_for_state(app, iid, state, timeout))

    @api.get("/v1/apps/{app}/events", response_model=list[s.EventOut])
    async def events(app: str, limit: int = Query(100, ge=1, le=1000)) -> list[s.EventOut]:
        await control.get_app(app)
        return [
            s.EventOut(**msgspec.to_builtins(e))
            for e in await control.catalog.list_events(app, limit)
        ]

    @api.get("/v1/apps/{app}/logs", responses={200: {"content": {"application/x-ndjson": {}}}})
    async def app_logs(
        app: str,
        tail: int = Query(100, ge=0, le=10_000),
        follow: bool = False,
        instance: str | None = None,
    ) -> StreamingResponse:
        await control.get_app(app)
        return StreamingResponse(
            _stream_logs(logs, app, tail, follow, instance), media_type="application/x-ndjson"
        )

    for router in routers:
        api.include_router(router)
    return BearerAuth(api, token)


def _line(entry: Any) -> bytes:
    return (
        json.dumps(
            {
                "ts": entry.ts,
                "app": entry.app,
                "instance_id": entry.instance_id,
                "stream": entry.stream,
                "line": entry.line,
            }
        )
        + "\n"
    ).encode()


async def _stream_logs(
    logs: LogCollector, app: str, tail: int, follow: bool, instance: str | None
) -> AsyncIterator[bytes]:
    sub = logs.subscribe(app) if follow else None
    try:
        lines = logs.tail(app, tail, instance_id=instance) if tail else []
        last_ts = lines[-1].ts if lines else 0.0
        for line in lines:
            yield _line(line)
        if sub is None:
            return
        async for line in sub:
            if line.ts <= last_ts or (instance and line.instance_id != instance):
                continue
            yield _line(line)
    except asyncio.CancelledError:
        raise
    finally:
        if sub is not None:
            sub.close()
