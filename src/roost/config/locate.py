"""Where a key is written in a TOML text: a dotted path -> its 1-based line number.

Why hand-written: tomllib returns plain dicts with no positions, and tomlkit (which keeps
them) is a heavy dependency whose document would still need a walk like this one to map
``services.0.ports.1.handlers`` to a line. So this is a small scanner over the source text.

It understands ``[table]`` and ``[[array.of.tables]]`` headers (counting elements per array,
so the second ``[[services.ports]]`` under the first ``[[services]]`` is ``services.0.ports.1``),
``key = value`` lines with bare, quoted and dotted keys, inline tables and arrays (array
elements are indexed: ``handlers.1``), and skips over strings, multi-line strings, multi-line
arrays and comments so that nothing inside a value is mistaken for a key. It only has to be
right for text tomllib accepted; on anything else it gives up on that line and never raises.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Path = tuple[str, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_SCALAR_END = frozenset(",]}#\n")
_MAX_DEPTH = 64  # nested arrays/inline tables; deeper text is skipped, not indexed


class LineIndex:
    """Every key, table header and array element of one TOML text, with the line it is on."""

    def __init__(self, text: str) -> None:
        self._lines: dict[Path, int] = {}
        _Scanner(text, self._lines).run()

    def line(self, path: Sequence[str | int] | str) -> int | None:
        """Line of ``path`` or, failing that, of its nearest enclosing table; else None.

        A ``str`` path is split on dots (``"services.0.ports"``); pass a sequence for keys that
        themselves contain dots.
        """
        parts = path.split(".") if isinstance(path, str) else path
        key = tuple(str(p) for p in parts)
        while key:
            found = self._lines.get(key)
            if found is not None:
                return found
            key = key[:-1]
        return None


class _Scanner:
    """One pass over the text; records explicit definitions over implicit ones."""

    def __init__(self, text: str, out: dict[Path, int]) -> None:
        self.s = text
        self.i = 0
        self.out = out
        self.explicit: set[Path] = set()
        self.newlines = [k for k, c in enumerate(text) if c == "\n"]
        self.aot_len: dict[Path, int] = {}  # array-of-tables path -> elements seen so far

    # -- positions -------------------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def line_at(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def mark(self, path: Path, pos: int, *, explicit: bool) -> None:
        if path in self.explicit:
            return
        if explicit:
            self.explicit.add(path)
            self.out[path] = self.line_at(pos)
        else:
            self.out.setdefault(path, self.line_at(pos))

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t"):
            self.i += 1

    def skip_blank(self) -> None:
        """Whitespace, newlines and comments (between statements or array elements)."""
        while True:
            c = self.peek()
            if c in (" ", "\t", "\r", "\n"):
                self.i += 1
            elif c == "#":
                self.skip_line()
            else:
                return

    def skip_line(self) -> None:
        end = self.s.find("\n", self.i)
        self.i = len(self.s) if end < 0 else end

    # -- statements ------------------------------------------------------------------------
    def run(self) -> None:
        table: Path = ()
        while True:
            self.skip_blank()
            if self.i >= len(self.s):
                return
            start = self.i
            if self.peek() == "[":
                table = self.header(table)
            else:
                self.key_value(table)
            if self.i == start:
                self.i += 1  # never stall on junk
            self.skip_line()

    def header(self, table: Path) -> Path:
        start = self.i
        aot = self.peek(1) == "["
        self.i += 2 if aot else 1
        keys = self.key()
        self.skip_spaces()
        close = "]]" if aot else "]"
        if keys is None or not self.s.startswith(close, self.i):
            return table
        self.i += len(close)
        path = (*self.resolve(keys[:-1]), keys[-1])
        for n in range(1, len(path)):
            self.mark(path[:n], start, explicit=False)
        if aot:
            index = self.aot_len.get(path, 0)
            self.aot_len[path] = index + 1
            self.mark(path, start, explicit=False)
            path = (*path, str(index))
        self.mark(path, start, explicit=True)
        return path

    def resolve(self, keys: Sequence[str]) -> Path:
        """``services.ports`` in a header means the *latest* element of ``[[services]]``."""
        path: Path = ()
        for k in keys:
            path = (*path, k)
            count = self.aot_len.get(path)
            if count:
                path = (*path, str(count - 1))
        return path

    def key_value(self, table: Path, depth: int = 0) -> bool:
        start = self.i
        keys = self.key()
        self.skip_spaces()
        if keys is None or self.peek() != "=":
            return False
        self.i += 1
        path = table + tuple(keys)
        for n in range(len(table) + 1, len(path)):
            self.mark(path[:n], start, explicit=False)
        self.mark(path, start, explicit=True)
        return self.value(path, depth)

    def key(self) -> list[str] | None:
        """A dotted key (``a."b.c".'d'``) as its parts, or None if there is none here."""
        parts: list[str] = []
        while True:
            self.skip_spaces()
            c = self.peek()
            if c == '"':
                part = self.basic_string()
            elif c == "'":
                part = self.literal_string()
            else:
                begin = self.i
                while self.peek() in _BARE_KEY_CHARS:
                    self.i += 1
                part = self.s[begin : self.i] if self.i > begin else None
            if part is None:
                return None
            parts.append(part)
            self.skip_spaces()
            if self.peek() != ".":
                return parts
            self.i += 1

    # -- values ----------------------------------------------------------------------------
    def value(self, path: Path, depth: int) -> bool:
        """Skip one value (indexing inside arrays/inline tables); False if it looks broken."""
        self.skip_spaces()
        c = self.peek()
        if self.s.startswith('"""', self.i) or self.s.startswith("'''", self.i):
            return self.multiline_string()
        if c == '"':
            return self.basic_string() is not None
        if c == "'":
            return self.literal_string() is not None
        if c == "[":
            return depth < _MAX_DEPTH and self.array(path, depth + 1)
        if c == "{":
            return depth < _MAX_DEPTH and self.inline_table(path, depth + 1)
        begin = self.i
        while self.peek() not in _SCALAR_END and self.peek() != "":
            self.i += 1
        return self.i > begin

    def array(self, path: Path, depth: int) -> bool:
        self.i += 1
        index = 0
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.i += 1
                return True
            element = (*path, str(index))
            self.mark(element, self.i, explicit=False)
            if not self.value(element, depth):
                return False
            index += 1
            self.skip_blank()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "]":
                return False

    def inline_table(self, path: Path, depth: int) -> bool:
        self.i += 1
        while True:
            self.skip_blank()
            if self.peek() == "}":
                self.i += 1
                return True
            if not self.key_value(path, depth):
                return False
            self.skip_blank()
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "}":
                return False

    def basic_string(self) -> str | None:
        """A one-line ``"..."`` string, escapes decoded (keys must match tomllib's)."""
        self.i += 1
        out: list[str] = []
        while True:
            c = self.peek()
            if c in ("", "\n"):
                return None
            self.i += 1
            if c == '"':
                return "".join(out)
            if c != "\\":
                out.append(c)
                continue
            esc = self.peek()
            self.i += 1
            if esc in ("u", "U"):
                width = 4 if esc == "u" else 8
                digits = self.s[self.i : self.i + width]
                self.i += width
                try:
                    out.append(chr(int(digits, 16)))
                except ValueError:
                    return None
            else:
                out.append(_ESCAPES.get(esc, esc))

    def literal_string(self) -> str | None:
        end = self.s.find("'", self.i + 1)
        newline = self.s.find("\n", self.i + 1)
        if end < 0 or 0 <= newline < end:
            return None
        text = self.s[self.i + 1 : end]
        self.i = end + 1
        return text

    def multiline_string(self) -> bool:
        quote = self.s[self.i : self.i + 3]
        self.i += 3
        while self.i < len(self.s):
            if self.s.startswith(quote, self.i):
                self.i += 3
                for _ in range(2):  # up to two quotes may end the content: """a""""
                    if self.peek() == quote[0]:
                        self.i += 1
                return True
            self.i += 2 if quote == '"""' and self.peek() == "\\" else 1
        return False
