"""Routes a guest declares in its Proxmox notes (the config's `description`, Markdown).

The notes hold a fenced block, three backticks and `yaml` (or `yml`), whose top-level key is
`pxproxy:`; other code blocks are left alone:

    ```yaml
    pxproxy:
      routes:
        - host: wiki.example.com
          port: 8080
          idle: {timeout: 15m}
    ```

A single route's keys may stand in place of `routes:`. The keys are a config route's but
`guest`: the route goes to the guest whose notes declare it.

Anyone who may edit a guest's notes writes this text, so it is read defensively: the notes are
scanned line by line (no backtracking regex) up to a size limit, the block is limited to 8 KiB,
YAML is read with safe_load's types and without anchors or aliases (notes_yaml.py), and a
guest's notes may not make pxproxy start other guests (`idle.depends_on`) nor run commands in
the guest (`idle.before_stop`, which runs as root there). Every problem is a
`NotesError` whose message names the key path, as the config's errors do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml
from pydantic import ValidationError

from ..config.models import Config, RouteConfig
from ..config.problems import Loc, Problem, key_path
from ..config.raw_view import RawSection
from ..config.semantics import duration_problems, host_problems
from ..config.wording import describe_errors, value_kind
from .notes_yaml import UnsafeYamlError, load_notes_yaml

# Proxmox's API takes at most 8192 characters of description; a hand-edited config may hold
# more. Beyond this the notes are refused unread.
MAX_NOTES_CHARS = 64 * 1024
MAX_BLOCK_BYTES = 8 * 1024
MAX_ROUTES = 32
MAX_PROBLEMS_SHOWN = 5
MAX_MESSAGE_CHARS = 1000
FENCE = "```"
_YAML_INFO = ("yaml", "yml")
_TOP_KEY = "pxproxy"
# What YAML refuses to read (C0 but tab/LF/CR, DEL, C1, lone surrogates, non-characters):
# found up front so the message names the line. A character class: linear, no backtracking.
_BAD_CHAR_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


class NotesError(Exception):
    """A guest's notes declare no usable routes; the message says what to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class _Block:
    """A fenced ```yaml block: the line of its opening fence (1-based) and its lines."""

    fence_line: int
    lines: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def counts(self) -> bool:
        """A pxproxy block: `pxproxy:` is one of its top-level keys."""
        return any(_is_top_key(line) for line in self.lines)

    def notes_line(self, block_line: int) -> int:
        """The line of the notes holding line `block_line` (0-based) of the block."""
        return self.fence_line + 1 + block_line


def parse_notes(description: str, guest_ref: str) -> tuple[RouteConfig, ...]:
    """The routes the notes declare, each to `guest_ref` ("cluster:vmid"); () without a
    pxproxy block. Raises NotesError."""
    if len(description) > MAX_NOTES_CHARS:
        raise NotesError(
            f"the notes are {len(description)} characters long; pxproxy reads notes of at "
            f"most {MAX_NOTES_CHARS // 1024} KiB"
        )
    blocks = [b for b in _yaml_blocks(description) if b.counts]
    if not blocks:
        return ()
    if len(blocks) > 1:
        lines = ", ".join(str(b.fence_line) for b in blocks)
        raise NotesError(
            f"{len(blocks)} ```yaml blocks with pxproxy: (on lines {lines}); put every route "
            "in one block"
        )
    block = blocks[0]
    if not block.closed:
        raise NotesError(
            f"the ```yaml block on line {block.fence_line} is not closed: end it with a line "
            f"of three backticks ({FENCE})"
        )
    data = _load(block)
    return _routes(data, guest_ref)


# -- the Markdown ------------------------------------------------------------------------------


def _yaml_blocks(description: str) -> list[_Block]:
    """Every fenced block with info string yaml or yml, in order. Other fenced blocks are
    skipped whole (a ```yaml line inside a ```text block is text), as Markdown reads them."""
    blocks: list[_Block] = []
    current: _Block | None = None
    open_ticks = 0  # backticks of the open fence; 0 outside any fence
    for number, raw in enumerate(description.split("\n"), start=1):
        line = raw.removesuffix("\r")
        stripped = line.lstrip(" ")
        indented = len(line) - len(stripped) > 3  # Markdown: a fence is indented at most 3
        if open_ticks:
            ticks = _ticks(stripped)
            if not indented and ticks >= open_ticks and not stripped[ticks:].strip(" \t"):
                open_ticks = 0
                if current is not None:
                    current.closed = True
                    current = None
            elif current is not None:
                current.lines.append(line)
            continue
        ticks = _ticks(stripped)
        if indented or ticks < len(FENCE):
            continue
        open_ticks = ticks
        info = stripped[ticks:].strip(" \t").split(" ", 1)[0].lower()
        if info in _YAML_INFO:
            current = _Block(number)
            blocks.append(current)
    return blocks


def _ticks(text: str) -> int:
    return len(text) - len(text.lstrip("`"))


def _is_top_key(line: str) -> bool:
    if not line.startswith(_TOP_KEY):
        return False
    rest = line[len(_TOP_KEY) :].lstrip(" ")
    return rest.startswith(":")


# -- the YAML ----------------------------------------------------------------------------------


def _load(block: _Block) -> object:
    text = "\n".join(block.lines)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BLOCK_BYTES:
        raise NotesError(
            f"the pxproxy block on line {block.fence_line} is {size} bytes; a notes block may "
            f"hold at most {MAX_BLOCK_BYTES // 1024} KiB ({MAX_BLOCK_BYTES} bytes)"
        )
    for index, line in enumerate(block.lines):
        bad = _BAD_CHAR_RE.search(line)
        if bad is not None:
            raise NotesError(
                f"line {block.notes_line(index)}: holds the control character "
                f"U+{ord(bad.group()):04X}, which YAML does not allow"
            )
        content = line.lstrip(" \t")
        if "\t" in line[: len(line) - len(content)] and content and not content.startswith("#"):
            raise NotesError(
                f"line {block.notes_line(index)}: a tab in the indentation; YAML indents with "
                "spaces only"
            )
    try:
        return load_notes_yaml(text)
    except UnsafeYamlError as exc:
        where = f"line {block.notes_line(exc.line)}: " if exc.line is not None else ""
        raise NotesError(f"{where}{exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "cannot be read"
        if exc.context and problem.startswith("but "):
            problem = f"{exc.context}, {problem}"
        raise NotesError(f"{_where(block, exc.problem_mark)}not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise NotesError(f"not valid YAML: {exc}") from None
    except ValueError:
        # PyYAML converts integers with int(), which refuses more than 4300 digits.
        raise NotesError("not valid YAML: a number too long to read") from None


def _where(block: _Block, mark: yaml.Mark | None) -> str:
    return f"line {block.notes_line(mark.line)}: " if mark is not None else ""


# -- the routes --------------------------------------------------------------------------------


def _routes(data: object, guest_ref: str) -> tuple[RouteConfig, ...]:
    if not isinstance(data, Mapping) or _TOP_KEY not in data:
        raise NotesError(f"the block's top level must be a mapping with the key {_TOP_KEY}:")
    extra = [k for k in data if k != _TOP_KEY]
    if extra:
        raise NotesError(
            f"{_key(extra[0])}: unknown key; a notes block holds only {_TOP_KEY}: at its top"
        )
    entries = _entries(data[_TOP_KEY])
    problems: list[Problem] = []
    routes: list[RouteConfig] = []
    for loc, raw in entries:
        route = _route(loc, raw, guest_ref, problems)
        if route is not None:
            routes.append(route)
    sections = [RawSection(RouteConfig, {**raw, "guest": guest_ref}, loc) for loc, raw in entries]
    problems.extend(host_problems(sections))
    problems.extend(duration_problems(RawSection(Config, {}, ()), sections))
    if problems:
        raise NotesError(_summary(problems))
    return tuple(routes)


def _entries(body: object) -> list[tuple[Loc, dict[str, object]]]:
    """(key path, raw route) of each route: the `routes:` list or the single mapping."""
    top: Loc = (_TOP_KEY,)
    if body is None:
        raise NotesError(
            f"{_TOP_KEY}: empty; give routes: [...] or one route's keys (host, port, ...)"
        )
    if not isinstance(body, Mapping):
        raise NotesError(
            f"{_TOP_KEY}: must be a mapping (key: value lines), not {value_kind(body)}"
        )
    if "routes" not in body:
        return [(top, _mapping(top, body))]
    others = [k for k in body if k != "routes"]
    if others:
        raise NotesError(
            f"{key_path((*top, _key(others[0])))}: unknown key beside routes: give either "
            "routes: [...] or one route's keys, not both"
        )
    items = body["routes"]
    loc: Loc = (*top, "routes")
    if not isinstance(items, list):
        raise NotesError(
            f"{key_path(loc)}: must be a list of routes (a '- host: ...' entry each), "
            f"not {value_kind(items)}"
        )
    if len(items) > MAX_ROUTES:
        raise NotesError(
            f"{key_path(loc)}: {len(items)} routes; notes may declare at most {MAX_ROUTES}"
        )
    return [((*loc, i), _mapping((*loc, i), item)) for i, item in enumerate(items)]


def _mapping(loc: Loc, value: object) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise NotesError(
            f"{key_path(loc)}: must be a mapping (key: value lines, or {{key: value}}), "
            f"not {value_kind(value)}"
        )
    for key in value:
        if not isinstance(key, str):
            raise NotesError(f"{key_path(loc)}: the key {_key(key)} is not a name")
    return {str(k): v for k, v in value.items()}


def _route(
    loc: Loc, raw: dict[str, object], guest_ref: str, problems: list[Problem]
) -> RouteConfig | None:
    refused = False
    if "guest" in raw:
        problems.append(
            Problem(
                key_path((*loc, "guest")),
                f"not allowed in notes: the route goes to this guest ({guest_ref})",
            )
        )
        refused = True
    idle = raw.get("idle")
    if isinstance(idle, Mapping) and "depends_on" in idle:
        problems.append(
            Problem(
                key_path((*loc, "idle", "depends_on")),
                "not allowed in notes: a guest's notes cannot make pxproxy start other "
                "guests; declare this route in pxproxy's config instead",
            )
        )
        refused = True
    if isinstance(idle, Mapping) and "before_stop" in idle:
        problems.append(
            Problem(
                key_path((*loc, "idle", "before_stop")),
                "not allowed in notes: whoever may edit a guest's notes could run any "
                "command as root in the guest; declare this route in pxproxy's config instead",
            )
        )
        refused = True
    try:
        route = RouteConfig.model_validate({**raw, "guest": guest_ref})
    except ValidationError as exc:
        for sub, problem in describe_errors(exc, RouteConfig):
            if sub[:1] != ("guest",):
                problems.append(Problem(key_path((*loc, *sub)), problem.message))
        return None
    return None if refused else route


def _summary(problems: Sequence[Problem]) -> str:
    shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS_SHOWN])
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown += f"; and {len(problems) - MAX_PROBLEMS_SHOWN} more"
    text = shown if len(problems) == 1 else f"{len(problems)} problems: {shown}"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _key(key: object) -> str:
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 60 else text[:59] + "…"
