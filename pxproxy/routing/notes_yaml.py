"""YAML for text anyone who may edit a guest's notes wrote: safe_load's types only, no anchors
or aliases (an alias bomb is refused before anything is built), and a bounded nesting depth
(PyYAML composes recursively, so a deep `[[[[...]]]]` would otherwise hit the stack limit)."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import Node

MAX_DEPTH = 16


class UnsafeYamlError(yaml.YAMLError):
    """A construct pxproxy refuses in notes, with where it is in the block."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line  # 0-based, in the block


class _NotesLoader(yaml.SafeLoader):
    """safe_load's loader, checking each node's event before composing it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line if event.start_mark is not None else None
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            raise UnsafeYamlError(f"YAML aliases (*{anchor}) are not allowed in notes", line)
        if anchor:
            raise UnsafeYamlError(f"YAML anchors (&{anchor}) are not allowed in notes", line)
        if self._depth >= MAX_DEPTH:
            raise UnsafeYamlError(f"nested more than {MAX_DEPTH} levels deep", line)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_notes_yaml(text: str) -> object:
    """One YAML document, as yaml.safe_load would give it, minus anchors, aliases and depth.

    Raises yaml.YAMLError (UnsafeYamlError for what pxproxy refuses) or ValueError (PyYAML
    converts a number of more than 4300 digits with int(), which refuses it)."""
    loader = _NotesLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
