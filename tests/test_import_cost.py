"""``import termite`` and a node's start stay cheap: what only a client needs is imported on first use.

Every node and every client imports termite; on a small machine that time is
taken from the work it runs (issue 20: ``pytest --termite``'s nodes start
while its tests run).  The executor and its progress bars pull in rich, and
``__version__`` importlib.metadata, so ``termite.Executor``,
``termite.progress`` and ``termite.__version__`` import their modules when
first read (termite/__init__.py), and the executor imports the bars only to
draw one.  A module the bare interpreter imports by
itself (a site hook) does not count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules neither ``import termite`` nor a running node may import.
ON_FIRST_USE_ONLY = ("rich", "importlib.metadata", "termite.executor", "termite.progress_bars", "termite._version")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=_env())


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _bare_modules() -> set[str]:
    """What the interpreter imports before running any code of ours (site and its .pth hooks)."""
    done = _python("import json, sys; print(json.dumps(sorted(sys.modules)))")
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def _dear(modules: set[str]) -> list[str]:
    """The modules of ON_FIRST_USE_ONLY among ``modules`` (or one of their submodules)."""
    return [dear for dear in ON_FIRST_USE_ONLY if any(m == dear or m.startswith(dear + ".") for m in modules)]


def test_import_termite_leaves_out_the_executor_rich_and_the_version():
    done = _python("import json, sys; import termite; print(json.dumps(sorted(sys.modules)))")
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout)) - _bare_modules()
    assert "termite._runtime.node" in imported  # the check sees termite's own imports
    assert not _dear(imported), f"import termite imported {_dear(imported)}: import them on first use"


def test_the_executor_imports_rich_only_to_draw_a_bar():
    """The launcher and pytest --termite import termite.executor (local_address_towards), and draw no bar."""
    done = _python(
        "import json, sys\n"
        "import termite\n"
        "termite.Executor\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert done.returncode == 0, done.stderr
    imported = set(json.loads(done.stdout)) - _bare_modules()
    assert "termite.executor" in imported
    assert "rich" not in imported and "termite.progress_bars" not in imported, "rich is for the bars alone"


@pytest.mark.timeout(60)
def test_a_running_node_imports_none_of_them(tmp_path):
    """``python -m termite.node`` (as the launcher starts it), from its start until it stops on SIGTERM."""
    log = tmp_path / "importtime.log"
    with open(log, "w") as stderr:
        node = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "termite.node", "--port", "0", "--insecure"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=_env(),
        )  # fmt: skip
        try:
            announced = node.stdout.readline()
            assert announced.startswith("termite node "), log.read_text()[-3000:]
            node.send_signal(signal.SIGTERM)
            assert node.wait(20) == 0, log.read_text()[-3000:]
        finally:
            if node.poll() is None:
                node.kill()
                node.wait(10)
            node.stdout.close()
    imported = {
        line.split("|")[2].strip() for line in log.read_text().splitlines() if line.startswith("import time:")
    } - _bare_modules()
    assert "termite._runtime.node" in imported  # -X importtime reported the node's imports
    assert not _dear(imported), f"a node imported {_dear(imported)}: import them on first use"


def test_the_names_imported_on_first_use_still_resolve():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    done = _python(
        "import json, sys\n"
        "import termite\n"
        "listed = {name: (name in dir(termite), name in termite.__all__) for name in ('Executor', 'progress')}\n"
        "from termite import Executor, progress, __version__\n"
        "import termite.executor, termite.progress_bars\n"
        "try:\n"
        "    termite.no_such_name\n"
        "except AttributeError as error:\n"
        "    missing = str(error)\n"
        "print(json.dumps({\n"
        "    'listed': listed, 'version_in_dir': '__version__' in dir(termite), 'version': __version__,\n"
        "    'same': [Executor is termite.executor.Executor, progress is termite.progress_bars.progress,\n"
        "             termite.Executor is Executor, termite.progress is progress],\n"
        "    'modules': [Executor.__module__, progress.__module__], 'missing': missing,\n"
        "}))\n"
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["listed"] == {"Executor": [True, True], "progress": [True, True]}
    assert seen["version_in_dir"] and seen["version"] == project["version"]
    assert seen["same"] == [True, True, True, True]
    assert seen["modules"] == ["termite", "termite"]  # public names live at termite.X, as the others do
    assert seen["missing"] == "module 'termite' has no attribute 'no_such_name'"
