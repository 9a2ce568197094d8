"""The two locks: production installs only what `cbstop` runs, development adds to it at the
same pins, and every package the service imports is declared directly."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Used by name in a string, not imported: `loop="uvloop"` and uvicorn's httptools protocol.
RUN_WITHOUT_IMPORT = {"uvloop", "httptools"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: str) -> dict[str, str]:
    text = (REPO / lock).read_text(encoding="utf-8")
    return {
        _normal(m[1]): m[2]
        for m in re.finditer(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==(\S+)", text, re.M)
    }


def _declared(group: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {_normal(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in specs}


def _imported_distributions() -> dict[str, set[str]]:
    """Third-party distribution -> the cbstop modules that import it."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (REPO / "cbstop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "cbstop" or top in sys.stdlib_module_names:
                    continue
                for dist in owners.get(top, [top]):
                    found.setdefault(_normal(dist), set()).add(str(path.relative_to(REPO)))
    return found


def test_every_package_the_service_imports_is_a_direct_runtime_dependency() -> None:
    runtime = _declared()
    missing = {d: m for d, m in _imported_distributions().items() if d not in runtime}
    assert not missing, f"imported by cbstop/ but not in [project] dependencies: {missing}"
    assert runtime >= RUN_WITHOUT_IMPORT


def test_the_runtime_lock_holds_every_runtime_dependency_and_no_development_tool() -> None:
    pins = _pins("requirements.lock")
    assert _declared() <= pins.keys()
    development_only = {
        "fastapi",
        "starlette",
        "pytest",
        "mypy",
        "ruff",
        "schemathesis",
        "standardwebhooks",
    }
    assert not development_only & pins.keys()


def test_the_development_lock_has_the_runtime_locks_pins_and_the_dev_extra() -> None:
    runtime, development = _pins("requirements.lock"), _pins("requirements-dev.lock")
    differ = {n: (v, development.get(n)) for n, v in runtime.items() if development.get(n) != v}
    assert not differ, f"make lock: the locks disagree (runtime, dev): {differ}"
    assert _declared("dev") <= development.keys()
