"""The runtime's layout (docs/contributing.md, "Where things go"): rooms, not a flat heap.

Reads edgellm/'s sources with `ast` (nothing is imported): at most 20 modules and packages at
edgellm/'s top level, every package says what it holds, and no two modules import each other
at run time (imports under `if TYPE_CHECKING:` are for types only and do not count).
"""

import ast
from pathlib import Path

import pytest

EDGELLM = Path(__file__).resolve().parent.parent / "edgellm"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(EDGELLM.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in EDGELLM.rglob("*.py") if "static" not in p.parts}


def runtime_imports(path: Path) -> set[str]:
    """The edgellm modules that `path` imports when it runs (at import time or in a function)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(node):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from pkg import sub` imports the module pkg.sub when there is one
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in MODULES and m != name}


def test_no_two_modules_import_each_other():
    imports = {name: runtime_imports(path) for name, path in MODULES.items()}
    mutual = sorted({tuple(sorted((a, b))) for a, targets in imports.items() for b in targets if a in imports[b]})
    assert mutual == []


def test_the_top_level_holds_at_most_20_rooms_and_each_package_says_what_it_holds():
    top = [p for p in EDGELLM.iterdir() if (p.suffix == ".py" and p.name != "__main__.py")
           or (p.is_dir() and (p / "__init__.py").is_file())]
    assert len(top) <= 20, sorted(p.name for p in top)
    for package in (p for p in top if p.is_dir()):
        assert ast.get_docstring(ast.parse((package / "__init__.py").read_text())), package


@pytest.mark.parametrize("name", ["load", "Generator", "GenerationConfig", "ModelConfig", "Tokenizer", "constraints"])
def test_documented_names_are_importable_from_edgellm(name):
    import edgellm

    assert getattr(edgellm, name) is not None
    assert name in dir(edgellm)
