"""Proxy observability hooks: the interface the data plane calls.

The edge and host proxy call these methods at the points named; the implementation
(:class:`roost.proxy.prometheus.PrometheusMetrics`: Prometheus metrics plus per-app usage
accounting, ``roost.proxy.usage``) lives behind this interface so the hot path never imports
prometheus-client directly. ``NullMetrics`` is for tests that do not care.

Label values are bounded: app names (capped by the implementation: later apps share one label),
status classes ("2xx"), reasons from fixed sets. Never instance ids or paths. Calls come from
the event-loop thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

Role = Literal["edge", "host"]
RetryReason = Literal["refused", "connect_failed", "connect_timeout"]
TimeoutKind = Literal[
    "header_deadline", "body_rate", "connect", "response_headers", "keepalive_idle"
]


class PoolStats(Protocol):
    """What a connection pool reports (read at scrape time)."""

    def stats(self) -> dict[str, int]:  # e.g. {"idle": 3, "active": 5, "opened": 120}
        ...


class Metrics(Protocol):
    def request_finished(
        self,
        *,
        role: Role,
        app: str,
        status: int,
        protocol: str,  # "http/1.1" | "h2"
        time_to_headers: float,  # request head received -> response head sent (seconds)
        request_body_time: float,  # first -> last request body byte received
        response_body_time: float,  # first -> last response body byte sent
        bytes_in: int,  # request body bytes from the client
        bytes_out: int,  # response body bytes to the client
        duration: float,  # request head received -> response complete
    ) -> None: ...

    def retried(self, *, app: str, reason: RetryReason) -> None: ...

    def refused(self, *, role: Role, app: str, reason: str) -> None:
        """host: refused at hard limit; edge: answered 503 at capacity / per-app cap."""

    def queue_wait(self, *, app: str, seconds: float, outcome: str) -> None:
        """A request waited for capacity; outcome: "served" | "timeout" | "queue_full"."""

    def timed_out(self, *, role: Role, kind: TimeoutKind) -> None: ...

    def register_pool(self, name: str, pool: PoolStats) -> None: ...

    def inflight(self, *, role: Role, app: str, delta: int) -> None: ...

    def gate_held(self, *, app: str) -> None:
        """The edge's work gate held back a request or an idle connection of ``app`` (at
        capacity) until a later loop turn (:mod:`roost.proxy.workgate`)."""


class NullMetrics:
    """Metrics that record nothing (explicit signatures: a misnamed keyword fails loudly, and a
    call costs half of what ``**kw`` would)."""

    def request_finished(
        self,
        *,
        role: Role,
        app: str,
        status: int,
        protocol: str,
        time_to_headers: float,
        request_body_time: float,
        response_body_time: float,
        bytes_in: int,
        bytes_out: int,
        duration: float,
    ) -> None:
        pass

    def retried(self, *, app: str, reason: RetryReason) -> None:
        pass

    def refused(self, *, role: Role, app: str, reason: str) -> None:
        pass

    def queue_wait(self, *, app: str, seconds: float, outcome: str) -> None:
        pass

    def timed_out(self, *, role: Role, kind: TimeoutKind) -> None:
        pass

    def register_pool(self, name: str, pool: PoolStats) -> None:
        pass

    def inflight(self, *, role: Role, app: str, delta: int) -> None:
        pass

    def gate_held(self, *, app: str) -> None:
        pass

    def loop_lag(self, seconds: float) -> None:
        """Event-loop lag sample (``node.looplag``); not part of ``Metrics``."""


Clock = Callable[[], float]
