"""The log collector: tails instances' stdout/stderr files into per-app JSONL and subscribers.

Data flow::

    child --append--> <log_dir>/stdout.log, stderr.log     (written by the process driver)
    LogCollector.poll() --LogLine--> <root>/<app>.jsonl (+ .jsonl.1)  --> tail()
                                 \\-> LogSubscription queues (live ``roost logs -f``)

Lines are timestamped once, here, with the wall-clock time the collector read them (stdout
and stderr are separate files: their relative order is as good as the poll interval). A line
ends at ``\\n`` (a ``\\r`` before it is dropped); invalid UTF-8 is replaced. An unterminated
last line waits for its newline, unless it grows past 64 KiB (emitted in pieces, cut on a
UTF-8 boundary) or the instance is unfollowed (emitted as is).

Restarts: each log dir holds ``.collector-offsets.json``, the byte offset (and inode) up to
which each stream is stored in the app's JSONL, saved right after that write: a new collector
continues exactly there. A crash *between* the two writes repeats that one batch
(at-least-once, never loss). A pending partial line is not covered by the offset: it is read
again. A stream whose inode changed or that shrank below the offset is read from its start.

Instance log files fully collected and larger than ``max_file_bytes`` are truncated to zero so
a long-running instance cannot fill the disk; the child's ``O_APPEND`` fd just continues at the
new end. The size is re-checked right before truncating: only bytes written in the microseconds
between that check and the truncate could be lost (logrotate's ``copytruncate`` window).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
MAX_LINE_BYTES = 64 << 10
OFFSETS_FILE = ".collector-offsets.json"
_READ_CHUNK = 1 << 20
_READ_BUDGET = 4 << 20  # per stream per poll, so one chatty instance cannot starve the others


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of an instance's output."""

    ts: float  # wall-clock time the collector read the line
    app: str
    instance_id: str
    stream: str  # "stdout" | "stderr"
    line: str  # without trailing newline; invalid UTF-8 replaced


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LogLine)


def split_lines(data: bytes, *, flush: bool) -> tuple[list[bytes], int]:
    """Split ``data`` into lines; return them and the number of bytes they consumed.

    An unterminated tail of at most ``MAX_LINE_BYTES`` is left unconsumed unless ``flush``.
    """
    lines: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        nl = data.find(b"\n", pos, pos + MAX_LINE_BYTES + 1)
        if nl != -1:
            stop = nl - 1 if nl > pos and data[nl - 1] == 0x0D else nl
            lines.append(data[pos:stop])
            pos = nl + 1
        elif end - pos > MAX_LINE_BYTES:
            cut = limit = pos + MAX_LINE_BYTES
            while cut > limit - 3 and data[cut] & 0xC0 == 0x80:  # keep UTF-8 sequences whole
                cut -= 1
            lines.append(data[pos:cut])
            pos = cut
        else:
            if flush:
                lines.append(data[pos:])
                pos = end
            break
    return lines, pos


class LogSubscription:
    """Async iterator of one app's ``LogLine``s published after subscribing; ``async with`` ok.

    Bounded: a reader that falls behind loses the oldest lines, counted in ``dropped``.
    """

    def __init__(self, app: str, maxsize: int, on_close: Callable[[LogSubscription], None]) -> None:
        self.app = app
        self.dropped = 0
        self._items: deque[LogLine] = deque()
        self._maxsize = maxsize
        self._closed = False
        self._wakeup = asyncio.Event()
        self._on_close = on_close

    def publish(self, line: LogLine) -> None:
        """Queue ``line`` (called by the collector), dropping the oldest one when full."""
        if self._closed:
            return
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(line)
        self._wakeup.set()

    def close(self) -> None:
        """Stop receiving; iteration ends once already queued lines are consumed."""
        if not self._closed:
            self._closed = True
            self._wakeup.set()
            self._on_close(self)

    def __aiter__(self) -> LogSubscription:
        return self

    async def __anext__(self) -> LogLine:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    async def __aenter__(self) -> LogSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(slots=True)
class _Source:
    stream: str
    path: Path
    offset: int = 0  # bytes already written to the app's JSONL
    ino: int | None = None


@dataclass(slots=True)
class _Followed:
    app: str
    instance_id: str
    log_dir: Path
    sources: list[_Source] = field(default_factory=list)
    closing: bool = False


_Read = tuple[_Source, int, int]  # a source, its offset after this read, its inode


class LogCollector:
    """Follow instances' log files; store their lines per app; serve tail and live follow."""

    def __init__(
        self,
        root: Path,
        *,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
        max_file_bytes: int = 8 << 20,
        subscriber_queue: int = 1000,
    ) -> None:
        self.root = root
        self._poll_interval = poll_interval
        self._clock = clock
        self._max_file_bytes = max_file_bytes
        self._subscriber_queue = subscriber_queue
        self._followed: dict[str, _Followed] = {}
        self._subscribers: dict[str, set[LogSubscription]] = {}

    def follow(self, app: str, instance_id: str, log_dir: Path) -> None:
        """Start tailing ``log_dir``'s stdout.log and stderr.log from the persisted offsets."""
        _check_app(app)
        current = self._followed.get(instance_id)
        if current is not None:
            current.closing = False
            return
        saved = _load_offsets(log_dir)
        sources = [_Source(s, log_dir / f"{s}.log", *saved.get(s, (0, None))) for s in STREAMS]
        self._followed[instance_id] = _Followed(app, instance_id, log_dir, sources)

    def unfollow(self, instance_id: str) -> None:
        """Collect what is left (an unterminated last line included), then stop following."""
        followed = self._followed.get(instance_id)
        if followed is not None:
            followed.closing = True
            self._collect([followed])

    def poll(self) -> int:
        """Read new output of every followed instance once; return the number of lines."""
        return self._collect(list(self._followed.values()))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_interval`` until ``stop`` is set; then poll once more.

        Subscriptions are closed when this returns: no more lines will be published.
        """
        try:
            while not stop.is_set():
                self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll_interval)
            self.poll()
        finally:
            for sub in [sub for subs in self._subscribers.values() for sub in subs]:
                sub.close()

    def tail(self, app: str, n: int, *, instance_id: str | None = None) -> list[LogLine]:
        """The last ``n`` stored lines of ``app`` (optionally of one instance), oldest first."""
        _check_app(app)
        out: list[LogLine] = []  # newest first
        current = self.root / f"{app}.jsonl"
        for path in (current, current.with_name(current.name + ".1")):
            for raw in _reverse_lines(path):
                if len(out) >= n:
                    return out[::-1]
                try:
                    rec = _decoder.decode(raw)
                except msgspec.DecodeError:
                    continue  # a torn write after a crash
                if instance_id is None or rec.instance_id == instance_id:
                    out.append(rec)
        return out[::-1]

    def subscribe(self, app: str) -> LogSubscription:
        """Receive ``app``'s lines collected from now on."""
        _check_app(app)
        sub = LogSubscription(app, self._subscriber_queue, self._unsubscribe)
        self._subscribers.setdefault(app, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: LogSubscription) -> None:
        subs = self._subscribers.get(sub.app, set())
        subs.discard(sub)
        if not subs:
            self._subscribers.pop(sub.app, None)

    def _collect(self, followed: Iterable[_Followed]) -> int:
        """Read, store, commit offsets, publish; per app, so one failing write blocks only it."""
        now = self._clock()
        batches: dict[str, list[tuple[_Followed, list[LogLine], list[_Read]]]] = {}
        for f in followed:
            records: list[LogLine] = []
            reads: list[_Read] = []
            for src in f.sources:
                read = _read_source(src, final=f.closing)
                if read is not None:
                    lines, offset, ino = read
                    records.extend(
                        LogLine(now, f.app, f.instance_id, src.stream, b.decode("utf-8", "replace"))
                        for b in lines
                    )
                    reads.append((src, offset, ino))
            batches.setdefault(f.app, []).append((f, records, reads))
        total = 0
        for app, items in batches.items():
            records = [r for _, recs, _ in items for r in recs]
            try:
                self._append(app, records)
            except OSError as exc:
                log.warning("cannot write logs of app %s: %s (will retry)", app, exc)
                continue
            for f, _, reads in items:
                self._commit(f, reads)
            for sub in list(self._subscribers.get(app, ())):
                for rec in records:
                    sub.publish(rec)
            total += len(records)
        return total

    def _append(self, app: str, records: list[LogLine]) -> None:
        """Append ``records`` to ``<root>/<app>.jsonl``, rotating it to ``.jsonl.1`` if big."""
        if not records:
            return
        payload = b"".join(_encoder.encode(r) + b"\n" for r in records)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{app}.jsonl"
        with contextlib.suppress(FileNotFoundError):
            size = path.stat().st_size
            if size and size + len(payload) > self._max_file_bytes:
                os.replace(path, path.with_name(path.name + ".1"))
        with open(path, "ab") as fh:
            fh.write(payload)

    def _commit(self, f: _Followed, reads: list[_Read]) -> None:
        """Advance offsets after a successful store; truncate big, fully read sources."""
        changed = False
        for src, offset, ino in reads:
            if (offset, ino) != (src.offset, src.ino):
                src.offset, src.ino = offset, ino
                changed = True
            if offset > self._max_file_bytes and _truncate_if_unchanged(src.path, offset, ino):
                src.offset = 0
                changed = True
        if changed:
            _save_offsets(f)
        if f.closing:
            self._followed.pop(f.instance_id, None)


def _read_source(src: _Source, *, final: bool) -> tuple[list[bytes], int, int] | None:
    """(lines, offset after them, inode) past ``src``'s offset; all of it if ``final``."""
    out: list[bytes] = []
    try:
        with open(src.path, "rb") as fh:
            st = os.fstat(fh.fileno())
            offset = src.offset
            if (src.ino is not None and st.st_ino != src.ino) or st.st_size < offset:
                offset = 0  # replaced or truncated by someone else: read it from its start
            budget = None if final else _READ_BUDGET
            while budget is None or budget > 0:
                fh.seek(offset)
                data = fh.read(_READ_CHUNK)
                eof = len(data) < _READ_CHUNK
                lines, used = split_lines(data, flush=final and eof)
                out.extend(lines)
                offset += used
                if eof or used == 0:
                    break
                if budget is not None:
                    budget -= used
    except FileNotFoundError:
        return None  # not written yet
    except OSError as exc:
        log.warning("cannot read %s: %s", src.path, exc)
        return None
    return out, offset, st.st_ino


def _check_app(app: str) -> None:
    if not app or "/" in app or app.startswith(".") or "\0" in app:
        raise ValueError(f"invalid app name for a log file: {app!r}")


def _truncate_if_unchanged(path: Path, size: int, ino: int) -> bool:
    """Truncate ``path`` to 0 if it is still exactly ``size`` bytes and the same file."""
    try:
        st = os.stat(path)
        if st.st_ino == ino and st.st_size == size:
            os.truncate(path, 0)
            return True
    except OSError as exc:
        log.warning("cannot truncate %s: %s", path, exc)
    return False


def _load_offsets(log_dir: Path) -> dict[str, tuple[int, int | None]]:
    try:
        raw = json.loads((log_dir / OFFSETS_FILE).read_bytes())
        return {s: (int(raw[s]["offset"]), raw[s].get("ino")) for s in STREAMS if s in raw}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring unreadable %s in %s: %s", OFFSETS_FILE, log_dir, exc)
        return {}


def _save_offsets(f: _Followed) -> None:
    """Atomically replace the offsets file (write a temporary file, then rename)."""
    data = {s.stream: {"offset": s.offset, "ino": s.ino} for s in f.sources}
    path = f.log_dir / OFFSETS_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot save log offsets of %s: %s", f.instance_id, exc)


def _reverse_lines(path: Path, block: int = 64 << 10) -> Generator[bytes, None, None]:
    """Yield the non-empty lines of ``path`` from last to first, reading blocks from the end."""
    try:
        with open(path, "rb") as fh:
            pos = fh.seek(0, os.SEEK_END)
            rest = b""
            while pos > 0:
                step = min(block, pos)
                pos -= step
                fh.seek(pos)
                parts = (fh.read(step) + rest).split(b"\n")
                rest = parts[0]
                for line in reversed(parts[1:]):
                    if line:
                        yield line
            if rest:
                yield rest
    except FileNotFoundError:
        return
