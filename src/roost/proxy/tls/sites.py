"""Per-hostname edge policy from the apps' configs: force_https, self-signed fallback, passthrough.

The route table says which app a name belongs to; the app's services say how the edge treats it:

- ``force_https``: ``[http_service] force_https = true`` (or an http port with it) -> the plain
  HTTP port answers ``301`` to ``https://host[:https_port]/path`` (never for ACME challenge paths);
- ``default_self_signed``: a name of the app with no certificate yet gets an in-memory
  self-signed certificate instead of a handshake alert (``CertCache(self_signed=...)``);
- SNI passthrough: a ``[[services]]`` port 443 with no handlers -> the edge's TLS port relays the
  connection, ClientHello untouched, to the service's internal port on an instance.

:class:`SitePolicy` is a pure snapshot of those facts by app name; :class:`Sites` rebuilds it
whenever the route table it follows is swapped (one identity check per lookup).
:func:`plain_http_intercept` is the plain-HTTP edge's hook (``ClientConnection(intercept=)``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from roost.catalog import records as r
from roost.proxy import errors
from roost.proxy.headers import Headers
from roost.proxy.http1 import Intercept
from roost.proxy.routes import RouteHolder, RouteTable, normalize_host
from roost.proxy.tls.challenges import ACME_PREFIX, Http01Responder

__all__ = ["SitePolicy", "Sites", "plain_http_intercept"]

PASSTHROUGH_PORT = 443
_ACME = ACME_PREFIX.encode("ascii")


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """What the edge does per app (by name); build with :meth:`build`."""

    force_https: frozenset[str] = frozenset()
    self_signed: frozenset[str] = frozenset()
    passthrough: Mapping[str, int] | None = None  # app -> internal port of its raw TLS service

    @classmethod
    def build(cls, apps: Mapping[str, r.App]) -> SitePolicy:
        force: set[str] = set()
        self_signed: set[str] = set()
        passthrough: dict[str, int] = {}
        for name, app in apps.items():
            for svc in app.config.services:
                if svc.force_https or any(p.force_https for p in svc.ports):
                    force.add(name)
                if svc.default_self_signed or any(p.default_self_signed for p in svc.ports):
                    self_signed.add(name)
                if svc.protocol == "tcp" and any(
                    p.port == PASSTHROUGH_PORT and not p.handlers for p in svc.ports
                ):
                    passthrough.setdefault(name, svc.internal_port)
        return cls(frozenset(force), frozenset(self_signed), passthrough)


class AppsView(Protocol):
    """Where the apps and instances are (``node.routes.RouteSync`` has both)."""

    apps: dict[str, r.App]
    instances: dict[str, r.Instance]


class Sites:
    """The current :class:`SitePolicy`, rebuilt when the route table changes."""

    def __init__(
        self, holder: RouteHolder, view: AppsView, rng: random.Random | None = None
    ) -> None:
        self.holder = holder
        self.view = view
        self.rng = rng or random.Random()
        self._table: RouteTable | None = None
        self._policy = SitePolicy()

    @property
    def policy(self) -> SitePolicy:
        table = self.holder.table
        if table is not self._table:
            self._policy = SitePolicy.build(self.view.apps)
            self._table = table
        return self._policy

    def app_for(self, host: str) -> str | None:
        route = self.holder.table.lookup(host)
        return None if route is None else route.app

    def force_https(self, host: str) -> bool:
        """Whether plain-HTTP requests for ``host`` are redirected to HTTPS."""
        policy = self.policy
        return bool(policy.force_https) and self.app_for(host) in policy.force_https

    def self_signed(self, name: str) -> bool:
        """Whether ``name`` may get a self-signed stand-in certificate."""
        policy = self.policy
        return bool(policy.self_signed) and self.app_for(name) in policy.self_signed

    def passthrough_targets(self, server_name: str | None) -> list[tuple[str, int]] | None:
        """``(instance id, port)`` of the instances to relay a TLS connection for
        ``server_name`` to, in random order (the relay takes the first with room), or None
        (terminate it here). Only apps with a no-handler port 443 are relayed."""
        ports = self.policy.passthrough
        if not ports or server_name is None:
            return None
        app = self.app_for(server_name)
        internal = None if app is None else ports.get(app)
        if internal is None:
            return None
        key = str(internal)
        targets = [
            (inst.id, inst.ports[key])
            for inst in self.view.instances.values()
            if inst.app == app
            and inst.desired == "started"
            and inst.state == "started"
            and inst.healthy
            and key in inst.ports
        ]
        self.rng.shuffle(targets)
        return targets


def plain_http_intercept(
    sites: Sites | None, http01: Http01Responder | None, https_port: int | None
) -> Intercept | None:
    """The plain-HTTP port's hook: ACME HTTP-01 answers first, then ``force_https`` redirects."""
    if http01 is None and (sites is None or https_port is None):
        return None
    port = "" if https_port in (None, 443) else f":{https_port}"

    def intercept(method: bytes, target: bytes, headers: Headers) -> errors.ProxyError | None:
        if target.startswith(_ACME):
            body = None if http01 is None else http01.response_for(target.decode("latin-1"))
            if body is None:
                return None  # not one of ours: the app may run its own ACME client
            answer = body.decode()
            return errors.ProxyError(200, "acme_challenge", answer, origin="edge", close=True)
        if sites is None or https_port is None or not sites.policy.force_https:
            return None  # (the common case: no app redirects, no per-request work)
        raw = next((v for n, v in headers if n.lower() == b"host"), b"")
        host = normalize_host(raw.decode("latin-1"))
        if host is None or not sites.force_https(host):
            return None
        shown = f"[{host}]" if ":" in host else host
        path = target.decode("latin-1") if target.startswith(b"/") else "/"
        location = f"https://{shown}{port}{path}"
        return errors.ProxyError(
            301,
            "force_https",
            f"use {location}",
            origin="edge",
            close=True,
            headers=((b"Location", location.encode("latin-1")),),
        )

    return intercept
