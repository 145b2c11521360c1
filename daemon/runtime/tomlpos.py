"""Line numbers of the keys in a TOML document.

``tomllib`` returns plain dicts without positions; configuration errors must
name the line, so this scanner walks the text once and records, for every key
path (``("model", 1, "trigger")``: the key ``trigger`` of the second
``[[model]]`` table), the line it is defined on. It understands what a
configuration file uses: ``[table]``, ``[[array.of.tables]]``, dotted and
quoted keys, comments, basic/literal and multi-line strings, and arrays or
inline tables spanning several lines. It never decides whether the document is
valid; tomllib does that.
"""
from __future__ import annotations

KeyPath = tuple  # of str (keys) and int (indices of arrays of tables)


def _scan(s: str, i: int, ml: str | None, depth: int) -> tuple[str | None, int]:
    """Advance over one line fragment; returns the open multi-line string
    delimiter (or None) and the bracket depth at the end of the line."""
    n = len(s)
    while i < n:
        if ml is not None:
            j = s.find(ml, i)
            if j < 0:
                return ml, depth
            i = j + 3
            ml = None
            continue
        c = s[i]
        if c == "#":
            break
        if s.startswith('"""', i) or s.startswith("'''", i):
            ml = s[i:i + 3]
            i += 3
            continue
        if c == '"':
            i += 1
            while i < n and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            i += 1
            continue
        if c == "'":
            j = s.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return ml, depth


def _split_key(s: str) -> list[str]:
    """``a."b.c".d`` -> ["a", "b.c", "d"] (whitespace around dots allowed)."""
    parts, cur, i, n = [], [], 0, len(s)
    while i < n:
        c = s[i]
        if c in "\"'":
            j = s.find(c, i + 1)
            j = n if j < 0 else j
            cur.append(s[i + 1:j])
            i = j + 1
            continue
        if c == ".":
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur).strip())
    return parts


def _key_end(s: str) -> int:
    """Index of the ``=`` that ends the key on this line (outside quotes), or -1."""
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in "\"'":
            j = s.find(c, i + 1)
            if j < 0:
                return -1
            i = j + 1
            continue
        if c == "=":
            return i
        i += 1
    return -1


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every table header and key of a TOML document to its 1-based line."""
    out: dict[KeyPath, int] = {}
    counters: dict[tuple[str, ...], int] = {}
    table: KeyPath = ()
    ml: str | None = None
    depth = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if ml is not None or depth > 0:
            ml, depth = _scan(line, 0, ml, depth)
            continue
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("[["):
            end = s.find("]]")
            name = tuple(_split_key(s[2:end if end > 0 else len(s)]))
            idx = counters.get(name, 0)
            counters[name] = idx + 1
            table = (*name, idx)
            out.setdefault(table, lineno)
            out.setdefault(name, lineno)
            continue
        if s.startswith("["):
            end = s.find("]")
            table = tuple(_split_key(s[1:end if end > 0 else len(s)]))
            out.setdefault(table, lineno)
            continue
        eq = _key_end(s)
        if eq < 0:
            continue
        path = (*table, *_split_key(s[:eq]))
        out.setdefault(path, lineno)
        ml, depth = _scan(s, eq + 1, None, 0)
    return out


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """Line of ``path`` or of its nearest enclosing key or table that has one."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return None


def format_path(path: KeyPath) -> str:
    """``("model", 1, "trigger")`` -> ``model[1].trigger``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
