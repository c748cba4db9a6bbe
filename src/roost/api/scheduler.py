"""Placement (pure): which instances to create and which to destroy for an app.

Input: the app record (config, version, desired count per process group), its instances, the
nodes, an id generator and the time. Output: a ``Plan``. No I/O, no clock, no randomness of its
own, so it is tested without a catalog and reused as-is when nodes become many.

Rules: instances of an older app version, or of a process group no longer configured, are
replaced; each group gets exactly its count of live instances (desired != destroyed); new
instances go to the node with the fewest live instances, preferring the app's primary region.
Extra instances are destroyed newest first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from roost.catalog.records import App, Instance, Node


@dataclass(frozen=True, slots=True)
class Plan:
    create: tuple[Instance, ...]
    destroy: tuple[str, ...]  # instance ids


def plan_instances(
    app: App,
    instances: Sequence[Instance],
    nodes: Sequence[Node],
    new_id: Callable[[], str],
    now: float,
) -> Plan:
    live = [i for i in instances if i.desired != "destroyed"]
    groups = app.config.process_groups()
    destroy: list[str] = []
    keep: dict[str, list[Instance]] = {g: [] for g in groups}
    for inst in live:
        if inst.process_group in keep and inst.app_version == app.version:
            keep[inst.process_group].append(inst)
        else:
            destroy.append(inst.id)
    load = {n.id: 0 for n in nodes}
    for inst in live:
        if inst.id not in destroy and inst.node in load:
            load[inst.node] += 1
    create: list[Instance] = []
    for group in groups:
        want = app.counts.get(group, 0)
        have = sorted(keep[group], key=lambda i: (i.created_at, i.id))
        for extra in have[want:][::-1]:
            destroy.append(extra.id)
        for _ in range(want - len(have)):
            node = _pick_node(nodes, load, app.config.primary_region)
            if node is None:
                break
            load[node.id] += 1
            create.append(
                Instance(
                    id=new_id(),
                    app=app.name,
                    node=node.id,
                    region=node.region,
                    process_group=group,
                    app_version=app.version,
                    created_at=now,
                    updated_at=now,
                )
            )
    return Plan(create=tuple(create), destroy=tuple(destroy))


def _pick_node(nodes: Sequence[Node], load: dict[str, int], region: str) -> Node | None:
    if not nodes:
        return None
    return min(nodes, key=lambda n: (n.region != region, load.get(n.id, 0), n.id))
