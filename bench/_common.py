"""Shared plumbing for the benchmarks: processes, pinning, CPU accounting, tool output.

Everything here binds 127.0.0.1 only and every process started through :class:`Procs` is
killed (its whole process group, then any descendant that escaped it) when the ``with``
block ends -- normally, on an exception, on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
ROOST = ROOT / ".venv" / "bin" / "roost"
HOST = "127.0.0.1"

PROXY_CPU = "0"  # the proxy under test
LOAD_CPU = "1"  # load generator and backend


# ---------------------------------------------------------------- processes


def install_sigterm() -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks clean up
    (SIGINT too: a shell without job control starts background jobs with it ignored)."""

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)


def descendants(pid: int) -> list[int]:
    """``pid``'s descendants (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        """This process and its descendants (for CPU accounting)."""
        return [self.pid, *descendants(self.pid)]

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Procs:
    """Starts processes in their own sessions and always stops them (context manager)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cpus: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Start ``argv`` (pinned to ``cpus`` with taskset), output to ``<workdir>/<name>.log``."""
        args = [str(a) for a in argv]
        if cpus is not None and shutil.which("taskset"):
            args = ["taskset", "-c", cpus, *args]
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group, wait, then SIGKILL the group and any stray descendant.

        ``proc`` stays on the list until it is gone, so if this is interrupted, :meth:`close`
        still stops it."""
        family = descendants(proc.pid)
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # setsid'd grandchildren (e.g. Roost instances) are not in the group
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in family:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        """Stop everything still running; a second Ctrl-C cannot interrupt the cleanup."""
        with _signals_ignored():
            for proc in reversed(list(self.procs)):
                with contextlib.suppress(Exception):
                    self.stop(proc)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM/SIGHUP for a while (main thread only; elsewhere a no-op)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    try:
        saved = [signal.signal(sig, signal.SIG_IGN) for sig in sigs]
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in zip(sigs, saved, strict=True):
            signal.signal(sig, handler)


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary directory for configs and logs (removed afterwards unless ``keep``)."""
    path = Path(tempfile.mkdtemp(prefix=f"roost-bench-{prefix}-"))
    path.chmod(0o755)  # nginx workers run as nobody and read nothing here but may need to
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: Proc | None = None, timeout: float = 20.0) -> None:
    """Until something accepts on ``127.0.0.1:port``; raises with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    tail = proc.tail() if proc else ""
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout}s\n{tail}")


def http_get(port: int, path: str = "/", host: str = "localhost", timeout: float = 5.0) -> int:
    """One HTTP/1.1 GET; the status code (0 on a connection failure)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 0
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def wait_http(
    port: int, path: str = "/", host: str = "localhost", timeout: float = 30.0, want: int = 200
) -> None:
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        status = http_get(port, path, host)
        if status == want:
            return
        time.sleep(0.1)
    raise RuntimeError(f"GET {host}{path} on :{port} never answered {want} (last: {status})")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


# ---------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User+system CPU of these processes (all their threads), in seconds.

    Uses ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds) where available, else
    utime+stime from ``/proc/<pid>/stat`` (clock ticks).
    """
    total = 0.0
    for pid in pids:
        ns = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
            total += ns / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


class CpuMeter:
    """CPU used by a fixed set of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self._t0 = 0.0
        self.seconds = 0.0

    def start(self) -> None:
        self._t0 = cpu_seconds(self.pids)

    def stop(self) -> float:
        self.seconds = cpu_seconds(self.pids) - self._t0
        return self.seconds


# ---------------------------------------------------------------- tool output

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class LoadResult:
    """What one load run measured."""

    tool: str
    rps: float = 0.0
    requests: int = 0
    ok: int = 0  # 2xx/3xx
    non2xx: int = 0
    errors: int = 0  # socket errors, timeouts
    p50: float | None = None  # ms
    p99: float | None = None  # ms
    duration: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    note: str = ""
    raw: str = ""


def run_wrk(
    port: int,
    host: str,
    *,
    connections: int = 50,
    duration: int = 10,
    path: str = "/",
    cpus: str = LOAD_CPU,
    nice: int = 0,
) -> LoadResult:
    """``wrk -t1 -c<connections> -d<duration>s --latency`` (keep-alive), pinned."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "--latency",
        "-H",
        f"Host: {host}",
        f"http://{HOST}:{port}{path}",
    ]
    out = _run(_prefix(cpus, nice) + argv, timeout=duration + 30)
    res = LoadResult("wrk", raw=out)
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res.rps = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", out):
        res.requests = int(m.group(1))
        res.duration = _ms(m.group(2)) / 1000
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        res.non2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        res.errors = sum(int(g) for g in m.groups())
    res.ok = res.requests - res.non2xx
    for pct, attr in (("50", "p50"), ("99", "p99")):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M):
            setattr(res, attr, _ms(m.group(1)))
    return res


def run_h2load(
    port: int,
    host: str,
    *,
    clients: int = 10,
    streams: int = 10,
    duration: int = 10,
    path: str = "/",
    cpus: str = LOAD_CPU,
    logdir: Path | None = None,
) -> LoadResult:
    """``h2load -c<clients> -m<streams> -D<duration>`` over h2c (prior knowledge), pinned.

    p50/p99 come from h2load's per-request log (``--log-file``).
    """
    log = (logdir or Path(tempfile.gettempdir())) / f"h2load-{os.getpid()}-{port}.log"
    argv = [
        "h2load",
        "-t1",
        f"-c{clients}",
        f"-m{streams}",
        f"-D{duration}",
        "-T5",
        "-H",
        f":authority: {host}",
        f"--log-file={log}",
        f"http://{HOST}:{port}{path}",
    ]
    try:
        out = _run(["taskset", "-c", cpus, *argv], timeout=duration + 30)
        res = LoadResult("h2load", raw=out)
        if m := re.search(r"finished in ([\d.]+\w+), ([\d.]+) req/s", out):
            res.duration = _ms(m.group(1)) / 1000
            res.rps = float(m.group(2))
        if m := re.search(r"requests: (\d+) total, \d+ started, (\d+) done", out):
            res.requests = int(m.group(2))
        if m := re.search(r"(\d+) errored, (\d+) timeout", out):
            res.errors = int(m.group(1)) + int(m.group(2))
        if m := re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out):
            res.ok = int(m.group(1)) + int(m.group(2))
            res.non2xx = int(m.group(3)) + int(m.group(4))
        durations: list[float] = []
        with contextlib.suppress(OSError), open(log) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1] == "200":
                    durations.append(int(parts[2]) / 1000)
        if durations:
            res.p50 = percentile(durations, 50)
            res.p99 = percentile(durations, 99)
        return res
    finally:
        with contextlib.suppress(OSError):
            log.unlink()


def run_hey(
    port: int,
    host: str,
    *,
    rate: int,
    duration: int = 10,
    workers: int = 50,
    path: str = "/",
    cpus: str = LOAD_CPU,
    nice: int = 0,
) -> LoadResult:
    """``hey -z<duration>s -c<workers> -q<rate/workers>``: keep-alive, paced per worker.

    hey's ``-q`` is each worker's own rate cap (a worker waits for its response before the
    next tick), so this is paced closed-loop load: the achieved rate is reported.
    """
    per_worker = max(1, round(rate / workers))
    argv = [
        "hey",
        "-z",
        f"{duration}s",
        "-c",
        str(workers),
        "-q",
        str(per_worker),
        "-t",
        "5",
        "-host",
        host,
        "-disable-compression",
        f"http://{HOST}:{port}{path}",
    ]
    env = {**os.environ, "GOMAXPROCS": "1"}
    out = _run(_prefix(cpus, nice) + argv, timeout=duration + 30, env=env)
    res = LoadResult("hey", raw=out)
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res.rps = float(m.group(1))
    if m := re.search(r"Total:\s+([\d.]+) secs", out):
        res.duration = float(m.group(1))
    for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out):
        res.statuses[int(code)] = int(count)
    res.requests = sum(res.statuses.values())
    res.ok = sum(n for c, n in res.statuses.items() if c < 400)
    res.non2xx = res.requests - res.ok
    if m := re.search(r"Error distribution:\n((?:\s+\[\d+\].*\n?)+)", out):
        res.errors = sum(int(n) for n in re.findall(r"\[(\d+)\]", m.group(1)))
    for pct, attr in (("50", "p50"), ("99", "p99")):
        if m := re.search(rf"^\s+{pct}%+ in ([\d.]+) secs", out, re.M):
            setattr(res, attr, float(m.group(1)) * 1000)
    return res


def _prefix(cpus: str, nice: int) -> list[str]:
    """``taskset -c cpus`` (and ``nice -n`` when ``nice``) before a load tool."""
    return ["taskset", "-c", cpus, *(["nice", "-n", str(nice)] if nice else [])]


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a load tool in its own session (killed on timeout or Ctrl-C); its output."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return out.decode(errors="replace")


# ---------------------------------------------------------------- numbers and tables


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (need not be sorted)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and v == v]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None or value != value else f"{value:{spec}}{suffix}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(o.rstrip() for o in out)


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def machine_note() -> str:
    """One line about the machine: cores, load average, time."""
    load = os.getloadavg()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs, "
        f"loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, python {sys.version.split()[0]}"
    )


def busy_note(threshold: float = 0.5) -> str | None:
    """A warning if other processes are using CPU right now (noisy numbers)."""
    before = _cpu_totals()
    time.sleep(1.0)
    after = _cpu_totals()
    busy = (after[0] - before[0]) / max(1, after[1] - before[1]) * (os.cpu_count() or 1)
    if busy > threshold:
        return f"warning: {busy:.2f} CPUs busy before the run (others are using the machine)"
    return None


def _cpu_totals() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def write_results_json(path: Path, results: dict[str, list[dict[str, Any]]]) -> None:
    """Raw numbers of every round, per scenario (``--json FILE``); tool output left out."""
    path.write_text(
        json.dumps(
            {
                name: [
                    {
                        k: (v.__dict__ | {"raw": ""}) if isinstance(v, LoadResult) else v
                        for k, v in r.items()
                    }
                    for r in rounds
                ]
                for name, rounds in results.items()
            },
            indent=1,
        )
    )


# ---------------------------------------------------------------- in-process harnesses


CLIENT_EXTRA = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}


class FakeTransport:
    """An asyncio transport for the in-process cost harnesses (``*_path_cost.py``,
    ``h2_backhaul_cost.py``): writes are collected in ``out``, reading controls do nothing,
    ``extra`` answers ``get_extra_info`` (e.g. :data:`CLIENT_EXTRA` for a client connection)."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.out: list[bytes] = []
        self.extra = extra or {}

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def cost_harness_args(description: str) -> argparse.ArgumentParser:
    """The options of the h2 cost harnesses (``h2_path_cost.py``, ``h2_backhaul_cost.py``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--streams", type=int, default=10, help="concurrent streams per batch")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batches", type=int, default=200, help="batches per round")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    return parser


def print_rounds(what: str, args: argparse.Namespace, rounds: list[float]) -> None:
    """One line: the best and median round of a cost harness, µs per request."""
    print(
        f"{what}, {args.streams} streams/batch, {args.rounds} rounds x "
        f"{args.batches} batches: best {min(rounds):.1f} µs/request, "
        f"median {statistics.median(rounds):.1f} µs/request"
    )
