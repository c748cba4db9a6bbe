"""Durations and sizes as fly.toml writes them: ``"5s"``, ``"1m30s"``, ``"500ms"``, ``"1gb"``.

Pure text -> number functions. They raise ``ValueError`` with a short reason; ``config.values``
turns that into an error naming the file, line and key.
"""

from __future__ import annotations

import math
import re

_SECONDS_PER_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu; Go accepts both
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Longer units first so "ms" is not read as "m" followed by junk.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(mb|mib|m|gb|gib|g)?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` syntax without a sign ("1m30s", "1.5h", "0") -> seconds."""
    s = text.strip()
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("empty duration")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"not a duration: {text!r}")
        total += float(m.group(1)) * _SECONDS_PER_UNIT[m.group(2)]
        pos = m.end()
    if not math.isfinite(total):
        raise ValueError(f"duration too large: {text!r}")
    return total


def parse_size_mb(text: str) -> int:
    """A memory size ("512mb", "1gb", "2GB", "1024" = MB) -> whole megabytes."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a size: {text!r}")
    number = float(m.group(1))
    unit = (m.group(2) or "mb").lower()
    mb = number * 1024 if unit.startswith("g") else number
    if not math.isfinite(mb) or mb != int(mb):
        raise ValueError(f"not a whole number of megabytes: {text!r}")
    return int(mb)


def format_seconds(seconds: float) -> str:
    """Seconds -> a short duration for messages: 300 -> "300s", 0.5 -> "500ms"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"
