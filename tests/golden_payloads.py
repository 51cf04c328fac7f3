"""The wire's golden examples (``tests/golden/``) as JSON objects, and one field of one changed,
to show what the codec refuses. The files themselves are never edited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

GOLDEN: Final = Path(__file__).parent / "golden"

DELETE: Final = object()
"""As the value for :func:`edited`: leave the field out (``None`` is an explicit ``null``)."""


def golden_json(name: str) -> dict[str, Any]:
    """``tests/golden/{name}.json`` as a fresh object the caller may change."""
    obj: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_bytes())
    return obj


def edited(obj: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    """``obj`` with the field at ``path`` (keys and list indexes) set to ``value``, or left out
    for :data:`DELETE`; changed in place and returned."""
    target: Any = obj
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj
