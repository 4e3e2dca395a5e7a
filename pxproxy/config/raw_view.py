"""The raw config read through the models' field types, one field at a time.

The semantic checks (config/semantics.py) must see every part of a file that is valid even
when other parts are not, so they cannot wait for `Config.model_validate` to succeed. A
`RawSection` is one mapping of the raw data paired with the model that describes it: each
field is validated on its own with the field's type and constraints (not the model's own
validators, whose errors the structural pass reports anyway), so one bad key hides nothing else.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from .problems import Loc, key_path

T = TypeVar("T")


@functools.cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    return TypeAdapter(annotation)


def unwrap(annotation: object) -> list[object]:
    """The types an annotation stands for: Annotated and Optional/unions opened."""
    if typing.get_origin(annotation) is Annotated:
        return unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in unwrap(arg)]
    return [annotation]


def model_of(annotation: object) -> type[BaseModel] | None:
    """The model an annotation holds directly (`IdleConfig | None` -> IdleConfig)."""
    for item in unwrap(annotation):
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def item_model_of(annotation: object) -> type[BaseModel] | None:
    """The model of the items of `tuple[Model, ...]` / `list[Model]` / `dict[str, Model]`."""
    for item in unwrap(annotation):
        origin = typing.get_origin(item)
        args = typing.get_args(item)
        if origin in (tuple, list) and args:
            return model_of(args[0])
        if origin is dict and len(args) == 2:
            return model_of(args[1])
    return None


class RawSection:
    """One mapping of the raw config and the model describing it."""

    def __init__(self, model: type[BaseModel], data: Mapping[str, object], loc: Loc) -> None:
        self.model = model
        self.data = data
        self.loc = loc

    @classmethod
    def of(cls, model: type[BaseModel], data: object, loc: Loc = ()) -> RawSection | None:
        if not isinstance(data, Mapping):
            return None
        return cls(model, {str(k): v for k, v in data.items()}, loc)

    def path(self, *parts: int | str) -> str:
        return key_path((*self.loc, *parts))

    def field(self, name: str) -> FieldInfo:
        return self.model.model_fields[name]

    def present(self, name: str) -> bool:
        return name in self.data

    def value(self, name: str) -> object | None:
        """The field validated on its own; its default when absent; None when invalid."""
        if name not in self.data:
            field = self.field(name)
            return None if field.is_required() else field.get_default(call_default_factory=True)
        try:
            value: object = _adapter(self.model, name).validate_python(self.data[name])
        except ValidationError:
            return None
        return value

    def typed(self, name: str, kind: type[T]) -> T | None:
        value = self.value(name)
        return value if isinstance(value, kind) else None

    def number(self, name: str) -> float | None:
        value = self.value(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def texts(self, name: str) -> tuple[str, ...] | None:
        value = self.value(name)
        if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            return value
        return None

    def section(self, name: str) -> RawSection | None:
        """The sub-model at `name`; when absent, its default (None when that is None)."""
        model = model_of(self.field(name).annotation)
        if model is None:
            return None
        if name in self.data:
            return RawSection.of(model, self.data[name], (*self.loc, name))
        default = self.field(name).get_default(call_default_factory=True)
        return RawSection(model, {}, (*self.loc, name)) if isinstance(default, BaseModel) else None

    def items(self, name: str) -> Iterator[RawSection]:
        """The entries of a list (by index) or mapping (by key) of sub-models that are mappings."""
        model = item_model_of(self.field(name).annotation)
        raw = self.data.get(name)
        if model is None:
            return
        if isinstance(raw, list):
            for index, entry in enumerate(raw):
                if (found := RawSection.of(model, entry, (*self.loc, name, index))) is not None:
                    yield found
        elif isinstance(raw, Mapping):
            for key, entry in raw.items():
                if (found := RawSection.of(model, entry, (*self.loc, name, str(key)))) is not None:
                    yield found
