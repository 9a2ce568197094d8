"""Reading a world file: path, bytes, parsed JSON, then the validated `World`.

Only the file and the shape of its entries are judged here; references between entries, and
to rows the database already holds, are for `checks.py`.

A key given twice in one JSON object is refused: most parsers silently keep one of the two
(which one differs), so the file would not mean what its reader sees. orjson cannot tell, so
the file is parsed by the standard library's C scanner with a hook on each object: reading
and parsing a 200k-integration file took 1.04-1.10 s where orjson took 0.73-0.81 s (three
rounds on the shared machine), about 1.5 s more in a 1M load of 23 s. Only when the hook
finds a repeat is the file parsed again, to name where.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cbstop.world.errors import WorldError
from cbstop.world.schema import World, describe_validation_error, entry_label


def read_json(path: Path) -> Any:
    """The parsed JSON of the file at `path`, whatever its shape; no key given twice."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WorldError(f"cannot read world file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
        del data
        return json.loads(text, object_pairs_hook=_refuse_repeats, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 ({exc.reason} at byte {exc.start})"
        raise WorldError(f"{path} is not valid JSON: {problem}") from exc
    except (json.JSONDecodeError, _NotJson) as exc:
        raise WorldError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise WorldError(f"{path} is not valid JSON: nested too deeply") from exc
    except _Repeated:
        pass
    marked = json.loads(text, object_pairs_hook=_mark_repeats)
    raise WorldError(_describe_repeat(marked))


class _NotJson(ValueError):
    """A value the standard library takes but JSON does not have."""


class _Repeated(Exception):
    """Some object of the file gives a key twice."""


class _Repeats(dict[str, Any]):
    """A parsed object that gave `key` more than once."""

    key: str


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Repeated
    return obj


def _mark_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Repeats(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            break
        seen.add(key)
    return marked


def _first_repeat(value: Any, path: list[str | int]) -> tuple[list[str | int], str] | None:
    """Where the first object (in file order) with a repeated key is, and that key."""
    if isinstance(value, _Repeats):
        return path, value.key
    if isinstance(value, dict):
        children: Iterable[tuple[str | int, Any]] = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        return None
    for step, child in children:
        found = _first_repeat(child, [*path, step])
        if found is not None:
            return found
    return None


def _describe_repeat(marked: Any) -> str:
    found = _first_repeat(marked, [])
    assert found is not None  # the first parse saw a repeat
    path, key = found
    problem = f"the key {json.dumps(key)} is given twice"
    if not path:
        return f"the world file: {problem}"
    if len(path) >= 2 and isinstance(path[0], str) and isinstance(path[1], int):
        where, rest = entry_label(marked, path[0], path[1]), path[2:]
    else:
        where, rest = str(path[0]), path[1:]
    field = ".".join(str(step) for step in rest)
    return f"{where}: {field}: {problem}" if field else f"{where}: {problem}"


def validate(raw: Any) -> World:
    """The world a parsed file declares; the first shape error names its entry and field."""
    try:
        return World.model_validate(raw)
    except ValidationError as exc:
        raise WorldError(describe_validation_error(exc, raw)) from exc


def entry_count(raw: Any) -> int:
    """How many entries a parsed, not yet validated, world declares."""
    if not isinstance(raw, Mapping):
        return 0
    return sum(len(v) for v in raw.values() if isinstance(v, list))
