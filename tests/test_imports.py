"""The import directions of issue 14: one door to Temporal.

`starter/client.py` is the library the CLI, the Slack bridge, the dev stack and bench use; `starter/cli.py`
parses and prints. So nothing in starter/ imports `activities`, `worker` or `starter.cli`. The one
exception is the CLI's own commands that run a worker (`worker`, `dev`, `demo`): they import worker.py
lazily, inside a function, so importing the CLI never loads the worker.
"""

from __future__ import annotations

import ast
from pathlib import Path

STARTER = Path(__file__).resolve().parent.parent / "starter"
FORBIDDEN = ("activities", "worker", "starter.cli")


def _names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement loads: `from starter import cli` loads `starter.cli`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _forbidden(name: str) -> str | None:
    return next((f for f in FORBIDDEN if name == f or name.startswith(f + ".")), None)


def bad_imports(source: str, filename: str) -> list[str]:
    """Each import of a forbidden module in `source`, as "file:line: module (where)". A lazy import of
    `worker` (inside a function) is allowed in starter/cli.py only."""
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in _names(child):  # one finding per statement: its first forbidden module
                    hit = _forbidden(name)
                    if hit is None:
                        continue
                    if not (in_function and hit == "worker" and filename == "cli.py"):
                        where = "inside a function" if in_function else "at module level"
                        found.append(f"{filename}:{child.lineno}: {name} ({where})")
                    break
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(source, filename), False)
    return found


def test_starter_imports_no_activities_worker_or_cli() -> None:
    files = sorted(STARTER.rglob("*.py"))  # the simulators too
    assert any(f.name == "client.py" for f in files)
    bad = [hit for f in files for hit in bad_imports(f.read_text(encoding="utf-8"), f.name)]
    assert bad == [], "starter/ must go through starter/client.py, not activities/, worker.py or the CLI"


def test_the_check_sees_each_kind_of_import() -> None:
    source = (
        "import worker\n"
        "from activities.slack import make_web_client\n"
        "import activities.common as common\n"
        "from starter.cli import send_action\n"
        "from starter import cli\n"
        "from starter.client import send_action\n"  # allowed: the client is not the CLI
        "from starter import client, config\n"
        "if True:\n"
        "    from worker import create_worker\n"  # still module level
        "def f():\n"
        "    from worker import create_worker\n"
        "    from starter.cli import cli\n"
    )
    module_level = [
        "worker (at module level)",
        "activities.slack (at module level)",
        "activities.common (at module level)",
        "starter.cli (at module level)",
        "starter.cli (at module level)",
        "worker (at module level)",
    ]
    assert [hit.split(": ", 1)[1] for hit in bad_imports(source, "bridge.py")] == [
        *module_level,
        "worker (inside a function)",
        "starter.cli (inside a function)",
    ]
    # the CLI's commands that run a worker may import it lazily; nothing else is allowed there either
    assert [hit.split(": ", 1)[1] for hit in bad_imports(source, "cli.py")] == [
        *module_level,
        "starter.cli (inside a function)",
    ]


# ------------------------------------------------------------------------------- inside workflows/

WORKFLOWS = STARTER.parent / "workflows"
#: The deploy's modules, each importing only those of a lower rank (docs/architecture.md, "Inside
#: `workflows/`"); the other modules of workflows/ are pure and import none of these.
RANKS = {
    "state": 0,
    "trail": 1,
    "people": 2,
    "view": 3,
    "notices": 4,
    "calls": 5,
    "lifecycle": 6,
    "effects": 7,
    "watchers": 8,
    "handlers": 8,
    "deploy": 9,
}
#: A workflow module stays readable in one sitting; models.py holds every model and is data only.
MAX_LINES = 520


def _workflow_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The workflows.* modules an import loads, by their short names."""
    return [n.split(".")[1] for n in _names(node) if n.startswith("workflows.") and n.count(".") == 1]


def layer_violations(sources: dict[str, str]) -> list[str]:
    """Each import in `sources` (short module name → source) that points up or sideways in RANKS, or from
    a pure module into the deploy's modules, as "module → imported"."""
    found = []
    for module, source in sorted(sources.items()):
        rank = RANKS.get(module)
        for node in ast.walk(ast.parse(source, module)):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _workflow_modules(node):
                if name == module or name not in RANKS:
                    continue
                if rank is None or RANKS[name] >= rank:
                    found.append(f"{module} → {name}")
    return found


def test_the_deploys_modules_import_downwards_only() -> None:
    sources = {f.stem: f.read_text(encoding="utf-8") for f in WORKFLOWS.glob("*.py")}
    assert set(RANKS) <= set(sources), "a module of RANKS was renamed: update docs/architecture.md too"
    assert layer_violations(sources) == []


def test_the_layer_check_sees_an_upward_import() -> None:
    bad = {
        "view": "from workflows import notices, people\n",  # notices is above view
        "trail": "from workflows.effects import carry_out\n",
        "policy": "from workflows import state\n",  # a pure module
        "handlers": "from workflows import watchers\n",  # same rank: sideways
        "effects": "from workflows import lifecycle, messages\n",  # fine
    }
    assert layer_violations(bad) == [
        "handlers → watchers",
        "policy → state",
        "trail → effects",
        "view → notices",
    ]


def test_no_workflow_module_is_much_over_500_lines() -> None:
    long = {
        f.name: n
        for f in WORKFLOWS.glob("*.py")
        if f.name != "models.py" and (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
