"""The routing table: Host header -> app, as an immutable snapshot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.proxy.routes import AppRoute, Backend, RouteHolder, RouteTable, normalize_host

B1 = Backend("i-1", "10.0.0.1", 8080)
B2 = Backend("i-2", "10.0.0.2", 8080, healthy=False)


def table() -> RouteTable:
    return RouteTable.build(
        [("demo", ["Demo.Example.com", "[::1]"]), ("empty", [])],
        {"demo": [B1, B2], "ghost": [B1]},
    )


def test_app_reachable_as_localhost_name() -> None:
    """Every app answers at <app>.localhost."""
    route = table().lookup("demo.localhost")
    assert route == AppRoute("demo", (B1, B2))


@pytest.mark.parametrize(
    "host",
    [
        "demo.example.com",
        "DEMO.EXAMPLE.COM",
        "demo.example.com:443",
        "demo.example.com.",
        "demo.example.com.:80",
        " demo.localhost ",
        "demo.localhost:",
        "[::1]",
        "[::1]:8080",
    ],
)
def test_lookup_normalizes_host(host: str) -> None:
    """Case, port, trailing dot, whitespace and IPv6 brackets do not matter."""
    route = table().lookup(host)
    assert route is not None and route.app == "demo"


@pytest.mark.parametrize(
    "host",
    ["", "other.localhost", "demo.localhost:http", "demo.localhost:123456", "[::1", "a:b:c"],
)
def test_lookup_misses(host: str) -> None:
    """Unknown or malformed hosts route nowhere."""
    assert table().lookup(host) is None


def test_app_without_backends_has_empty_route() -> None:
    """An app with no instances is routed (so the edge can say 503, not 404)."""
    assert table().lookup("empty.localhost") == AppRoute("empty", ())


def test_backends_of_unlisted_apps_ignored() -> None:
    """Backends for apps not in the app list do not create routes."""
    assert table().lookup("ghost.localhost") is None
    assert table().app("ghost") is None
    assert len(table()) == 2


def test_hostname_claimed_twice_is_an_error() -> None:
    """Two apps cannot share a hostname."""
    with pytest.raises(ValueError, match="claimed by apps 'a' and 'b'"):
        RouteTable.build([("a", ["x.com"]), ("b", ["X.com."])], {})


def test_invalid_hostname_is_an_error() -> None:
    """A hostname that could never match a Host header is rejected at build time."""
    with pytest.raises(ValueError, match="invalid hostname"):
        RouteTable.build([("a", ["bad host"])], {})


def test_app_listed_twice_is_an_error() -> None:
    """Each app appears once."""
    with pytest.raises(ValueError, match="listed twice"):
        RouteTable.build([("a", []), ("a", [])], {})


def test_route_backend_by_instance_id() -> None:
    """AppRoute.backend finds an instance by id."""
    route = AppRoute("demo", (B1, B2))
    assert route.backend("i-2") is B2
    assert route.backend("nope") is None


def test_holder_starts_empty_and_swaps() -> None:
    """The holder's table is replaced by plain assignment."""
    holder = RouteHolder()
    assert holder.table.lookup("demo.localhost") is None
    holder.table = table()
    assert holder.table.lookup("demo.localhost") is not None


def test_hostnames_listing() -> None:
    """hostnames lists every normalized name."""
    assert table().hostnames == {"demo.localhost", "demo.example.com", "::1", "empty.localhost"}


def test_normalize_host_examples() -> None:
    """normalize_host validates as well as canonicalizes."""
    assert normalize_host("Demo.LocalHost.:8080") == "demo.localhost"
    assert normalize_host("[::1]:443") == "::1"
    assert normalize_host("a/b") is None
    assert normalize_host("a b") is None
    assert normalize_host("x" * 300) is None


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(
    parts=st.lists(labels, min_size=1, max_size=4),
    port=st.one_of(st.none(), st.integers(0, 65535)),
    upper=st.booleans(),
    dot=st.booleans(),
)
def test_any_spelling_of_a_hostname_finds_its_app(
    parts: list[str], port: int | None, upper: bool, dot: bool
) -> None:
    """Property: any case/port/trailing-dot spelling of a configured name routes to it."""
    name = ".".join(parts)
    t = RouteTable.build([("app", [name])], {"app": [B1]})
    host = name.upper() if upper else name
    host += "." if dot else ""
    host += f":{port}" if port is not None else ""
    route = t.lookup(host)
    assert route is not None and route.app == "app"
