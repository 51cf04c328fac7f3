"""The import rules of docs/architecture.md, checked: a change that breaks one fails here.

Static rules (who may import whom, at any depth, lazily or not) are import-linter contracts in
pyproject.toml. What must stay lazy (training code in the hub, numpy in the operator's monitor)
is checked by importing in a fresh interpreter and looking at what was loaded, because a static
graph cannot tell an import at the top of a module from one inside a function.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold() -> None:
    # Contracts: agent and hub never import each other; protocol imports neither (nor sim or
    # models); the agent's import path has no numpy, onnxruntime or sqlite-utils (a Pi Zero).
    # In a process of its own: import-linter reconfigures logging, which other tests read.
    lint = (
        "from importlinter.cli import lint_imports\nraise SystemExit(lint_imports(no_cache=True))"
    )
    result = subprocess.run(
        [sys.executable, "-c", lint], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _loaded_after(code: str) -> set[str]:
    """Top-level modules loaded by ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_hub_loads_training_code_and_onnxruntime_only_when_used() -> None:
    loaded = _loaded_after("import hub.app, hub.cli.main")
    assert "models" not in loaded
    assert "onnxruntime" not in loaded
    assert "sklearn" not in loaded


def test_the_operators_monitor_runs_without_numpy() -> None:
    """`pip install 'coopwatt[ops]'` on a laptop: no numpy, no onnxruntime, no sqlite-utils."""
    blocked = "import sys\n" + "".join(
        f"sys.modules[{m!r}] = None\n" for m in ("numpy", "onnxruntime", "sqlite_utils")
    )
    run = "from hub.cli.main import main\nmain(['monitor', '--help'], standalone_mode=False)\n"
    result = subprocess.run(
        [sys.executable, "-c", blocked + run], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--once" in result.stdout
    assert "numpy" not in _loaded_after("import hub.cli.main, hub.ops.monitor, hub.config")


def test_a_command_that_needs_the_hub_extra_says_so_without_numpy() -> None:
    blocked = "import sys\nsys.modules['numpy'] = None\nsys.modules['sqlite_utils'] = None\n"
    run = "from hub.cli.main import main\nmain(['forecast', '--help'])\n"
    result = subprocess.run(
        [sys.executable, "-c", blocked + run], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "coopwatt[hub]" in result.stderr and "Traceback" not in result.stderr


def test_every_command_is_found_in_the_module_that_defines_it() -> None:
    import importlib

    from hub.cli.main import COMMAND_MODULES

    defined = {
        command.name: module
        for module in sorted(set(COMMAND_MODULES.values()))
        for command in importlib.import_module(module).COMMANDS
    }
    assert defined == COMMAND_MODULES
