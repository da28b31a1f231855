"""Reading a user's JSONL file line by line, so that every check can name the line it found a problem on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def json_object_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, tuple[str, str] | None]]:
    """(line number, object, problem) for each non-blank line: the object when the line is one, else None and a
    (kind, message) saying why. Read as utf-8-sig: Windows editors start the file with a byte-order mark, which
    is not part of line 1's JSON.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jsonl")
    >>> _ = open(path, "w", encoding="utf-8-sig").write('{"a": 1}\\n\\n[1]\\n{"b": "\\x01"}\\n')
    >>> [(n, o, p and p[0]) for n, o, p in json_object_lines(path)]
    [(1, {'a': 1}, None), (3, None, 'not_an_object'), (4, None, 'malformed_json')]
    >>> next(p for _, _, p in json_object_lines(path) if p and p[0] == "malformed_json")[1]
    'not valid JSON (Invalid control character at column 8)'
    """
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
