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
    assert {m["name"] for m in modules} == {"termite._move._framestate", "termite._net._fastcodec",
                                            "termite._net._zmqcalls"}
    assert all(m.get("optional") is True for m in modules)
