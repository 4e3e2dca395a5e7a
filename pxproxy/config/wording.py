"""pydantic's validation errors in words for people, each naming its key path.

pydantic says "Input should be a valid tuple"; an operator needs "must be a list, e.g. ["*"]".
The field an error is about is found by walking the models along the error's location, so
messages can use what the schema knows: the valid keys of a mapping (for "did you mean"),
whether a number is a duration, a list field's default as an example.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, BeforeValidator, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from .durations import format_duration, parse_duration
from .problems import Loc, Problem, key_path
from .raw_view import model_of, unwrap

_MAX_LISTED_KEYS = 16
_MAX_SHOWN = 60


class _Target(typing.NamedTuple):
    """What an error location points at: the field (if a model field) and its model."""

    parent: type[BaseModel] | None  # the model holding the last key of the location
    field: FieldInfo | None


def _walk(root: type[BaseModel], loc: Loc) -> _Target:
    annotation: object = root
    parent: type[BaseModel] | None = None
    field: FieldInfo | None = None
    for part in loc:
        model = model_of(annotation)
        if isinstance(part, str) and model is not None and part in model.model_fields:
            parent, field = model, model.model_fields[part]
            annotation = field.annotation
            continue
        if isinstance(part, str) and model is not None:
            return _Target(model, None)  # an unknown key of that model
        inner = _items_of(annotation)
        if inner is None:
            return _Target(None, None)
        annotation, parent, field = inner, None, None
    return _Target(parent, field)


def _items_of(annotation: object) -> object | None:
    for item in unwrap(annotation):
        args = typing.get_args(item)
        origin = typing.get_origin(item)
        if origin in (tuple, list) and args:
            first: object = args[0]
            return first
        if origin is dict and len(args) == 2:
            second: object = args[1]
            return second
    return None


def _is_duration(field: FieldInfo | None) -> bool:
    return field is not None and any(
        isinstance(m, BeforeValidator) and m.func is parse_duration for m in field.metadata
    )


def _is_secret(field: FieldInfo | None) -> bool:
    return field is not None and any(t is SecretStr for t in unwrap(field.annotation))


def value_kind(value: object) -> str:
    """How a problem names what it found instead: "a list", "text", "empty"..."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _shown(value: object) -> str | None:
    """A short JSON/YAML form of a scalar input, or None if it would not help."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = json.dumps(value)
    return text if len(text) <= _MAX_SHOWN else None


def _bound(value: object, field: FieldInfo | None) -> str:
    if _is_duration(field) and isinstance(value, int | float) and not isinstance(value, bool):
        return format_duration(float(value))
    return str(value)


def _unknown_key(key: str, parent: type[BaseModel] | None) -> str:
    if parent is None:
        return "unknown key"
    names = list(parent.model_fields)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    if len(names) <= _MAX_LISTED_KEYS:
        return f"unknown key; the keys here are {', '.join(names)}"
    return "unknown key"


def _list_example(value: object, field: FieldInfo | None) -> str:
    shown = _shown(value)
    if shown is not None and not _is_secret(field):
        return f"must be a list, e.g. [{shown}]"
    default = field.get_default(call_default_factory=True) if field is not None else None
    if isinstance(default, tuple) and default and all(isinstance(d, str) for d in default):
        return f"must be a list, e.g. {json.dumps(list(default))}"
    return "must be a list, e.g. [a, b] (or one '- item' line each)"


def _message(item: ErrorDetails, target: _Target, loc: Loc) -> str:
    kind = item["type"]
    ctx: dict[str, Any] = dict(item.get("ctx") or {})
    value = item.get("input")
    field = target.field
    secret = _is_secret(field)
    if kind == "extra_forbidden":
        return _unknown_key(str(loc[-1]) if loc else "", target.parent)
    if kind == "missing":
        return "required, but missing"
    if kind in ("tuple_type", "list_type", "set_type", "frozen_set_type"):
        return _list_example(value, field)
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"must be a mapping (key: value lines, or {{key: value}}), not {value_kind(value)}"
    if kind == "string_type":
        return f"must be text, not {value_kind(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be a whole number" + ("" if secret else _got(value))
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "must be a number" + ("" if secret else _got(value))
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false" + ("" if secret else _got(value))
    if kind == "literal_error":
        got = repr(value) if _shown(value) is not None else None
        return f"must be {ctx.get('expected', 'one of the listed values')}" + (
            f", not {got}" if got and not secret else ""
        )
    bounds = {
        "greater_than_equal": ("ge", "at least"),
        "greater_than": ("gt", "more than"),
        "less_than_equal": ("le", "at most"),
        "less_than": ("lt", "less than"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return f"must be {words} {_bound(ctx.get(key), field)}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s)"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    message = item["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _got(value: object) -> str:
    shown = _shown(value)
    return f", not {shown}" if shown is not None else f", not {value_kind(value)}"


def _location(item: ErrorDetails) -> Loc:
    # pydantic adds the validator kind to a location ("function-after[...]"): not a key.
    return tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))


def describe_errors(
    error: ValidationError, root: type[BaseModel], skip: Iterable[Loc] = ()
) -> list[tuple[Loc, Problem]]:
    """One problem per pydantic error; errors at or under a location in `skip` (a value whose
    environment variable is missing, reported already) are left out."""
    skipped = tuple(skip)
    out: list[tuple[Loc, Problem]] = []
    for item in error.errors(include_url=False, include_input=True):
        loc = _location(item)
        if any(loc[: len(s)] == s for s in skipped):
            continue
        message = _message(item, _walk(root, loc), loc)
        out.append((loc, Problem(key_path(loc), message)))
    return out
