"""Read ``roost.toml`` / ``fly.toml`` text into an ``AppConfig`` plus warnings.

``parse_config(text, filename=...)`` is pure (no I/O, no clock); ``load_config(path)`` reads
the file and calls it. Steps: tomllib parses the text (a syntax error becomes a ConfigError
with tomllib's line) -> ``values.Table`` getters and ``sections`` readers build the records,
collecting every problem by key path -> ``locate.LineIndex`` turns each path into a line ->
one ``ConfigError`` listing every error, or the config and its warnings.
"""

from __future__ import annotations

import os
import re
import signal
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass

from roost.config.locate import LineIndex
from roost.config.model import AppConfig, Check, Service
from roost.config.sections import read_check, read_mount, read_restart, read_service, read_vm
from roost.config.values import Issues, Path, Table

_APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
# Keys fly.toml has that mean nothing to Roost: warned about, never errors.
_FLY_IGNORED = (
    "deploy",
    "experimental",
    "statics",
    "metrics",
    "files",
    "swap_size_mb",
    "console_command",
    "host_dedication_id",
    "machine_checks",
    "machine_config",
    "container",
)
_BUILD_IGNORED = (
    "builder",
    "builtin",
    "buildpacks",
    "dockerfile",
    "ignorefile",
    "build-target",
    "args",
    "settings",
)


def _format(filename: str, line: int | None, key: str | None, message: str) -> str:
    where = filename if line is None else f"{filename}:{line}"
    return ": ".join([where, *([] if key is None else [key]), message])


@dataclass(frozen=True)
class ConfigWarning:
    """Something the config says that Roost will not act on; str: ``file:line: key: message``."""

    filename: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        return _format(self.filename, self.line, self.key, self.message)


class ConfigError(Exception):
    """An invalid config; str: ``file:line: key: message`` (parts that are None left out).

    ``errors`` lists every problem found (each a ConfigError; a lone error lists itself). When
    there are several, str is their lines joined by newlines and ``line``/``key``/``message``
    are the first one's.
    """

    def __init__(
        self,
        filename: str,
        line: int | None = None,
        key: str | None = None,
        message: str = "invalid config",
        errors: Sequence[ConfigError] = (),
    ) -> None:
        self.filename = filename
        self.line = line
        self.key = key
        self.message = message
        self._errors = tuple(errors)
        super().__init__(str(self))

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return self._errors or (self,)

    @classmethod
    def collect(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One error for many: the error itself when there is only one."""
        if len(errors) == 1:
            return errors[0]
        first = errors[0]
        return cls(first.filename, first.line, first.key, first.message, errors)

    def __str__(self) -> str:
        if self._errors:
            return "\n".join(str(e) for e in self._errors)
        return _format(self.filename, self.line, self.key, self.message)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[object, ...]]:
        return (type(self), (self.filename, self.line, self.key, self.message, self._errors))


@dataclass(frozen=True)
class ParsedConfig:
    config: AppConfig
    warnings: tuple[ConfigWarning, ...]


def format_key(path: Path) -> str:
    """``("services", 0, "ports")`` -> ``services.0.ports``; odd keys quoted: ``env."A B"``."""
    parts = []
    for part in path:
        if isinstance(part, int) or _BARE_KEY.fullmatch(part):
            parts.append(str(part))
        else:
            parts.append('"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ".".join(parts)


def load_config(path: str | os.PathLike[str]) -> ParsedConfig:
    """Read and parse a config file (UTF-8, a leading BOM allowed)."""
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8-sig") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(filename, message=f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(filename, message=f"not valid UTF-8 (byte {exc.start})") from None
    return parse_config(text, filename=filename)


def parse_config(text: str, *, filename: str) -> ParsedConfig:
    """Config text -> records and warnings; raises ConfigError listing every error."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(str(exc), text, filename) from None
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        raise ConfigError(filename, message=f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(filename, message="invalid TOML: nested too deeply") from None
    issues = Issues()
    config = _read_app(Table(issues, (), data))
    issues.finish()
    index = LineIndex(text)
    errors = [ConfigError(filename, index.line(p), format_key(p), m) for p, m in issues.errors]
    warnings = [
        ConfigWarning(filename, index.line(p), format_key(p), m) for p, m in issues.warnings
    ]
    if errors:
        raise ConfigError.collect(sorted(errors, key=lambda e: e.line or 0))
    return ParsedConfig(config, tuple(sorted(warnings, key=lambda w: w.line or 0)))


def _syntax_error(message: str, text: str, filename: str) -> ConfigError:
    match = _TOML_POSITION.search(message)
    if match is None:
        return ConfigError(filename, message=f"invalid TOML: {message}")
    reason = message[: match.start()]
    if match.group(1) is None:  # "at end of document": the last line with content
        return ConfigError(filename, text.rstrip().count("\n") + 1, None, f"invalid TOML: {reason}")
    line, column = int(match.group(1)), match.group(2)
    return ConfigError(filename, line, None, f"invalid TOML: {reason} (column {column})")


def _read_app(t: Table) -> AppConfig:
    app = t.required_string("app")
    if app is not None and not _APP_NAME.fullmatch(app):
        what = "an app name of 1–63 lowercase letters, digits or '-', not starting with '-'"  # noqa: RUF001
        t.expected("app", what, app)
    region = t.string("primary_region", "local")
    if not _REGION.fullmatch(region):
        t.expected("primary_region", "a region name such as 'ams' or 'nrt'", region)
    image = None
    build = t.table("build")
    if build is not None:
        image = build.string("image", "") or None
        build.ignore(*_BUILD_IGNORED)
    services: list[Service] = []
    http_service = t.table("http_service")
    if http_service is not None:
        services.append(read_service(http_service, "http_service"))
    services += [read_service(s, f"services.{i}") for i, s in t.tables("services")]
    t.ignore(*_FLY_IGNORED)
    config = AppConfig(
        app=app or "",
        primary_region=region,
        image=image,
        env=_env(t.table("env")),
        processes=_processes(t.table("processes")),
        services=tuple(services),
        checks=_checks(t.table("checks")),
        mounts=tuple(read_mount(m) for _, m in t.tables("mounts")),
        vms=tuple(read_vm(v) for _, v in t.tables("vm")),
        restart=tuple(read_restart(r) for _, r in t.tables("restart")),
        kill_signal=_kill_signal(t),
        kill_timeout=t.duration("kill_timeout", 5.0, number_unit=1.0, hi=300.0),
        count=_count(t.table("scale")),
        hostnames=_hostnames(t),
    )
    # Every process group a section names must exist ("app" is the only one by default).
    groups = set(config.process_groups())
    for path, name in t.issues.group_refs:
        if name not in groups:
            message = f"process group {name!r} is not defined in [processes]"
            t.issues.errors.append((path, message))
    return config


def _kill_signal(t: Table) -> str:
    raw = t.raw("kill_signal")
    name = t.string("kill_signal", "SIGINT").upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in signal.Signals.__members__:
        t.expected("kill_signal", "a signal name such as 'SIGINT' or 'SIGTERM'", raw)
        return "SIGINT"
    return name


def _env(t: Table | None) -> tuple[tuple[str, str], ...]:
    """Values as strings; numbers and booleans converted the way fly does ("true", "3")."""
    if t is None:
        return ()
    env: list[tuple[str, str]] = []
    for name, value in t.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float | str):
            text = str(value)
        else:
            t.expected(name, "a string, number or boolean", value)
            continue
        if not name or "=" in name or "\0" in name or "\0" in text:
            t.error(name, "not a valid environment variable (empty name, '=' or NUL)")
            continue
        env.append((name, text))
    return tuple(env)


def _processes(t: Table | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if t is None:
        return ()
    groups: list[tuple[str, tuple[str, ...]]] = []
    for name, _ in t.items():
        if not _GROUP_NAME.fullmatch(name):
            t.error(name, "invalid process group name: use letters, digits, '-' and '_'")
        groups.append((name, t.command(name)))
    return tuple(groups)


def _checks(t: Table | None) -> tuple[Check, ...]:
    if t is None:
        return ()
    checks: list[Check] = []
    for name, _ in t.items():
        sub = t.table(name)
        if sub is not None:
            checks.append(read_check(sub, name, None))
    return tuple(checks)


def _count(t: Table | None) -> int | None:
    if t is None or not t.has("count"):
        return None
    return t.integer("count", 0, lo=0, hi=1000)


def _hostnames(t: Table) -> tuple[str, ...]:
    names: list[str] = []
    for raw in t.strings("hostnames"):
        name = raw.lower().removesuffix(".")
        labels = name.split(".")
        if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            t.error("hostnames", f"invalid hostname {raw!r}")
        elif name not in names:
            names.append(name)
    return tuple(names)
