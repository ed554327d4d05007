"""TOML tables onto dataclasses: unknown keys and wrong types are errors that name the key; no code runs.

Recipes are read with the standard library's ``tomllib`` and mapped field by field onto (nested) config
dataclasses. Lists become tuples where the field is a tuple; ``None`` is written by leaving a key out.
"""

import dataclasses
import types
import typing
from typing import Any, TypeVar

from medm2g_core.errors import InputError

T = TypeVar("T")


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, where)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {options}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise InputError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]
            hints = [args[0]] * len(value)
        elif len(args) == len(value):
            hints = list(args)
        else:
            raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(h, v, f"{where}[{i}]") for i, (h, v) in enumerate(zip(hints, value, strict=True)))
    if origin in (list, dict) or hint is typing.Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise InputError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from a TOML table, refusing unknown keys (``where`` names the table in errors)."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})")
    values = {key: _convert(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from exc


def to_dict(config: Any) -> dict:
    """The inverse of :func:`from_dict` (tuples as lists), for run folders and model cards."""
    return dataclasses.asdict(config)
