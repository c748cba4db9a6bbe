"""One instance's supervisor: makes the running process match the instance record.

Inputs: the instance record (desired state, ``boot`` counter) re-read whenever the agent pokes
``changed``; the process's exit. Outputs: driver start/stop calls, the record's actual state,
and one lifecycle event per transition (created, starting, started, exited, restarting,
stopping, stopped, failed, destroyed, adopted, launch_failed).

Restart policy (per process group, ``[[restart]]``): ``always`` restarts on every exit,
``on-failure`` on a non-zero (or unknown) exit status up to ``max_retries`` in a row, ``no`` never.
The delay between restarts doubles from 0.1 s up to 10 s; a run that lasted ``STABLE_AFTER``
seconds resets the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from typing import TYPE_CHECKING

import msgspec

from roost.catalog import records as r
from roost.machines.drivers.process import LaunchFailed, LaunchSpec, ProcessHandle

if TYPE_CHECKING:
    from roost.machines.agent import HostAgent

STABLE_AFTER = 10.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 10.0


def restart_delay(restarts: int) -> float:
    """Delay before restart number ``restarts`` (0-based): 0.1 s doubling, capped at 10 s."""
    return min(BACKOFF_MAX, BACKOFF_MIN * (2 ** min(restarts, 20)))


def should_restart(policy: str, exit_code: int | None, restarts: int, max_retries: int) -> bool:
    if policy == "always":
        return True
    if policy == "on-failure":
        return exit_code != 0 and restarts < max_retries
    return False


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_argv(argv: tuple[str, ...], env: dict[str, str]) -> tuple[str, ...]:
    """Expand ``$VAR`` / ``${VAR}`` from the instance's env (no shell runs; unknown names stay)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))

    return tuple(_VAR.sub(sub, a) for a in argv)


def instance_env(app: r.App, inst: r.Instance, ports: dict[str, int]) -> dict[str, str]:
    env = dict(app.config.env)
    env.update(
        PORT=str(inst.port if inst.port else next(iter(ports.values()), 0)),
        ROOST_APP_NAME=app.name,
        ROOST_INSTANCE_ID=inst.id,
        ROOST_REGION=inst.region,
        PRIMARY_REGION=app.config.primary_region,
        ROOST_PROCESS_GROUP=inst.process_group,
        # the names apps written for the platform we follow already read
        FLY_APP_NAME=app.name,
        FLY_MACHINE_ID=inst.id,
        FLY_REGION=inst.region,
        FLY_PROCESS_GROUP=inst.process_group,
    )
    for internal, host_port in ports.items():
        env[f"ROOST_PORT_{internal}"] = str(host_port)
    return env


class Supervisor:
    def __init__(self, agent: HostAgent, app: str, instance_id: str) -> None:
        self.agent = agent
        self.app = app
        self.id = instance_id
        self.changed = asyncio.Event()
        self.adopted = asyncio.Event()  # run() has checked the process it found (if any)
        self.handle: ProcessHandle | None = None
        self._exit: asyncio.Future[int | None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._boot_seen: int | None = None
        self._started_at = 0.0

    # -- helpers ---------------------------------------------------------------------------
    async def _set(self, **changes: object) -> r.Instance | None:
        now = self.agent.clock()
        return await self.agent.catalog.update_instance(
            self.app, self.id, lambda i: msgspec.structs.replace(i, updated_at=now, **changes)
        )

    async def _event(self, type: r.EventType, message: str = "", code: int | None = None) -> None:
        await self.agent.catalog.add_event(self.app, self.id, type, message, code)

    async def _wait_changed(self, timeout: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()

    # -- main loop -------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            inst = await self.agent.catalog.get_instance(self.app, self.id)
            if inst is None:
                return
            self._boot_seen = inst.boot
            if inst.state == "created" and inst.pid is None:
                await self._event("created")
            await self._adopt(inst)
        finally:
            self.adopted.set()  # (HostAgent.settled)
        while True:
            self.changed.clear()
            inst = await self.agent.catalog.get_instance(self.app, self.id)
            if inst is None:  # record deleted under us: stop whatever runs
                await self._stop_process(None)
                return
            if inst.desired == "destroyed":
                await self._stop_process(inst)
                await self._destroy(inst)
                return
            if inst.desired == "stopped":
                await self._stop_process(inst)
                await self._wait_changed()
                continue
            # desired == started
            fresh_boot = inst.boot != self._boot_seen
            if fresh_boot and self.handle is not None:  # restart requested while running
                await self._stop_process(inst)
            if self.handle is None:
                if inst.state in ("exited", "failed") and not fresh_boot:
                    await self._wait_changed()  # stays down until started again
                    continue
                self._boot_seen = inst.boot
                if fresh_boot:
                    inst = await self._set(restarts=0) or inst
                if not await self._start(inst):
                    await self._wait_changed()
                    continue
            await self._run_until_exit_or_change()

    async def _adopt(self, inst: r.Instance) -> None:
        if inst.pid is None or inst.pid_start_time is None:
            return
        handle = self.agent.driver.adopt(inst.pid, inst.pid_start_time)
        if handle is not None:
            self._attach(handle, inst)
            await self._event("adopted", f"pid {handle.pid} still running")
            if inst.state not in ("started", "stopping"):
                await self._set(state="started")
            self._start_probe(inst)
            return
        if inst.state in ("started", "starting", "stopping"):
            await self._set(pid=None, pid_start_time=None, healthy=False, exit_code=None)
            await self._event("exited", "exited while the platform was down")
            await self._after_exit(inst, None, ran_for=0.0)

    def _attach(self, handle: ProcessHandle, inst: r.Instance) -> None:
        self.handle = handle
        self._exit = asyncio.ensure_future(self.agent.driver.wait(handle))
        self.agent.logs.follow(self.app, self.id, self.agent.log_dir(self.id))

    async def _start(self, inst: r.Instance) -> bool:
        app = await self.agent.catalog.get_app(self.app)
        if app is None:
            await self._set(state="failed", reason="app record is missing")
            return False
        ports = {}
        http = app.config.http_service_for(inst.process_group)
        for svc in app.config.services_for(inst.process_group):
            ports.setdefault(str(svc.internal_port), self.agent.driver.pick_port())
        port = ports[str(http.internal_port)] if http else self.agent.driver.pick_port()
        inst = await self._set(state="starting", port=port, ports=ports, healthy=False) or inst
        await self._event("starting")
        argv = app.config.command_for(inst.process_group)
        if not argv:
            await self._launch_failed(f"no command for process group {inst.process_group!r}")
            return False
        env = instance_env(app, inst, ports)
        spec = LaunchSpec(
            instance_id=self.id,
            argv=expand_argv(argv, env),
            env=env,
            cwd=app.workdir,
            log_dir=self.agent.log_dir(self.id),
        )
        try:
            handle = await self.agent.driver.start(spec)
        except LaunchFailed as exc:
            await self._launch_failed(exc.reason)
            return False
        self._attach(handle, inst)
        self._started_at = self.agent.clock()
        inst = (
            await self._set(
                state="started",
                pid=handle.pid,
                pid_start_time=handle.start_time,
                exit_code=None,
                reason="",
            )
            or inst
        )
        await self._event("started", f"pid {handle.pid}, port {port}")
        self._start_probe(inst)
        return True

    async def _launch_failed(self, reason: str) -> None:
        await self._set(state="failed", reason=reason, pid=None, pid_start_time=None)
        await self._event("launch_failed", reason)

    async def _run_until_exit_or_change(self) -> None:
        assert self._exit is not None
        changed = asyncio.ensure_future(self.changed.wait())
        try:
            await asyncio.wait({self._exit, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        if not self._exit.done():
            return  # the record changed: the main loop re-reads it
        code = self._exit.result()
        ran_for = self.agent.clock() - self._started_at
        self._detach()
        inst = await self._set(
            pid=None, pid_start_time=None, healthy=False, exit_code=code, state="exited"
        )
        await self._event("exited", _describe_exit(code), code)
        if inst is not None:
            await self._after_exit(inst, code, ran_for)

    async def _after_exit(self, inst: r.Instance, code: int | None, ran_for: float) -> None:
        app = await self.agent.catalog.get_app(self.app)
        if app is None or inst.desired != "started":
            return
        policy = app.config.restart_for(inst.process_group)
        restarts = 0 if ran_for >= STABLE_AFTER else inst.restarts
        if not should_restart(policy.policy, code, restarts, policy.max_retries):
            if policy.policy == "on-failure" and code != 0:
                reason = f"gave up after {restarts} restarts"
                await self._set(state="failed", reason=reason)
                await self._event("failed", reason, code)
            return
        delay = restart_delay(restarts)
        await self._set(state="restarting", restarts=restarts + 1)
        await self._event("restarting", f"restart {restarts + 1} in {delay:.1f}s")
        await self._wait_changed(delay)  # the main loop starts a "restarting" instance

    async def _stop_process(self, inst: r.Instance | None) -> None:
        if self.handle is None:
            if inst is not None and inst.state in ("restarting", "exited", "starting", "created"):
                await self._set(state="stopped")
            return
        handle = self.handle
        app = await self.agent.catalog.get_app(self.app)
        sig = signal.SIGINT
        timeout = 5.0
        if app is not None:
            sig = getattr(signal, app.config.kill_signal, signal.SIGINT)
            timeout = app.config.kill_timeout
        if inst is not None:
            await self._set(state="stopping", healthy=False)
            await self._event("stopping", f"signal {sig.name}, timeout {timeout:g}s")
        code = await self.agent.driver.stop(handle, sig, timeout)
        if self._exit is not None and not self._exit.done():
            with contextlib.suppress(asyncio.CancelledError):
                await self._exit
        self._detach()
        if inst is not None:
            await self._set(state="stopped", pid=None, pid_start_time=None, exit_code=code)
            await self._event("stopped", _describe_exit(code), code)

    def _detach(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if self.handle is not None:
            self.agent.logs.unfollow(self.id)
        self.handle = None
        self._exit = None

    async def _destroy(self, inst: r.Instance) -> None:
        await self.agent.catalog.delete_instance(self.app, self.id)
        await self._event("destroyed")

    # -- readiness: the service port accepts connections --------------------------------------
    def _start_probe(self, inst: r.Instance) -> None:
        if inst.port:
            self._probe = asyncio.ensure_future(self._probe_port(inst.port))

    async def _probe_port(self, port: int) -> None:
        delay = 0.02
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            await self._set(healthy=True)
            return

    # -- shutdown of the platform -------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop the process (the platform is going down); desired state is kept."""
        await self._stop_process(await self.agent.catalog.get_instance(self.app, self.id))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown (process was adopted)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


__all__ = ["Supervisor", "expand_argv", "instance_env", "restart_delay", "should_restart"]
