"""Edge policy from app configs (force_https, self-signed, passthrough) and cert hostnames."""

from __future__ import annotations

from roost.catalog import records as r
from roost.config.model import AppConfig, Service, ServicePort
from roost.proxy import errors
from roost.proxy.routes import Backend, RouteHolder, RouteTable
from roost.proxy.tls.certroutes import CertRoutes, with_cert_hostnames
from roost.proxy.tls.challenges import Http01Responder
from roost.proxy.tls.sites import SitePolicy, Sites, plain_http_intercept


def _app(name: str, *services: Service) -> r.App:
    return r.App(name=name, config=AppConfig(app=name, services=services), counts={})


class View:
    def __init__(self, apps: dict[str, r.App]) -> None:
        self.apps = apps
        self.instances: dict[str, r.Instance] = {}


APPS = {
    "web": _app("web", Service(name="http_service", force_https=True)),
    "self": _app("self", Service(name="http_service", default_self_signed=True)),
    "raw": _app("raw", Service(name="services.0", internal_port=9, ports=(ServicePort(port=443),))),
    "db": _app("db", Service(name="services.0", ports=(ServicePort(port=5432),))),
}


def test_policy_reads_force_https_self_signed_and_passthrough() -> None:
    """Each flag lands on its app; only a no-handler port 443 means passthrough."""
    policy = SitePolicy.build(APPS)
    assert policy.force_https == {"web"} and policy.self_signed == {"self"}
    assert policy.passthrough == {"raw": 9}


def _sites() -> Sites:
    table = RouteTable.build([(n, [f"{n}.test"]) for n in APPS], {})
    return Sites(RouteHolder(table), View(APPS))


def test_force_https_redirect_keeps_path_and_names_the_https_port() -> None:
    """A force_https host gets 301 to https with the port; others are routed."""
    intercept = plain_http_intercept(_sites(), None, 8443)
    assert intercept is not None
    answer = intercept(b"GET", b"/x?y=1", [(b"Host", b"web.test:8080")])
    assert isinstance(answer, errors.ProxyError) and answer.status == 301
    assert dict(answer.headers)[b"Location"] == b"https://web.test:8443/x?y=1"
    assert intercept(b"GET", b"/", [(b"Host", b"self.test")]) is None


def test_acme_paths_are_never_redirected() -> None:
    """A challenge path that is ours is answered; one that is not goes to the app."""
    http01 = Http01Responder()
    http01.add("t", "t.k")
    intercept = plain_http_intercept(_sites(), http01, 443)
    assert intercept is not None
    ours = intercept(b"GET", b"/.well-known/acme-challenge/t", [(b"Host", b"web.test")])
    assert ours is not None and ours.status == 200 and ours.message == "t.k"
    other = intercept(b"GET", b"/.well-known/acme-challenge/u", [(b"Host", b"web.test")])
    assert other is None


def test_certificate_hostnames_route_to_their_app_unless_claimed() -> None:
    """certs add NAME --app web routes NAME to web; an app's own hostname wins."""
    backend = Backend("i", "127.0.0.1", 1)
    table = RouteTable.build([("web", ["own.test"]), ("api", [])], {"web": [backend]})
    merged = with_cert_hostnames(table, {"new.test": "web", "own.test": "api", "x.test": "gone"})
    route = merged.lookup("new.test")
    assert route is not None and route.app == "web" and route.backends == (backend,)
    own = merged.lookup("own.test")
    assert own is not None and own.app == "web"
    assert merged.lookup("x.test") is None and merged.app("api") is not None


def test_cert_routes_republishes_every_table() -> None:
    """Tables stored by the route watcher reach the edge with certificate names added."""
    edge = RouteHolder()
    holder = CertRoutes(edge)
    holder.set_names({"new.test": "web"})
    holder.table = RouteTable.build([("web", [])], {})
    route = edge.table.lookup("new.test")
    assert route is not None and route.app == "web"
    assert holder.table.lookup("new.test") is None  # the watcher's own view is unchanged
