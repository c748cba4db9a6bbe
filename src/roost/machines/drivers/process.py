"""The ``process`` driver: an instance is a child process of the node, in its own session.

Children must outlive the platform so that a restarted platform can *adopt* them:

- each child is a session leader (``start_new_session``), so pgid == pid and signals sent by
  the platform's terminal or process group never reach it; ``stop()`` signals the whole group;
- stdin is ``/dev/null`` and stdout/stderr are **files** (``stdout.log`` / ``stderr.log`` in the
  instance's log dir, opened ``O_APPEND``), never pipes: a pipe would break (SIGPIPE) when the
  platform dies. ``machines.logs.LogCollector`` tails and timestamps those files;
- a handle is ``(pid, start_time)``, the start time being field 22 of ``/proc/<pid>/stat``, so
  a recycled pid is never mistaken for the instance.

Exit notification uses a pidfd registered with the event loop (``loop.add_reader``): no
threads, no polling, no asyncio child watcher. Works on the default loop and on uvloop.

Reaping contract: the driver reaps its own children by itself. ``start()`` arms the pidfd
reader at once, and the loop's callback calls ``waitpid`` as soon as the child exits, whether
or not anyone calls ``wait()``; the status is kept for later ``wait()``/``stop()`` calls. This
needs the event loop that ran ``start()`` to keep running; a driver is used from one loop at a
time (a ``wait()`` from another loop re-arms the reader there). The ``Popen`` objects stay
referenced by the driver until reaped, so ``subprocess``'s own ``_active`` cleanup never
reaps them behind our back; if something else in the process does (``waitpid(-1)``), the
status is unknowable and ``wait()`` returns ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER")
"""Variables copied from the platform's environment under each instance's own env."""

_EXITED_KEPT = 4096  # statuses of reaped children remembered for late wait()/stop() calls
_RECENT_PORTS = 64


class LaunchFailed(Exception):
    """The instance could not be started (missing binary, not executable, bad cwd, ...)."""

    def __init__(self, instance_id: str, reason: str) -> None:
        super().__init__(f"instance {instance_id}: launch failed: {reason}")
        self.instance_id = instance_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What to run for one instance."""

    instance_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]  # the instance's env, merged over BASE_ENV_KEYS from os.environ
    cwd: str | None
    log_dir: Path  # created if missing; the child appends to stdout.log / stderr.log there


@dataclass(frozen=True, slots=True)
class ProcessHandle:
    """A running process, identified robustly: pid plus its start time (clock ticks)."""

    pid: int
    start_time: int


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The two fields of ``/proc/<pid>/stat`` the driver needs."""

    state: str  # R, S, D, Z (zombie), X (dead), ...
    start_time: int  # field 22: clock ticks since boot


def read_proc_stat(pid: int) -> ProcStat | None:
    """Read state and start time of ``pid``; ``None`` if there is no such process.

    ``comm`` (field 2) may contain spaces and parentheses, so fields are split after the
    *last* ``)``: the first field after it is field 3 (state), field 22 is at index 19.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    _, paren, rest = raw.rpartition(b")")
    fields = rest.split()
    if not paren or len(fields) < 20:
        return None
    try:
        return ProcStat(state=fields[0].decode("ascii"), start_time=int(fields[19]))
    except (UnicodeDecodeError, ValueError):
        return None


@dataclass(slots=True, eq=False)
class _Child:
    """One of our own children, not yet reaped."""

    handle: ProcessHandle
    popen: subprocess.Popen[bytes]
    pidfd: int
    loop: asyncio.AbstractEventLoop | None = None
    done: asyncio.Future[int | None] | None = field(default=None)


class ProcessDriver:
    """Start, adopt, watch and stop instances running as plain processes."""

    def __init__(self) -> None:
        self._children: dict[ProcessHandle, _Child] = {}
        self._exited: OrderedDict[ProcessHandle, int | None] = OrderedDict()
        self._recent_ports: deque[int] = deque(maxlen=_RECENT_PORTS)

    # -- ports ------------------------------------------------------------------------------

    def pick_port(self, host: str = "127.0.0.1") -> int:
        """Return a free TCP port on ``host``, not one of the ports this driver handed out last."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        port = 0
        for _ in range(_RECENT_PORTS):
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in self._recent_ports:
                break
        self._recent_ports.append(port)
        return port

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> ProcessHandle:
        """Start ``spec`` as a session leader; raise ``LaunchFailed`` if it cannot be exec'd."""
        loop = asyncio.get_running_loop()
        if not spec.argv:
            raise LaunchFailed(spec.instance_id, "empty argv")
        env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        env.update(spec.env)
        try:
            spec.log_dir.mkdir(parents=True, exist_ok=True)
            with (
                open(spec.log_dir / "stdout.log", "ab") as out,
                open(spec.log_dir / "stderr.log", "ab") as err,
            ):
                popen = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    cwd=spec.cwd,
                    env=env,
                    close_fds=True,
                    start_new_session=True,
                )
        except OSError as exc:
            raise LaunchFailed(spec.instance_id, _describe(exc, spec)) from exc
        # The child is unreaped, so its pid (and /proc entry) cannot go away under us.
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError as exc:
            _kill_and_reap(popen)
            raise LaunchFailed(spec.instance_id, f"pidfd_open: {exc.strerror}") from exc
        stat = read_proc_stat(popen.pid)
        if stat is None:  # pragma: no cover - only if /proc is not mounted
            os.close(pidfd)
            _kill_and_reap(popen)
            raise LaunchFailed(spec.instance_id, f"cannot read /proc/{popen.pid}/stat")
        handle = ProcessHandle(pid=popen.pid, start_time=stat.start_time)
        child = _Child(handle=handle, popen=popen, pidfd=pidfd)
        self._children[handle] = child
        self._arm(child, loop)
        return handle

    def adopt(self, pid: int, start_time: int) -> ProcessHandle | None:
        """Return a handle for a live, non-zombie ``pid`` started at ``start_time``, else None."""
        stat = read_proc_stat(pid)
        if stat is None or stat.start_time != start_time or stat.state in ("Z", "X"):
            return None
        return ProcessHandle(pid=pid, start_time=start_time)

    def is_alive(self, handle: ProcessHandle) -> bool:
        """True while the process runs (a zombie or a recycled pid counts as dead)."""
        if handle in self._exited:
            return False
        return self.adopt(handle.pid, handle.start_time) is not None

    def running(self) -> list[ProcessHandle]:
        """Our own children that have not been reaped yet."""
        return list(self._children)

    async def wait(self, handle: ProcessHandle) -> int | None:
        """Wait for the process to exit.

        Returns the exit status like ``subprocess`` (negative = killed by that signal) for our
        own children, ``None`` for adopted processes (not our child: status unknowable).
        Any number of concurrent calls may wait on the same handle; cancelling one is safe.
        """
        loop = asyncio.get_running_loop()
        if handle in self._exited:
            return self._exited[handle]
        child = self._children.get(handle)
        if child is not None:
            return await asyncio.shield(self._arm(child, loop))
        await _wait_foreign(handle, loop)
        return None

    async def stop(self, handle: ProcessHandle, sig: int, timeout: float) -> int | None:
        """Send ``sig`` to the process group, then SIGKILL it after ``timeout`` seconds.

        Returns what ``wait()`` returns; a process that is already dead is not an error.
        Once the leader is gone, group members left behind (daemonised grandchildren) are
        SIGKILLed too. That is safe: a pgid stays reserved while any member holds it.
        """
        if handle in self._exited:
            return self._exited[handle]
        if not self._signal_group(handle, sig):
            return await self.wait(handle)
        try:
            status = await asyncio.wait_for(self.wait(handle), timeout)
        except TimeoutError:
            self._signal_group(handle, signal.SIGKILL)
            status = await self.wait(handle)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(handle.pid, signal.SIGKILL)
        return status

    # -- internals --------------------------------------------------------------------------

    def _signal_group(self, handle: ProcessHandle, sig: int) -> bool:
        """Signal the group if its leader is still ours to signal; False if it is gone."""
        child = self._children.get(handle)
        if child is None and not self.is_alive(handle):
            return False  # never signal a pid that may have been recycled
        try:
            os.killpg(handle.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _arm(self, child: _Child, loop: asyncio.AbstractEventLoop) -> asyncio.Future[int | None]:
        """Make sure ``child``'s pidfd is watched on ``loop``; return its exit future."""
        if child.done is not None and child.loop is loop:
            return child.done
        if child.loop is not None and not child.loop.is_closed():
            child.loop.remove_reader(child.pidfd)
        child.loop = loop
        child.done = loop.create_future()
        loop.add_reader(child.pidfd, self._on_child_exit, child)
        return child.done

    def _on_child_exit(self, child: _Child) -> None:
        """pidfd readable: reap the child, remember its status, wake every waiter."""
        status: int | None
        try:
            pid, raw = os.waitpid(child.handle.pid, os.WNOHANG)
        except ChildProcessError:
            status = None  # reaped by someone else: the status is lost
        else:
            if pid == 0:
                return  # not exited yet (spurious wake-up); keep watching
            status = os.waitstatus_to_exitcode(raw)
        assert child.loop is not None
        child.loop.remove_reader(child.pidfd)
        os.close(child.pidfd)
        # Popen.__del__ warns and re-polls while returncode is None; it is settled now.
        child.popen.returncode = status if status is not None else -signal.SIGKILL
        del self._children[child.handle]
        self._exited[child.handle] = status
        while len(self._exited) > _EXITED_KEPT:
            self._exited.popitem(last=False)
        if child.done is not None and not child.done.done():
            child.done.set_result(status)


async def _wait_foreign(handle: ProcessHandle, loop: asyncio.AbstractEventLoop) -> None:
    """Wait for a process that is not our child (adopted) to exit."""
    try:
        pidfd = os.pidfd_open(handle.pid)
    except ProcessLookupError:
        return None
    try:
        stat = read_proc_stat(handle.pid)
        if stat is None or stat.start_time != handle.start_time:
            return None  # already gone; the pid now names another process
        exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(pidfd, _resolve, exited)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _kill_and_reap(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        popen.kill()
    popen.wait()


def _describe(exc: OSError, spec: LaunchSpec) -> str:
    """A one-line reason for an exec/chdir/open failure, naming the offending path."""
    what = exc.strerror or type(exc).__name__
    if spec.cwd is not None and exc.filename == spec.cwd:
        return f"cannot enter working directory {spec.cwd!r}: {what}"
    if exc.filename is not None and str(exc.filename).startswith(str(spec.log_dir)):
        return f"cannot create log path {exc.filename!r}: {what}"
    return f"cannot execute {spec.argv[0]!r}: {what}"
