"""Reading a world file: path, bytes, parsed JSON, then the validated `World`.

Only the file and the shape of its entries are judged here; references between entries, and
to rows the database already holds, are for `checks.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from cbstop.world.errors import WorldError
from cbstop.world.schema import World, describe_validation_error


def read_json(path: Path) -> Any:
    """The parsed JSON of the file at `path`, whatever its shape."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WorldError(f"cannot read world file {path}: {exc.strerror or exc}") from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WorldError(f"{path} is not valid JSON: {exc}") from exc


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
