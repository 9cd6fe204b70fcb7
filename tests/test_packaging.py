"""pyproject.toml: what an install of termite holds."""

import os
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.timeout(10)


def _setuptools():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def test_every_termite_package_is_installed():
    # An install without one (termite._behaviours was left out once) fails at `import termite`.
    found = {
        os.path.relpath(folder, ROOT).replace(os.sep, ".")
        for folder, _, files in os.walk(os.path.join(ROOT, "termite"))
        if "__init__.py" in files
    }
    assert found <= set(_setuptools()["packages"])


def test_the_c_extensions_are_optional():
    # Without a C compiler the install goes on, in pure Python (live migration then says why it cannot run).
    modules = _setuptools()["ext-modules"]
    assert {m["name"] for m in modules} == {"termite._core._kernelcore", "termite._move._framestate",
                                            "termite._net._fastcodec", "termite._net._zmqcalls"}
    assert all(m.get("optional") is True for m in modules)


_PURE_PYTHON_CHECK = """
import importlib.util, termite
from termite._move import continuation
assert not termite.__file__.startswith({root!r}), termite.__file__  # the installed copy, not the source tree
missing = [m for m in ("termite._core._kernelcore", "termite._move._framestate", "termite._net._fastcodec",
                       "termite._net._zmqcalls")
           if importlib.util.find_spec(m) is None]
assert len(missing) == 4, missing
from termite._core.kernel import KERNEL
assert KERNEL == "python", KERNEL  # the pure-Python kernel, in its place

async def echo():
    me = termite.self()
    termite.send(me, "hello")
    return await termite.receive(str, timeout=5)

assert termite.run(echo) == "hello"
try:
    continuation.capture(None)
except termite.MigrationError as exc:
    print("migration:", exc)
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_install_without_a_c_compiler_runs_in_pure_python(tmp_path):
    """pip install with CC=/bin/false: the extensions fail to build, the install does not, and
    termite runs (slower) while migration says what it lacks and how to get it."""
    import shutil
    import site
    import subprocess
    import sys

    source = tmp_path / "source"  # a copy: pip builds in the tree it is given
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    # termite's dependencies from this environment (a venv of a venv would not see them), after the new
    # venv's own packages, so the copy installed there is the one imported
    own = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                         text=True, check=True).stdout.strip()
    with open(os.path.join(own, "_tests_dependencies.pth"), "w") as pth:
        pth.write("\n".join(site.getsitepackages()) + "\n")
    env = dict(os.environ, CC="/bin/false", CXX="/bin/false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-cache-dir", str(source)],
                             env=env, capture_output=True, text=True, timeout=500)
    if install.returncode != 0 and any(word in install.stdout + install.stderr for word in (
            "NewConnectionError", "Could not find a version that satisfies the requirement setuptools")):
        pytest.skip("the package index is out of reach: pip cannot fetch setuptools to build with")
    assert install.returncode == 0, (install.stdout + install.stderr)[-3000:]
    unset = {k: v for k, v in os.environ.items() if k != "TERMITE_KERNEL"}  # the default: whichever is built
    ran = subprocess.run([python, "-c", _PURE_PYTHON_CHECK.format(root=str(ROOT))], cwd=tmp_path,
                         env=unset, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "termite._move._framestate was not built" in ran.stdout and "C compiler" in ran.stdout, ran.stdout
