"""The ``process`` driver with real child processes (``sys.executable -c ...``)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvloop

from roost.machines.drivers.process import (
    LaunchFailed,
    LaunchSpec,
    ProcessDriver,
    ProcessHandle,
    read_proc_stat,
)

DEADLINE = 10.0
SLEEPER = "import time\nwhile True: time.sleep(1)"


def py(code: str) -> tuple[str, ...]:
    """argv running ``code`` with this interpreter."""
    return (sys.executable, "-c", code)


def spec(
    tmp_path: Path,
    argv: tuple[str, ...],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> LaunchSpec:
    """A LaunchSpec logging to ``tmp_path/logs``."""
    return LaunchSpec("i-1", argv, env or {}, cwd, tmp_path / "logs")


async def until(cond: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait for ``cond()`` to become true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def stdout_line(tmp_path: Path) -> str:
    """The first complete line the child wrote to stdout.log."""
    path = tmp_path / "logs" / "stdout.log"
    await until(lambda: path.exists() and b"\n" in path.read_bytes(), "child output")
    return path.read_text().splitlines()[0]


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    stat = read_proc_stat(pid)
    return stat is None or stat.state in ("Z", "X")


def zombie_children() -> list[int]:
    """Our own children that exited and were not reaped."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                rest = Path(f"/proc/{entry}/stat").read_bytes().rpartition(b")")[2].split()
            except OSError:
                continue
            if rest[0] == b"Z" and int(rest[1]) == os.getpid():
                found.append(int(entry))
    return found


@pytest.fixture
async def driver() -> AsyncIterator[ProcessDriver]:
    """A driver whose leftover children are killed after the test."""
    d = ProcessDriver()
    yield d
    for handle in d.running():
        await d.stop(handle, signal.SIGKILL, DEADLINE)


async def test_start_is_alive_then_exit_code(driver: ProcessDriver, tmp_path: Path) -> None:
    """A started child is alive until it exits; wait() returns its exit code."""
    go = tmp_path / "go"
    code = f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
    handle = await driver.start(spec(tmp_path, py(code + "sys.exit(3)")))
    assert driver.is_alive(handle)
    assert os.getsid(handle.pid) == handle.pid  # its own session: pgid == pid
    go.touch()
    assert await asyncio.wait_for(driver.wait(handle), DEADLINE) == 3
    assert not driver.is_alive(handle)


async def test_killed_by_signal_gives_negative_status(
    driver: ProcessDriver, tmp_path: Path
) -> None:
    """A child killed by a signal reports minus the signal number, like subprocess."""
    handle = await driver.start(spec(tmp_path, py(SLEEPER)))
    os.kill(handle.pid, signal.SIGTERM)
    assert await asyncio.wait_for(driver.wait(handle), DEADLINE) == -signal.SIGTERM


async def test_concurrent_waits_all_resolve(driver: ProcessDriver, tmp_path: Path) -> None:
    """Several waiters on one handle all get the status, even if another one is cancelled."""
    handle = await driver.start(spec(tmp_path, py(SLEEPER)))
    waiters = [asyncio.create_task(driver.wait(handle)) for _ in range(4)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    os.kill(handle.pid, signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*waiters[1:]), DEADLINE)
    assert results == [-signal.SIGKILL] * 3
    assert waiters[0].cancelled()


async def test_children_are_reaped_without_wait(driver: ProcessDriver, tmp_path: Path) -> None:
    """The driver reaps an exited child by itself; a later wait() still gets the status."""
    handle = await driver.start(spec(tmp_path, py("raise SystemExit(5)")))
    await until(lambda: handle not in driver.running(), "the child to be reaped")
    assert handle.pid not in zombie_children()
    assert await driver.wait(handle) == 5
    assert await driver.stop(handle, signal.SIGTERM, 1.0) == 5  # already dead: no error


async def test_stop_escalates_to_sigkill(driver: ProcessDriver, tmp_path: Path) -> None:
    """A child ignoring SIGTERM is SIGKILLed once the timeout has passed."""
    code = (
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
    )
    handle = await driver.start(spec(tmp_path, py(code + SLEEPER)))
    assert await stdout_line(tmp_path) == "ready"
    started = time.monotonic()
    assert await driver.stop(handle, signal.SIGTERM, 0.3) == -signal.SIGKILL
    assert time.monotonic() - started >= 0.3


async def test_stop_graceful(driver: ProcessDriver, tmp_path: Path) -> None:
    """A child handling the stop signal exits with its own status before the timeout."""
    code = (
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\n"
        "print('ready', flush=True)\n"
    )
    handle = await driver.start(spec(tmp_path, py(code + SLEEPER)))
    await stdout_line(tmp_path)
    assert await driver.stop(handle, signal.SIGINT, DEADLINE) == 0


@pytest.mark.parametrize("grandchild_ignores_term", [False, True])
async def test_stop_kills_the_whole_group(
    driver: ProcessDriver, tmp_path: Path, grandchild_ignores_term: bool
) -> None:
    """stop() signals the process group: no grandchild survives, even one ignoring SIGTERM."""
    grandchild = (
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        if grandchild_ignores_term
        else ""
    ) + SLEEPER
    code = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
        "print(p.pid, flush=True)\n" + SLEEPER
    )
    handle = await driver.start(spec(tmp_path, py(code)))
    grandchild_pid = int(await stdout_line(tmp_path))
    assert os.getpgid(grandchild_pid) == handle.pid
    assert await driver.stop(handle, signal.SIGTERM, DEADLINE) == -signal.SIGTERM
    await until(lambda: gone(grandchild_pid), "the grandchild to die")


async def test_env_and_cwd_are_passed(
    driver: ProcessDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child gets the instance env over a minimal base env, and the requested cwd."""
    monkeypatch.setenv("ROOST_NODE_SECRET", "must-not-leak")
    code = "import json, os\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    env = {"PORT": "8080", "ROOST_APP": "hello", "LANG": "C.UTF-8"}
    handle = await driver.start(spec(tmp_path, py(code), env=env, cwd=str(tmp_path)))
    assert await driver.wait(handle) == 0
    seen = json.loads(await stdout_line(tmp_path))
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"]["PORT"] == "8080" and seen["env"]["ROOST_APP"] == "hello"
    assert seen["env"]["LANG"] == "C.UTF-8"
    assert seen["env"]["PATH"] == os.environ["PATH"]
    assert "ROOST_NODE_SECRET" not in seen["env"]


async def test_output_goes_to_appended_files(driver: ProcessDriver, tmp_path: Path) -> None:
    """stdout and stderr are appended to files in the log dir; stdin is /dev/null."""
    code = "import sys\nprint('out', sys.stdin.read() == '')\nprint('err', file=sys.stderr)"
    for _ in range(2):
        assert await driver.wait(await driver.start(spec(tmp_path, py(code)))) == 0
    assert (tmp_path / "logs" / "stdout.log").read_text() == "out True\n" * 2
    assert (tmp_path / "logs" / "stderr.log").read_text() == "err\n" * 2


@pytest.mark.parametrize(
    ("argv", "cwd", "reason"),
    [
        (("/no/such/binary",), None, "cannot execute '/no/such/binary'"),
        (("no-such-binary-on-path",), None, "No such file"),
        (("NOT-EXECUTABLE",), None, "Permission denied"),
        ((sys.executable, "-c", "pass"), "/no/such/dir", "cannot enter working directory"),
        ((), None, "empty argv"),
    ],
)
async def test_launch_failed(
    driver: ProcessDriver, tmp_path: Path, argv: tuple[str, ...], cwd: str | None, reason: str
) -> None:
    """An exec failure raises LaunchFailed with a clear reason; no zombie, no leaked fd."""
    if argv == ("NOT-EXECUTABLE",):
        (tmp_path / "script").write_text("#!/bin/sh\n")
        argv = (str(tmp_path / "script"),)
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(LaunchFailed) as info:
        await driver.start(spec(tmp_path, argv, cwd=cwd))
    assert info.value.instance_id == "i-1"
    assert reason in info.value.reason
    assert set(os.listdir("/proc/self/fd")) == fds_before
    assert zombie_children() == []
    assert driver.running() == []


async def test_adopt_checks_pid_and_start_time(driver: ProcessDriver, tmp_path: Path) -> None:
    """adopt() accepts a live pid with its start time, and rejects a wrong one or a dead pid."""
    handle = await driver.start(spec(tmp_path, py(SLEEPER)))
    assert driver.adopt(handle.pid, handle.start_time) == handle
    assert driver.adopt(handle.pid, handle.start_time + 1) is None
    await driver.stop(handle, signal.SIGKILL, DEADLINE)
    assert driver.adopt(handle.pid, handle.start_time) is None
    assert not driver.is_alive(ProcessHandle(handle.pid, handle.start_time + 1))


async def test_start_time_parsing_survives_odd_comm(driver: ProcessDriver, tmp_path: Path) -> None:
    """A process name with spaces and parentheses does not confuse /proc/<pid>/stat parsing."""
    code = "open('/proc/self/comm', 'w').write('a) b (c) d')\nprint('ready', flush=True)\n"
    handle = await driver.start(spec(tmp_path, py(code + SLEEPER)))
    await stdout_line(tmp_path)
    assert Path(f"/proc/{handle.pid}/comm").read_text().strip() == "a) b (c) d"
    assert driver.adopt(handle.pid, handle.start_time) == handle


async def test_wait_and_stop_on_adopted_process(driver: ProcessDriver) -> None:
    """A process that is not the driver's child can be waited on (None) and stopped."""
    proc = subprocess.Popen(py(SLEEPER), start_new_session=True)
    try:
        stat = read_proc_stat(proc.pid)
        assert stat is not None
        handle = driver.adopt(proc.pid, stat.start_time)
        assert handle is not None
        waiter = asyncio.create_task(driver.wait(handle))
        assert await driver.stop(handle, signal.SIGTERM, DEADLINE) is None
        assert await asyncio.wait_for(waiter, DEADLINE) is None
        assert not driver.is_alive(handle)
        assert await driver.stop(handle, signal.SIGTERM, DEADLINE) is None  # already dead
    finally:
        proc.kill()
        proc.wait()


HELPER = """
import asyncio, sys
from pathlib import Path
from roost.machines.drivers.process import LaunchSpec, ProcessDriver

async def main():
    driver = ProcessDriver()
    argv = (sys.executable, "-c", "import time\\nwhile True: time.sleep(1)")
    handle = await driver.start(LaunchSpec("i-1", argv, {}, None, Path(sys.argv[1])))
    print(handle.pid, handle.start_time, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def read_line(pipe: int, timeout: float) -> bytes:
    """Read one line from a pipe fd, failing after ``timeout`` seconds."""
    deadline, data = time.monotonic() + timeout, b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail("timed out waiting for the helper's output")
        chunk = os.read(pipe, 4096)
        if not chunk:
            pytest.fail(f"helper exited early after {data!r}")
        data += chunk
    return data


async def test_child_survives_parent_sigkill_and_is_adopted(
    driver: ProcessDriver, tmp_path: Path
) -> None:
    """After the platform is SIGKILLed its child keeps running and a new driver adopts it."""
    helper = subprocess.Popen((*py(HELPER), str(tmp_path)), stdout=subprocess.PIPE)
    try:
        assert helper.stdout is not None
        pid, start_time = map(int, read_line(helper.stdout.fileno(), DEADLINE).split())
    finally:
        helper.kill()
        helper.wait()
        if helper.stdout is not None:
            helper.stdout.close()
    try:
        handle = driver.adopt(pid, start_time)
        assert handle is not None and driver.is_alive(handle)
        waiter = asyncio.create_task(driver.wait(handle))
        await asyncio.sleep(0)
        assert not waiter.done()
        os.kill(pid, signal.SIGKILL)
        assert await asyncio.wait_for(waiter, DEADLINE) is None
        assert driver.adopt(pid, start_time) is None
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_works_on_uvloop(tmp_path: Path) -> None:
    """start, wait, stop and waiting on an adopted process also work on uvloop."""

    async def scenario() -> None:
        driver = ProcessDriver()
        done = await driver.start(spec(tmp_path, py("raise SystemExit(4)")))
        assert await asyncio.wait_for(driver.wait(done), DEADLINE) == 4
        handle = await driver.start(spec(tmp_path, py(SLEEPER)))
        assert await driver.stop(handle, signal.SIGTERM, DEADLINE) == -signal.SIGTERM
        proc = subprocess.Popen(py(SLEEPER))
        try:
            adopted = driver.adopt(proc.pid, read_proc_stat(proc.pid).start_time)  # type: ignore[union-attr]
            assert adopted is not None
            waiter = asyncio.create_task(driver.wait(adopted))
            proc.kill()
            assert await asyncio.wait_for(waiter, DEADLINE) is None
        finally:
            proc.kill()
            proc.wait()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_pick_port_gives_free_distinct_ports() -> None:
    """pick_port() returns bindable ports and does not repeat recent ones."""
    driver = ProcessDriver()
    ports = [driver.pick_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))
