"""Config dataclasses to and from JSON (run folders store the exact configuration they used)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) config dataclass from :func:`dataclasses.asdict` output (JSON round trip).

    Unknown keys are ignored (a newer run folder read by older code), missing ones keep their defaults,
    nested dataclasses are rebuilt from their dicts and JSON lists become tuples.
    """
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in data.items():
        if key not in names:
            continue
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = dataclass_from_dict(tp, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
