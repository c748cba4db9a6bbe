"""Typed reads from parsed TOML tables that record problems instead of raising.

``Table`` wraps one table from tomllib and its path (``("services", 0, "ports", 1)``). Each
getter checks type and range; when the value is wrong it records an error in the shared
``Issues`` and returns the default, so one pass reports every problem in a file. Keys that no
getter asked for become "unknown key" warnings in ``Issues.finish``. Paths only: turning a
path into ``file:line: key`` is ``config.reader``'s job.
"""

from __future__ import annotations

import contextlib
import math
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from roost.config.units import format_seconds, parse_duration

Path = tuple[str | int, ...]
T = TypeVar("T")

IGNORED = "not supported by roost; ignored"
MISSING = "missing required key"
_DURATION_HINT = "(like '5s', '1m30s' or '500ms')"


def describe(value: object) -> str:
    """A value as messages show it: ``string 'abc'``, ``integer -1``, ``an array``."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return f"string {text!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value}"  # dates and times


def int_range(lo: int, hi: int | None) -> str:
    if hi is not None:
        return f"an integer {lo}–{hi}"  # noqa: RUF001 (an en dash is intended)
    return {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer ≥ {lo}")


@dataclass
class Issues:
    """Errors and warnings found so far, by path; plus process-group references to check."""

    errors: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    group_refs: list[tuple[Path, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)

    def finish(self) -> None:
        """Warn about every key no reader asked for."""
        for table in self.tables:
            for key in table.data:
                if key not in table.seen:
                    self.warnings.append((table.at(key), "unknown key"))


class Table:
    """One TOML table being read. Getters mark keys as seen; see the module docstring."""

    def __init__(self, issues: Issues, path: Path, data: dict[str, object]) -> None:
        self.issues = issues
        self.path = path
        self.data = data
        self.seen: set[str] = set()
        issues.tables.append(self)

    def at(self, key: str | int) -> Path:
        return (*self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object | None:
        self.seen.add(key)
        return self.data.get(key)

    def error(self, key: str, message: str) -> None:
        self.issues.errors.append((self.at(key), message))

    def expected(self, key: str, what: str, value: object) -> None:
        self.error(key, f"expected {what}, got {describe(value)}")

    def items(self) -> Iterator[tuple[str, object]]:
        """Every key (for free-form tables such as ``[env]``), all marked as seen."""
        self.seen.update(self.data)
        yield from self.data.items()

    def ignore(self, *keys: str) -> None:
        """Keys fly.toml has that Roost does not use: a warning, never an error."""
        for key in keys:
            if key in self.data:
                self.seen.add(key)
                self.issues.warnings.append((self.at(key), IGNORED))

    def string(self, key: str, default: str) -> str:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.expected(key, "a string", value)
            return default
        return value

    def required_string(self, key: str) -> str | None:
        if key not in self.data:
            self.error(key, MISSING)
            return None
        value = self.string(key, "")
        return value if isinstance(self.data[key], str) else None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.expected(key, "true or false", value)
            return default
        return value

    def integer(
        self, key: str, default: int, *, lo: int, hi: int | None = None, numeric_str: bool = False
    ) -> int:
        """An int in [lo, hi]. ``numeric_str``: also "8080", as fly accepts for ports."""
        value = self.raw(key)
        if value is None:
            return default
        if numeric_str and isinstance(value, str) and value.isascii() and value.isdigit():
            number: object = int(value)
        else:
            number = value
        if (
            not isinstance(number, int)
            or isinstance(number, bool)
            or number < lo
            or (hi is not None and number > hi)
        ):
            self.expected(key, int_range(lo, hi), value)
            return default
        return number

    def choice(self, key: str, options: Mapping[str, T], default: T) -> T:
        """One of the ``options`` keys, mapped to its value (``"never"`` -> ``"no"``)."""
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str) or value not in options:
            self.expected(key, "one of " + ", ".join(repr(o) for o in options), value)
            return default
        return options[value]

    def duration(
        self,
        key: str,
        default: float,
        *,
        number_unit: float,
        positive: bool = True,
        hi: float = math.inf,
    ) -> float:
        """Seconds from Go syntax ("1m30s") or a bare number counted in ``number_unit`` s.

        ``positive``: must be > 0 (intervals, timeouts), else ≥ 0 (grace periods); ≤ ``hi``.
        """
        value = self.raw(key)
        if value is None:
            return default
        seconds = math.nan
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                seconds = parse_duration(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            with contextlib.suppress(OverflowError):  # an int too big for a float
                seconds = float(value) * number_unit
        too_small = seconds <= 0 if positive else seconds < 0
        if not math.isfinite(seconds) or too_small or seconds > hi:
            bounds = " > 0" if positive else " ≥ 0"
            if hi != math.inf:
                bounds += f" and ≤ {format_seconds(hi)}"
            self.expected(key, f"a duration{bounds} {_DURATION_HINT}", value)
            return default
        return seconds

    def strings(self, key: str) -> tuple[str, ...]:
        """An array of strings (a lone string is an error: ``handlers = "http"``)."""
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.expected(key, "an array of strings", value)
            return ()
        return tuple(str(v) for v in value)

    def groups(self, key: str = "processes") -> tuple[str, ...]:
        """Process group names; remembered so the reader can check they exist."""
        names = self.strings(key)
        self.issues.group_refs.extend((self.at(key), name) for name in names)
        return names

    def command(self, key: str) -> tuple[str, ...]:
        """argv from a shell-like string (split with shlex) or an array of strings."""
        value = self.raw(key)
        argv: tuple[str, ...] = ()
        if isinstance(value, str):
            try:
                argv = tuple(shlex.split(value))
            except ValueError as exc:  # "No closing quotation"
                self.error(key, f"cannot split command {value!r}: {exc}")
                return ()
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            argv = tuple(str(v) for v in value)
        elif value is not None:
            self.expected(key, "a command string or an array of strings", value)
            return ()
        if not argv or not argv[0]:
            self.error(key, "empty command")
        return argv

    def table(self, key: str) -> Table | None:
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.expected(key, "a table", value)
            return None
        return Table(self.issues, self.at(key), value)

    def tables(self, key: str) -> list[tuple[int, Table]]:
        """``[[key]]`` (array of tables) or a single ``[key]`` table, as (index, table)."""
        value = self.raw(key)
        if value is None:
            return []
        if isinstance(value, dict):
            return [(0, Table(self.issues, self.at(key), value))]
        if not isinstance(value, list):
            self.expected(key, "a table or an array of tables", value)
            return []
        out: list[tuple[int, Table]] = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append((i, Table(self.issues, (*self.at(key), i), item)))
            else:
                self.issues.errors.append(
                    ((*self.at(key), i), f"expected a table, got {describe(item)}")
                )
        return out

    def string_pairs(self, key: str) -> tuple[tuple[str, str], ...]:
        """A table of string values (check ``headers``) as pairs in file order."""
        sub = self.table(key)
        if sub is None:
            return ()
        pairs: list[tuple[str, str]] = []
        for name, value in sub.items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:
                sub.expected(name, "a string", value)
        return tuple(pairs)
