"""Keeps, of the generated Codex protocol models, only those work-ally's code names and what they refer to.

The schema of a Codex release makes ~2,000 models; the code validates a few dozen, which with
everything they refer to are ~350. Creating a pydantic model class costs memory even with
`defer_build` (its fields, its signature, its namespace): the whole module was 31 MiB over pydantic
in the runtime worker, the pruned one a few (docs/operations.md, "bench.footprint"). Validation is
unchanged: a kept model is the generated class, byte for byte, with every model it refers to.

    .venv/bin/python -m dev.prune_protocol GENERATED OUTPUT

The names come from the repository's own Python files (`from ally.codex.protocol import X`,
`from ally.codex import protocol` then `protocol.X`). A new use of a model that is not kept fails
mypy ("Module has no attribute"); rerun dev/regen_protocol and it is kept.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "ally.codex.protocol"
SCANNED = ("ally", "activities", "workflows", "workers", "bench", "dev", "tests")
SKIPPED = (ROOT / "ally" / "codex" / "protocol.py", ROOT / "dev" / "codex")


def python_files() -> list[Path]:
    files: list[Path] = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not any(path == skip or skip in path.parents for skip in SKIPPED):
                files.append(path)
    return files


def names_used(source: str) -> set[str]:
    """The protocol names one file refers to."""
    tree = ast.parse(source)
    used: set[str] = set()
    aliases = set()  # local names bound to the module itself
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == MODULE:
            used |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == MODULE.rpartition(".")[0]:
            aliases |= {alias.asname or alias.name for alias in node.names if alias.name == "protocol"}
        elif isinstance(node, ast.Import):
            aliases |= {alias.asname for alias in node.names if alias.name == MODULE and alias.asname}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = ast.unparse(node.value)
            if (owner in aliases or owner == MODULE) and not node.attr.startswith("__"):
                used.add(node.attr)
    return used


def definitions(tree: ast.Module) -> dict[str, ast.stmt]:
    found: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def referred(node: ast.stmt, known: dict[str, ast.stmt]) -> set[str]:
    """Names of other definitions a definition refers to, forward references (strings) included."""
    found: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and inner.id in known:
            found.add(inner.id)
        elif isinstance(inner, ast.Constant) and isinstance(inner.value, str):
            # a quoted forward reference may be a bare name or an expression such as "list[X] | None"
            try:
                expression = ast.parse(inner.value, mode="eval")
            except SyntaxError:
                continue
            found |= {n.id for n in ast.walk(expression) if isinstance(n, ast.Name) and n.id in known}
    return found


def closure(roots: set[str], known: dict[str, ast.stmt]) -> set[str]:
    kept: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in kept:
            kept.add(name)
            pending += referred(known[name], known) - kept
    return kept


def prune(generated: str, roots: set[str]) -> str:
    tree = ast.parse(generated)
    known = definitions(tree)
    missing = sorted(roots - known.keys())
    if missing:
        names = ", ".join(missing)
        raise SystemExit(f"prune_protocol: the code uses {names}, which this release's schema lacks")
    kept = closure(roots, known)
    lines = generated.splitlines()
    first = next(n for n in tree.body if isinstance(n, ast.ClassDef | ast.Assign))
    header = "\n".join(lines[: first.lineno - 1]).rstrip()
    blocks = [
        "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.Assign) and _defines(node) & kept
    ]
    return "\n\n\n".join([header, *blocks]) + "\n"


def _defines(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {target.id for target in node.targets if isinstance(target, ast.Name)}
    return set()


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m dev.prune_protocol GENERATED OUTPUT")
    generated, output = Path(sys.argv[1]), Path(sys.argv[2])
    roots: set[str] = set()
    for path in python_files():
        roots |= names_used(path.read_text())
    output.write_text(prune(generated.read_text(), roots))


if __name__ == "__main__":
    main()
