"""Imports follow the data flow: events -> streams -> assignments -> models -> replicas.

Each package may import the packages listed for it (``rarecvr`` is the shared vocabulary and
clients; the CLI loads stage commands by name). The imports that still run against the flow
are listed with the reason; the test fails on a new one, and on a listed one that is gone (so
that the list only shrinks).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MAY_IMPORT = {
    "rarecvr": set(),
    "simulator": {"rarecvr"},
    "streams": {"rarecvr"},
    "stabilizer": {"rarecvr", "streams"},
    "model": {"rarecvr"},
    "trainer": {"rarecvr", "model", "stabilizer"},
    "deploy": {"rarecvr", "model", "stabilizer"},
    "research": {"rarecvr", "simulator", "model"},
    "abtest": {"rarecvr", "simulator", "stabilizer", "model", "research"},
    "bench": {
        "rarecvr",
        "simulator",
        "streams",
        "stabilizer",
        "model",
        "trainer",
        "deploy",
        "research",
        "abtest",
    },
}

#: (module, package it imports): why it is still there (issue 28 moves each)
AGAINST_THE_FLOW = {
    ("streams/commands.py", "stabilizer"): "the worker command plugs the stabilizer in",
    ("deploy/demo.py", "simulator"): "the demo drives the simulator",
}


def imported_packages(path: Path) -> set[str]:
    """The project packages a module imports (absolute imports, anywhere in the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & MAY_IMPORT.keys()


def test_every_import_follows_the_flow_or_is_a_listed_exception():
    against = set()
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            against |= {(module, p) for p in imported_packages(path) - allowed - {package}}
    assert against - AGAINST_THE_FLOW.keys() == set(), "imports against the data flow"
    assert AGAINST_THE_FLOW.keys() - against == set(), "gone: remove them from the list"


def test_the_cli_imports_no_stage_until_a_command_runs():
    assert imported_packages(ROOT / "rarecvr" / "cli.py") == {"rarecvr"}
