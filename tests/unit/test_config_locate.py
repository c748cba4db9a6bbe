"""The key -> line locator used to put line numbers on config errors (roost.config.locate)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from roost.config.locate import LineIndex

FLY = """\
app = "shop"                       # 1
primary_region = "nrt"             # 2
                                   # 3
[http_service]                     # 4
  internal_port = 8080             # 5
  [http_service.concurrency]       # 6
    soft_limit = 20                # 7
                                   # 8
[[services]]                       # 9
  internal_port = 5432             # 10
  [[services.ports]]               # 11
    port = 5432                    # 12
  [[services.ports]]               # 13
    port = 443                     # 14
    handlers = ["tls"]             # 15
                                   # 16
[[services]]                       # 17
  internal_port = 9000             # 18
  [services.concurrency]           # 19
    hard_limit = 5                 # 20
  [[services.ports]]               # 21
    port = 9000                    # 22
"""


def test_top_level_keys_have_their_lines() -> None:
    """Top-level ``key = value`` lines are found by their key."""
    index = LineIndex(FLY)
    assert index.line("app") == 1
    assert index.line("primary_region") == 2


def test_table_headers_and_keys_under_them() -> None:
    """``[table]`` headers and the keys below them map to their own lines."""
    index = LineIndex(FLY)
    assert index.line("http_service") == 4
    assert index.line("http_service.internal_port") == 5
    assert index.line("http_service.concurrency") == 6
    assert index.line("http_service.concurrency.soft_limit") == 7


def test_array_of_tables_elements_are_indexed() -> None:
    """Each ``[[services]]`` is ``services.N``; nested ``[[services.ports]]`` count per parent."""
    index = LineIndex(FLY)
    assert index.line("services") == 9
    assert index.line("services.0") == 9
    assert index.line("services.0.ports.0.port") == 12
    assert index.line("services.0.ports.1") == 13
    assert index.line("services.0.ports.1.handlers") == 15
    assert index.line("services.1.internal_port") == 18
    assert index.line("services.1.ports.0.port") == 22


def test_subtable_of_an_array_element_belongs_to_the_latest_element() -> None:
    """``[services.concurrency]`` after a second ``[[services]]`` is ``services.1.concurrency``."""
    index = LineIndex(FLY)
    assert index.line("services.1.concurrency.hard_limit") == 20
    assert index.line(("services", 1, "concurrency")) == 19


def test_missing_key_falls_back_to_enclosing_table() -> None:
    """A key that is not written maps to its nearest enclosing table's header."""
    index = LineIndex(FLY)
    assert index.line("http_service.concurrency.hard_limit") == 6
    assert index.line("services.0.ports.1.force_https") == 13


def test_missing_top_level_key_is_none() -> None:
    """A key with no enclosing table written anywhere has no line."""
    assert LineIndex(FLY).line("kill_signal") is None
    assert LineIndex("").line("app") is None


def test_lines_inside_multiline_array_are_not_keys() -> None:
    """A multi-line array's lines are elements (indexed), never key lines."""
    text = 'handlers = [\n  "http",\n  # fake = 1\n  "tls",\n]\nfake = 2\n'
    index = LineIndex(text)
    assert index.line("handlers") == 1
    assert index.line("handlers.0") == 2
    assert index.line("handlers.1") == 4
    assert index.line("fake") == 6


def test_lines_inside_multiline_strings_are_not_keys() -> None:
    """Text inside triple-quoted strings (basic and literal) is skipped."""
    text = (
        'cmd = """\nfake = 1\n[fake_table]\n\\"""\n"""\nlit = \'\'\'\nfake = 2\n\'\'\'\nreal = 3\n'
    )
    assert tomllib.loads(text)["real"] == 3
    index = LineIndex(text)
    assert index.line("fake") is None
    assert index.line("fake_table") is None
    assert index.line("lit") == 6
    assert index.line("real") == 9


def test_quoted_keys() -> None:
    """Basic and literal quoted keys, with escapes and dots inside, match tomllib's keys."""
    text = (
        '[env]\n"MY.VAR" = "1"\n\'literal key\' = "2"\n"quo\\"te" = "3"\n"\\u00e9t\\u00e9" = "4"\n'
    )
    keys = list(tomllib.loads(text)["env"])
    index = LineIndex(text)
    assert [index.line(("env", k)) for k in keys] == [2, 3, 4, 5]


def test_dotted_keys() -> None:
    """``a.b.c = 1`` defines ``a.b.c`` on its line, and implicitly ``a`` and ``a.b``."""
    text = '[http_service]\nconcurrency.type = "requests"\nconcurrency . "soft_limit" = 5\n'
    index = LineIndex(text)
    assert index.line("http_service.concurrency.type") == 2
    assert index.line("http_service.concurrency.soft_limit") == 3
    assert index.line("http_service.concurrency") == 2


def test_inline_tables_and_arrays_of_inline_tables() -> None:
    """Keys inside inline tables and arrays of them are located too."""
    text = 'app = "a"\nports = [\n  { port = 80, handlers = ["http"] },\n  { port = 443 },\n]\n'
    index = LineIndex(text)
    assert index.line("ports.0.handlers") == 3
    assert index.line("ports.1.port") == 4


def test_header_with_spaces_and_quoted_parts() -> None:
    """``[ services . "ports" ]``-style headers resolve like plain ones."""
    text = '[[ services ]]\n[[ services . "ports" ]]\nport = 1\n'
    assert LineIndex(text).line("services.0.ports.0.port") == 3


def test_explicit_table_header_wins_over_implicit_definition() -> None:
    """``[a]`` written after ``[a.b]`` is located at its own header."""
    text = "[a.b]\nx = 1\n[a]\ny = 2\n"
    index = LineIndex(text)
    assert index.line("a") == 3
    assert index.line("a.b") == 1


def test_brackets_and_hashes_inside_values_do_not_confuse() -> None:
    """``#``, ``[`` and ``=`` inside strings are not comments, headers or keys."""
    text = "a = \"x # [y] = z\"\nb = 'it''s'\n# [commented]\nc = 1 # d = 2\n"
    index = LineIndex(text)
    assert index.line("c") == 4
    assert index.line("commented") is None
    assert index.line("d") is None


def test_windows_line_endings() -> None:
    """CRLF files count lines the same way."""
    text = 'app = "a"\r\n\r\n[env]\r\nX = "1"\r\n'
    assert LineIndex(text).line("env.X") == 4


def test_very_deep_nesting_is_skipped_without_losing_later_keys() -> None:
    """A value nested deeper than the scanner indexes is skipped; the next key is still found."""
    text = "x = " + "[" * 100 + "]" * 100 + "\ny = 1\n"
    index = LineIndex(text)
    assert (index.line("x"), index.line("y")) == (1, 2)


@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    """The locator gives up quietly on text that is not TOML."""
    index = LineIndex(text)
    index.line("a.b.0")


@given(st.text(alphabet="[]{}\"'=.,#\n abc0\\"))
def test_never_raises_on_toml_punctuation(text: str) -> None:
    """Half-written headers, strings and arrays never make the locator raise."""
    LineIndex(text).line(("a", 0))


# -- property: a generated TOML document; every key must be found on the line it was written ---
_VALUES = [
    "1",
    '"s # [x] = y"',
    "'lit'",
    "[1, 2]",
    '[\n  "a",\n  # k = 1\n  "b",\n]',
    '"""\nk = 1\n[t]\n"""',
    "'''\n[[t]]\n'''",
    '{ x = 1, y = "}" }',
    "1979-05-27 07:32:00",
]


@dataclass
class _Doc:
    lines: list[str] = field(default_factory=list)
    expected: dict[tuple[str, ...], int] = field(default_factory=dict)

    def emit(self, text: str, path: tuple[str, ...] | None = None) -> None:
        if path is not None:
            self.expected[path] = len(self.lines) + 1
        self.lines.extend(text.split("\n"))

    def body(self, prefix: tuple[str, ...], keys: list[tuple[str, int]]) -> None:
        for key, v in keys:
            self.emit(f"{key} = {_VALUES[v]}", (*prefix, key))


_keys = st.lists(
    st.tuples(st.sampled_from(["k0", "k1", "k2", '"q.k"']), st.integers(0, len(_VALUES) - 1)),
    unique_by=lambda kv: kv[0],
    max_size=3,
)
_sections = st.lists(
    st.tuples(st.sampled_from(["table", "aot", "sub"]), st.sampled_from(["t0", "t1"]), _keys),
    max_size=8,
)


@given(_keys, _sections)
def test_every_generated_key_is_found_on_its_line(
    top: list[tuple[str, int]], sections: list[tuple[str, str, list[tuple[str, int]]]]
) -> None:
    """For generated TOML (tables, arrays of tables, tricky values) each key maps to its line."""
    doc = _Doc()
    doc.body((), top)
    tables_done: set[str] = set()
    aot_count: dict[str, int] = {}
    sub_count: dict[tuple[str, int], int] = {}
    for kind, name, keys in sections:
        if kind == "table" and name not in tables_done and name not in aot_count:
            tables_done.add(name)
            doc.emit(f"[{name}]", (name,))
            doc.body((name,), keys)
        elif kind == "aot" and name not in tables_done:
            i = aot_count[name] = aot_count.get(name, 0) + 1
            doc.emit(f"[[{name}]]", (name, str(i - 1)))
            doc.body((name, str(i - 1)), keys)
        elif kind == "sub" and name in aot_count:
            parent = (name, aot_count[name] - 1)
            j = sub_count[parent] = sub_count.get(parent, 0) + 1
            path = (name, str(parent[1]), "sub", str(j - 1))
            doc.emit(f"[[{name}.sub]]", path)
            doc.body(path, keys)
    text = "\n".join(doc.lines) + "\n"
    tomllib.loads(text)  # the generator only writes valid TOML
    index = LineIndex(text)
    for written, line in doc.expected.items():
        key = tuple(p.strip('"') for p in written)
        assert index.line(key) == line, (written, text)
