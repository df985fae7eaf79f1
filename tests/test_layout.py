"""The product does not depend on the tests: no module under workflows/, activities/, starter/ or
worker.py imports `tests` (issue 14, 1b). The simulators `dev` and `demo` run live in
starter/simulators/, and the package ships no `tests.*`."""

from __future__ import annotations

import ast
from pathlib import Path

import setuptools

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [ROOT / "workflows", ROOT / "activities", ROOT / "starter", ROOT / "worker.py"]


def product_modules() -> list[Path]:
    files: list[Path] = []
    for p in PRODUCT:
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return files


def imports_of(path: Path) -> list[str]:
    """Every module name an import statement in `path` names (anywhere: top level, functions, `if`)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_product_module_imports_tests() -> None:
    files = product_modules()
    assert ROOT / "starter" / "simulators" / "slack.py" in files
    offenders = [
        f"{f.relative_to(ROOT)}: {name}"
        for f in files
        for name in imports_of(f)
        if name == "tests" or name.startswith("tests.")
    ]
    assert offenders == []


def test_the_walk_sees_nested_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from tests.support import x\n    import tests\n")
    assert imports_of(src) == ["tests.support", "tests"]


def test_the_package_holds_the_simulators_and_no_tests() -> None:
    import tomllib

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert "starter.simulators" in packages
    assert not [p for p in packages if p == "tests" or p.startswith("tests.")]
