"""Request and response bodies of the control-plane API. The CLI imports these same types."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from roost.catalog.records import InstanceState

APP_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
InstanceStateName = InstanceState  # one list of states: the catalog's


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateAppRequest(Strict):
    name: str = Field(pattern=APP_NAME, description="app name: lowercase letters, digits, -")


class DeployRequest(Strict):
    config: str = Field(max_length=1 << 20, description="the roost.toml / fly.toml text")
    filename: str = Field("roost.toml", max_length=4096, description="shown in errors")
    app: str | None = Field(None, pattern=APP_NAME, description="overrides `app` in the config")
    workdir: str | None = Field(
        None, max_length=4096, description="absolute directory process commands run in"
    )
    command: list[str] | None = Field(
        None,
        min_length=1,
        description="command for the `app` process group if [processes] is empty",
    )


class DeployResponse(BaseModel):
    app: str
    version: int
    created: list[str]
    destroyed: list[str]
    warnings: list[str]


class ScaleRequest(Strict):
    count: int = Field(ge=0, le=1000)
    process_group: str | None = Field(None, max_length=63)


class ScaleResponse(BaseModel):
    app: str
    counts: dict[str, int]
    created: list[str]
    destroyed: list[str]


class InstanceOut(BaseModel):
    id: str
    app: str
    node: str
    region: str
    process_group: str
    app_version: int
    desired: str
    state: InstanceStateName
    pid: int | None
    port: int | None
    ports: dict[str, int]
    healthy: bool
    exit_code: int | None
    restarts: int
    reason: str
    created_at: float
    updated_at: float


class AppOut(BaseModel):
    name: str
    version: int
    counts: dict[str, int]
    hostnames: list[str]
    primary_region: str
    workdir: str | None
    config: dict[str, Any]
    created_at: float
    updated_at: float


class AppSummary(BaseModel):
    name: str
    version: int
    counts: dict[str, int]
    instances: dict[str, int]  # state -> number


class StatusOut(BaseModel):
    node: str
    region: str
    version: str
    edge_url: str
    apps: list[AppSummary]


class EventOut(BaseModel):
    time: float
    app: str
    instance_id: str
    type: str
    message: str
    exit_code: int | None


class LogLineOut(BaseModel):
    ts: float
    app: str
    instance_id: str
    stream: str
    line: str


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = []


class ErrorOut(BaseModel):
    error: ErrorBody
