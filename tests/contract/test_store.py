"""The ``Store`` contract (see ``roost.catalog.store``), run against every backend."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.catalog import Compacted, CompareFailed, LeaseNotFound, Store, WatchEvent

if TYPE_CHECKING:
    from tests.contract.conftest import Backend, StoreFactory

TIMEOUT = 5.0


async def take(events: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    """The next ``n`` events, failing if they do not arrive within ``TIMEOUT``."""
    async with asyncio.timeout(TIMEOUT):
        return [await anext(events) for _ in range(n)]


async def eventually(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` until it holds, failing after ``TIMEOUT``."""
    async with asyncio.timeout(TIMEOUT):
        while not await condition():
            await asyncio.sleep(0.01)


def changes(events: list[WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(e.type, e.key, e.value) for e in events]


# -- get / put / delete ----------------------------------------------------------------------
async def test_get_missing_key_returns_none(store: Store) -> None:
    """A key never written reads as None."""
    assert await store.get("nope") is None


async def test_put_creates_entry_with_revisions(store: Store) -> None:
    """A first put returns the new revision, which is the key's create and mod revision."""
    rev = await store.put("k", b"v")
    entry = await store.get("k")
    assert rev >= 1
    assert entry is not None
    assert (entry.key, entry.value, entry.version, entry.lease) == ("k", b"v", 1, 0)
    assert entry.create_revision == entry.mod_revision == rev


async def test_overwrite_bumps_version_and_mod_revision(store: Store) -> None:
    """Overwriting keeps create_revision, moves mod_revision, and counts the version."""
    first = await store.put("k", b"1")
    second = await store.put("k", b"2")
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.version) == (b"2", 2)
    assert (entry.create_revision, entry.mod_revision) == (first, second)


async def test_revision_increases_store_wide(store: Store) -> None:
    """Writes to different keys get strictly increasing store revisions."""
    revs = [await store.put(f"k{i % 3}", b"x") for i in range(10)]
    revs.append(await store.put("other", b"y"))
    assert revs == sorted(set(revs))
    _, current = await store.range("")
    assert current == revs[-1]


async def test_delete_existing_key(store: Store) -> None:
    """Deleting an existing key returns True, bumps the revision and removes it."""
    rev = await store.put("k", b"v")
    assert await store.delete("k") is True
    assert await store.get("k") is None
    assert (await store.range(""))[1] > rev


async def test_delete_missing_key_returns_false_without_bump(store: Store) -> None:
    """Deleting a missing key returns False and leaves the revision alone."""
    rev = await store.put("k", b"v")
    assert await store.delete("missing") is False
    assert (await store.range(""))[1] == rev


async def test_recreate_after_delete_starts_fresh(store: Store) -> None:
    """A key put after its deletion has version 1 and a new create_revision."""
    await store.put("k", b"1")
    await store.put("k", b"2")
    await store.delete("k")
    rev = await store.put("k", b"3")
    entry = await store.get("k")
    assert entry is not None
    assert (entry.version, entry.create_revision, entry.value) == (1, rev, b"3")


# -- compare-and-set -------------------------------------------------------------------------
async def test_cas_put_succeeds_on_current_mod_revision(store: Store) -> None:
    """put(prev_revision=mod_revision) writes."""
    rev = await store.put("k", b"1")
    new = await store.put("k", b"2", prev_revision=rev)
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.mod_revision) == (b"2", new)


async def test_cas_put_fails_on_stale_revision_and_writes_nothing(store: Store) -> None:
    """A stale prev_revision raises CompareFailed and changes nothing."""
    first = await store.put("k", b"1")
    second = await store.put("k", b"2")
    with pytest.raises(CompareFailed) as info:
        await store.put("k", b"3", prev_revision=first)
    assert (info.value.key, info.value.expected, info.value.actual) == ("k", first, second)
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.mod_revision) == (b"2", second)
    assert (await store.range(""))[1] == second


async def test_create_only_put_succeeds_when_missing(store: Store) -> None:
    """prev_revision=0 creates a missing key."""
    rev = await store.put("k", b"v", prev_revision=0)
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.create_revision) == (b"v", rev)


async def test_create_only_put_fails_when_present(store: Store) -> None:
    """prev_revision=0 on an existing key raises CompareFailed and keeps the old value."""
    rev = await store.put("k", b"old")
    with pytest.raises(CompareFailed) as info:
        await store.put("k", b"new", prev_revision=0)
    assert info.value.actual == rev
    entry = await store.get("k")
    assert entry is not None
    assert entry.value == b"old"


async def test_cas_put_on_missing_key_with_revision_fails(store: Store) -> None:
    """A nonzero prev_revision on a missing key fails with actual 0 and creates nothing."""
    rev = await store.put("other", b"x")
    with pytest.raises(CompareFailed) as info:
        await store.put("k", b"v", prev_revision=rev)
    assert info.value.actual == 0
    assert await store.get("k") is None


async def test_cas_delete_succeeds_on_current_mod_revision(store: Store) -> None:
    """delete(prev_revision=mod_revision) deletes."""
    rev = await store.put("k", b"v")
    assert await store.delete("k", prev_revision=rev) is True
    assert await store.get("k") is None


async def test_cas_delete_fails_on_stale_revision_and_keeps_key(store: Store) -> None:
    """A stale prev_revision on delete raises CompareFailed and keeps the key."""
    first = await store.put("k", b"1")
    second = await store.put("k", b"2")
    with pytest.raises(CompareFailed):
        await store.delete("k", prev_revision=first)
    entry = await store.get("k")
    assert entry is not None
    assert entry.mod_revision == second
    assert (await store.range(""))[1] == second


# -- range -----------------------------------------------------------------------------------
async def test_range_returns_prefix_sorted_by_key(store: Store) -> None:
    """range(prefix) returns only keys under the prefix, sorted by key."""
    for key in ["apps/c", "apps/a", "nodes/x", "apps/b", "app"]:
        await store.put(key, key.encode())
    entries, _ = await store.range("apps/")
    assert [e.key for e in entries] == ["apps/a", "apps/b", "apps/c"]
    assert [e.value for e in entries] == [b"apps/a", b"apps/b", b"apps/c"]


async def test_range_prefix_is_exact(store: Store) -> None:
    """range("apps/a/") excludes "apps/ab/..." and "apps/a" itself."""
    for key in ["apps/a", "apps/a/1", "apps/a/2", "apps/ab/1", "apps/a0"]:
        await store.put(key, b"")
    entries, _ = await store.range("apps/a/")
    assert [e.key for e in entries] == ["apps/a/1", "apps/a/2"]


async def test_range_treats_percent_and_underscore_literally(store: Store) -> None:
    """'%' and '_' in a prefix match only themselves."""
    for key in ["a%1", "a%2", "ab", "a_1", "aX1", "a"]:
        await store.put(key, b"")
    assert [e.key for e in (await store.range("a%"))[0]] == ["a%1", "a%2"]
    assert [e.key for e in (await store.range("a_"))[0]] == ["a_1"]


async def test_range_handles_non_ascii_prefix(store: Store) -> None:
    """Prefixes and keys outside ASCII range correctly, in code point order."""
    keys = ["é", "é/1", "éa", "ê", "z", "\U0010ffff", "\U0010ffffx", "\ud7ff1", "\ue000"]
    for key in keys:
        await store.put(key, b"")
    assert [e.key for e in (await store.range("é"))[0]] == ["é", "é/1", "éa"]
    assert [e.key for e in (await store.range("\U0010ffff"))[0]] == ["\U0010ffff", "\U0010ffffx"]
    assert [e.key for e in (await store.range("\ud7ff"))[0]] == ["\ud7ff1"]
    assert [e.key for e in (await store.range(""))[0]] == sorted(keys)


async def test_range_empty_prefix_returns_everything(store: Store) -> None:
    """range("") returns all keys and the revision of the latest write."""
    await store.put("b", b"")
    rev = await store.put("a", b"")
    entries, current = await store.range("")
    assert [e.key for e in entries] == ["a", "b"]
    assert current == rev


# -- watch -----------------------------------------------------------------------------------
async def test_watch_replays_history_then_continues_live(store: Store) -> None:
    """Watching from a past revision yields the history in order, then new changes."""
    first = await store.put("k/1", b"a")
    await store.put("k/2", b"b")
    await store.delete("k/1")
    events = store.watch("k/", first)
    history = await take(events, 3)
    assert changes(history) == [("put", "k/1", b"a"), ("put", "k/2", b"b"), ("delete", "k/1", b"")]
    rev = await store.put("k/3", b"c")
    [live] = await take(events, 1)
    assert (live.type, live.key, live.value, live.revision) == ("put", "k/3", b"c", rev)


async def test_watch_event_revisions_match_writes(store: Store) -> None:
    """Each event carries the revision its write returned."""
    revs = [await store.put("k", bytes([i])) for i in range(3)]
    events = await take(store.watch("k", revs[0]), 3)
    assert [e.revision for e in events] == revs


async def test_watch_from_next_revision_sees_only_new_changes(store: Store) -> None:
    """Watching from current revision + 1 skips the past."""
    await store.put("k", b"old")
    _, rev = await store.range("")
    events = store.watch("k", rev + 1)
    await store.put("k", b"new")
    assert changes(await take(events, 1)) == [("put", "k", b"new")]


async def test_watch_ignores_keys_outside_prefix(store: Store) -> None:
    """A prefix watch never yields other keys."""
    _, rev = await store.range("")
    events = store.watch("apps/a/", rev + 1)
    for key in ["apps/ab/1", "apps/a/1", "apps/a", "nodes/1", "apps/a/2", "apps/b/1", "apps/a/3"]:
        await store.put(key, b"")
    assert [e.key for e in await take(events, 3)] == ["apps/a/1", "apps/a/2", "apps/a/3"]


async def test_watch_under_concurrent_writers_is_ordered_and_complete(store: Store) -> None:
    """With many concurrent writers, a watcher sees every change once, in revision order."""
    _, rev = await store.range("")
    events = store.watch("w/", rev + 1)
    writers, puts = 10, 50

    async def writer(n: int) -> None:
        for i in range(puts):
            await store.put(f"w/{n}", str(i).encode())
            await asyncio.sleep(0)

    watched, _ = await asyncio.gather(
        take(events, writers * puts), asyncio.gather(*(writer(n) for n in range(writers)))
    )
    revisions = [e.revision for e in watched]
    assert revisions == sorted(set(revisions))
    for n in range(writers):
        mine = [e.value for e in watched if e.key == f"w/{n}"]
        assert mine == [str(i).encode() for i in range(puts)]


async def test_snapshot_then_watch_has_no_gap(store: Store) -> None:
    """range + watch from its revision + 1 rebuilds the final state while writes go on."""
    for i in range(20):
        await store.put(f"s/{i}", b"0")

    async def churn() -> None:
        for i in range(100):
            await store.put(f"s/{i % 30}", str(i).encode())
            if i % 7 == 0:
                await store.delete(f"s/{(i * 3) % 30}")
            await asyncio.sleep(0)

    churning = asyncio.create_task(churn())
    await asyncio.sleep(0)
    entries, rev = await store.range("s/")
    state = {e.key: e.value for e in entries}
    events = store.watch("s/", rev + 1)
    await churning
    final, final_rev = await store.range("s/")
    async with asyncio.timeout(TIMEOUT):
        while rev < final_rev:
            event = await anext(events)
            rev = event.revision
            if event.type == "put":
                state[event.key] = event.value
            else:
                state.pop(event.key, None)
    assert state == {e.key: e.value for e in final}


async def test_two_watchers_each_see_every_change(store: Store) -> None:
    """Watchers are independent: each gets the full stream."""
    _, rev = await store.range("")
    one, two = store.watch("", rev + 1), store.watch("", rev + 1)
    for i in range(5):
        await store.put(f"k{i}", b"")
    assert changes(await take(one, 5)) == changes(await take(two, 5))


async def test_watch_from_compacted_revision_raises(open_store: StoreFactory) -> None:
    """Watching from before the kept history raises Compacted with the oldest kept revision."""
    store = await open_store(history=5)
    first = await store.put("k", b"0")
    for i in range(20):
        await store.put("k", str(i).encode())
    with pytest.raises(Compacted) as info:
        await anext(store.watch("k", first))
    assert info.value.requested == first
    assert first < info.value.oldest
    events = await take(store.watch("k", info.value.oldest), 1)
    assert events[0].revision == info.value.oldest


async def test_close_ends_active_watch(open_store: StoreFactory) -> None:
    """Closing the store ends a watch that is waiting for events."""
    store = await open_store()
    _, rev = await store.range("")
    events = store.watch("", rev + 1)
    waiting = asyncio.create_task(anext(events, None))
    await asyncio.sleep(0)
    await store.close()
    async with asyncio.timeout(TIMEOUT):
        assert await waiting is None


# -- leases ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
async def test_grant_rejects_nonpositive_ttl(store: Store, ttl: float) -> None:
    """grant(ttl) needs a positive TTL."""
    with pytest.raises(ValueError):
        await store.grant(ttl)


async def test_put_with_lease_records_it(store: Store) -> None:
    """An entry put with a lease reports that lease."""
    lease = await store.grant(60)
    await store.put("k", b"v", lease=lease)
    entry = await store.get("k")
    assert entry is not None
    assert entry.lease == lease


async def test_put_without_lease_detaches_key(store: Store) -> None:
    """Overwriting a leased key without a lease detaches it; revoke then leaves it alone."""
    lease = await store.grant(60)
    await store.put("k", b"1", lease=lease)
    await store.put("k", b"2")
    await store.revoke(lease)
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.lease) == (b"2", 0)


async def test_put_with_unknown_lease_raises_and_writes_nothing(store: Store) -> None:
    """put(lease=unknown) raises LeaseNotFound and writes nothing."""
    rev = await store.put("other", b"")
    with pytest.raises(LeaseNotFound):
        await store.put("k", b"v", lease=987654321)
    assert await store.get("k") is None
    assert (await store.range(""))[1] == rev


async def test_lease_expiry_deletes_keys_with_delete_events(store: Store, backend: Backend) -> None:
    """When a lease expires its keys are deleted and watchers see delete events."""
    lease = await store.grant(backend.short_ttl)
    await store.put("l/a", b"1", lease=lease)
    await store.put("l/b", b"2", lease=lease)
    await store.put("l/keep", b"3")
    _, rev = await store.range("")
    events = await take(store.watch("l/", rev + 1), 2)
    assert sorted(changes(events)) == [("delete", "l/a", b""), ("delete", "l/b", b"")]
    assert [e.key for e in (await store.range("l/"))[0]] == ["l/keep"]
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease)


async def test_keepalive_extends_lease(store: Store, backend: Backend) -> None:
    """Keepalives sent within the TTL keep the lease (and its keys) past the first deadline."""
    ttl = backend.short_ttl * 2
    lease = await store.grant(ttl)
    await store.put("k", b"v", lease=lease)
    loop = asyncio.get_running_loop()
    until = loop.time() + ttl * 2
    while loop.time() < until:
        await asyncio.sleep(ttl / 4)  # the passage of time is what is under test here
        await store.keepalive(lease)
    assert await store.get("k") is not None

    async def gone() -> bool:
        return await store.get("k") is None

    await eventually(gone)


async def test_keepalive_unknown_lease_raises(store: Store) -> None:
    """keepalive on a lease never granted raises LeaseNotFound."""
    with pytest.raises(LeaseNotFound):
        await store.keepalive(987654321)


async def test_revoke_deletes_attached_keys(store: Store) -> None:
    """revoke deletes the lease's keys as delete events and ends the lease."""
    lease = await store.grant(60)
    await store.put("r/a", b"", lease=lease)
    await store.put("r/b", b"")
    _, rev = await store.range("")
    events = store.watch("r/", rev + 1)
    await store.revoke(lease)
    assert changes(await take(events, 1)) == [("delete", "r/a", b"")]
    assert [e.key for e in (await store.range("r/"))[0]] == ["r/b"]
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease)


async def test_revoke_unknown_lease_raises(store: Store) -> None:
    """revoke on a lease never granted raises LeaseNotFound."""
    with pytest.raises(LeaseNotFound):
        await store.revoke(987654321)


# -- model check -----------------------------------------------------------------------------
_keys = st.sampled_from(["a", "ab", "a%", "a_", "b/x", "é"])
_cas = st.one_of(st.none(), st.just("current"), st.just(0), st.integers(1, 60))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _keys, _cas, st.binary(max_size=4)),
        st.tuples(st.just("delete"), _keys, _cas, st.just(b"")),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_ops)
def test_random_operations_match_dict_model(
    backend: Backend, ops: list[tuple[str, str, int | str | None, bytes]]
) -> None:
    """Random put/delete/CAS sequences behave like a dict, and the watch log replays them."""

    async def run(directory: Path) -> None:
        store = await backend.open(directory)
        try:
            model: dict[str, tuple[bytes, int, int, int]] = {}  # value, create, mod, version
            revision, mutations = 0, 0
            for op, key, cas, value in ops:
                actual = model[key][2] if key in model else 0
                prev = actual if cas == "current" else cas
                if prev is not None and prev != actual:
                    with pytest.raises(CompareFailed):
                        if op == "put":
                            await store.put(key, value, prev_revision=prev)
                        else:
                            await store.delete(key, prev_revision=prev)
                elif op == "put":
                    new = await store.put(key, value, prev_revision=prev)
                    assert new > revision
                    revision, mutations = new, mutations + 1
                    _, create, _, version = model.get(key, (b"", new, 0, 0))
                    model[key] = (value, create, new, version + 1)
                else:
                    assert await store.delete(key, prev_revision=prev) is (key in model)
                    mutations += key in model
                    model.pop(key, None)
            entries, current = await store.range("")
            assert current >= revision
            got = {e.key: (e.value, e.create_revision, e.mod_revision, e.version) for e in entries}
            assert got == model
            replayed: dict[str, bytes] = {}
            for event in await take(store.watch("", 1), mutations):
                if event.type == "put":
                    replayed[event.key] = event.value
                else:
                    del replayed[event.key]
            assert replayed == {key: value for key, (value, *_) in model.items()}
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(Path(directory)))
