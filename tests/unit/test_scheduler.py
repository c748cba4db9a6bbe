"""Placement: which instances a deploy or scale creates and destroys (pure, no catalog)."""

from __future__ import annotations

import itertools

import msgspec

from roost.api.scheduler import plan_instances
from roost.catalog.records import App, Instance, Node
from roost.config.model import AppConfig

NODE = Node(id="n1", region="local", hostname="h", incarnation="i", started_at=0.0)


def app(counts: dict[str, int], version: int = 1, groups=("app",)) -> App:
    config = AppConfig(app="web", processes=tuple((g, ("run",)) for g in groups))
    return App(name="web", config=config, counts=counts, version=version)


def ids():
    counter = itertools.count()
    return lambda: f"i{next(counter)}"


def inst(iid: str, group: str = "app", version: int = 1, created: float = 0.0, **kw) -> Instance:
    return Instance(
        id=iid,
        app="web",
        node="n1",
        region="local",
        process_group=group,
        app_version=version,
        created_at=created,
        **kw,
    )


def test_creates_count_per_group():
    """A fresh deploy creates `count` instances for each process group."""
    plan = plan_instances(
        app({"app": 2, "worker": 1}, groups=("app", "worker")), [], [NODE], ids(), 5.0
    )
    assert sorted(i.process_group for i in plan.create) == ["app", "app", "worker"]
    assert all(i.node == "n1" and i.app_version == 1 and i.created_at == 5.0 for i in plan.create)
    assert plan.destroy == ()


def test_scale_down_destroys_newest_first():
    """Scaling down destroys the most recently created instances."""
    existing = [inst("a", created=1), inst("b", created=2), inst("c", created=3)]
    plan = plan_instances(app({"app": 1}), existing, [NODE], ids(), 9.0)
    assert plan.create == ()
    assert plan.destroy == ("c", "b")


def test_new_version_replaces_old_instances():
    """Instances of an older app version are replaced by new ones."""
    existing = [inst("a", version=1), inst("b", version=1)]
    plan = plan_instances(app({"app": 2}, version=2), existing, [NODE], ids(), 0.0)
    assert set(plan.destroy) == {"a", "b"}
    assert [i.app_version for i in plan.create] == [2, 2]


def test_destroyed_instances_do_not_count():
    """An instance already being destroyed is replaced, not counted as live."""
    existing = [inst("a", desired="destroyed"), inst("b")]
    plan = plan_instances(app({"app": 2}), existing, [NODE], ids(), 0.0)
    assert len(plan.create) == 1 and plan.destroy == ()


def test_removed_process_group_is_destroyed():
    """Instances of a process group no longer in the config are destroyed."""
    existing = [inst("a", group="old")]
    plan = plan_instances(app({"app": 1}), existing, [NODE], ids(), 0.0)
    assert plan.destroy == ("a",) and len(plan.create) == 1


def test_prefers_primary_region_then_least_loaded():
    """New instances go to the primary region's least-loaded node."""
    far = Node(id="n0", region="syd", hostname="h", incarnation="i", started_at=0.0)
    near2 = msgspec.structs.replace(NODE, id="n2")
    a = app({"app": 3})
    plan = plan_instances(a, [inst("x")], [far, NODE, near2], ids(), 0.0)
    assert sorted(i.node for i in plan.create) == ["n1", "n2"]


def test_no_nodes_creates_nothing():
    """Without nodes nothing is placed (the caller reports it)."""
    assert plan_instances(app({"app": 2}), [], [], ids(), 0.0).create == ()
