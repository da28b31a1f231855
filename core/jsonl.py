"""JSONL files: a user's, read line by line so every check can name its line, and the run folder's logs, read while
a live writer appends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def json_object_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, tuple[str, str] | None]]:
    """(line number, object, problem) for each non-blank line: the object when the line is one, else None and a
    (kind, message) saying why. Read as utf-8-sig: Windows editors start the file with a byte-order mark, which
    is not part of line 1's JSON. A UTF-16 or UTF-32 file (spreadsheet exports) is one problem, kind not_utf8, on
line 1, saying how to convert it.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jsonl")
    >>> _ = open(path, "w", encoding="utf-8-sig").write('{"a": 1}\\n\\n[1]\\n{"b": "\\x01"}\\n')
    >>> [(n, o, p and p[0]) for n, o, p in json_object_lines(path)]
    [(1, {'a': 1}, None), (3, None, 'not_an_object'), (4, None, 'malformed_json')]
    >>> next(p for _, _, p in json_object_lines(path) if p and p[0] == "malformed_json")[1]
    'not valid JSON (Invalid control character at column 8)'
    """
    wide = _wide_encoding(path)
    if wide:
        # Every line would read as "not valid JSON": say once what is wrong with the whole file instead.
        name = Path(path).name
        yield 1, None, ("not_utf8", (
            f"{name} is {wide} text, not UTF-8 (spreadsheets save it so); convert it with "
            f"`iconv -f {wide} -t UTF-8 {name} > fixed.jsonl` and use fixed.jsonl as {name}"
        ))
        return
    with Path(path).open(encoding="utf-8-sig", errors="replace") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                # Some of json's messages end in "at" already ("Invalid control character at").
                reason = error.msg.removesuffix(" at")
                yield line_no, None, ("malformed_json", f"not valid JSON ({reason} at column {error.colno})")
                continue
            if not isinstance(obj, dict):
                yield line_no, None, ("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield line_no, obj, None


def _wide_encoding(path: str | Path) -> str | None:
    """"UTF-16" or "UTF-32" when the file starts with that encoding's byte-order mark, or with the NUL bytes
    that ASCII text has in it (a JSON line starts with an ASCII character); else None.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jsonl")
    >>> _ = open(path, "w", encoding="utf-16").write('{"a": 1}')
    >>> _wide_encoding(path)
    'UTF-16'
    """
    with Path(path).open("rb") as stream:
        head = stream.read(4)
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    if len(head) == 4 and head.count(0) == 3:
        return "UTF-32"
    if len(head) >= 2 and (head[0] == 0) != (head[1] == 0):
        return "UTF-16"
    return None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield JSON objects line by line, skipping a torn last line that a live writer has not finished."""
    try:
        with path.open() as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        return
