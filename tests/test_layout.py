"""The package's layout rules that a grep can check: every Proxmox API path lives in pve/ (and
in lab/, the simulated Proxmox). A path anywhere else means a Proxmox call that bypasses the
client's one transport and one exception map."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pxproxy

PACKAGE = Path(pxproxy.__file__).parent
ALLOWED = ("pve", "lab")
# Proxmox API roots, at the start of a literal or after a value (`f"{base}/nodes/..."`); any
# mention of /api2/json. A literal with no whitespace is a path being built; prose that names
# an endpoint in a message has spaces and is left alone, and so do pxproxy's own /api/v1 paths.
API_PATH = re.compile(
    r"/api2/json|(?:^|\{\})/(?:nodes|cluster|access|pools|storage|version)(?:/|\?|$)"
)


def _outside_pve() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] not in ALLOWED:
            yield path


def _literal_texts(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every string literal, f-strings joined with `{}` where their values go."""
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                for v in node.values
            ]
            inside_fstring.update(id(v) for v in node.values)
            yield node.lineno, "".join(parts)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in inside_fstring
        ):
            yield node.lineno, node.value


def api_paths(source: str) -> list[tuple[int, str]]:
    return [
        (line, text)
        for line, text in _literal_texts(ast.parse(source))
        if not any(ch.isspace() for ch in text) and API_PATH.search(text)
    ]


def test_the_detector_finds_paths_and_spares_prose() -> None:
    source = '''
async def f(client, node, base):
    await client.get(f"/nodes/{node}/status")
    await client.get("/cluster/resources")
    url = f"{base}/api2/json/access/ticket"
    log.info("cluster %s: /cluster/resources entry rejected", node)
    """One `/nodes/{node}/status` answer."""
'''
    assert sorted(line for line, _ in api_paths(source)) == [3, 4, 5]


def test_no_proxmox_api_path_outside_pve_and_lab() -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
        for path in _outside_pve()
        for line, text in api_paths(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "Proxmox API paths outside pxproxy/pve/:\n" + "\n".join(found)


def test_grep_nodes_finds_only_pve_and_lab() -> None:
    """The issue's own check, `grep -rn "/nodes/" pxproxy`, comments and docstrings included."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{n}"
        for path in _outside_pve()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "/nodes/" in line
    ]
    assert found == []
