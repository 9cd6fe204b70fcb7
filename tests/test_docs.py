"""Every ```python block of the documentation runs.

Each page (docs/**/*.md, and README.md) runs in a fresh Python process of its
own, its blocks in order in one namespace, as a doctest session does: a later
block uses what an earlier one defined.  The namespace is the process's
``__main__``, as for a user's script, so functions defined there travel to
other nodes by value, as the guide says they do.  A traceback names the page
and the line of the block it failed in.

A block that cannot run by itself (a shell command, a cluster.yaml, a script
that needs a running cluster) is fenced as ```sh, ```yaml or ```text: there is
no way to mark a python block as skipped, and ```py or ```python3 count as
python too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import termite

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
PYTHON_FENCES = {"python", "py", "python3"}
PAGE_SECONDS = 120  # one page's blocks, all together

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """The fenced blocks of a markdown text: (language, line of the first code line, code)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        language = (opening["info"].split() or [""])[0].strip("{}.").lower()
        start = i + 1
        i = start
        while i < len(lines) and not re.match(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start}: a {fence} block that is never closed")
        code = "\n".join(_dedent(line, indent) for line in lines[start:i])
        blocks.append((language, start + 1, code + "\n"))
        i += 1
    return blocks


def _dedent(line: str, indent: int) -> str:
    """A code line of a block whose fence is indented by ``indent`` (in a list item)."""
    return line[indent:] if line[:indent].strip() == "" else line.lstrip()


def python_blocks(page: Path) -> list[tuple[int, str]]:
    return [(line, code) for language, line, code in code_blocks(page.read_text()) if language in PYTHON_FENCES]


# Runs in the page's own process: each block compiled with the page's name and
# its line numbers, so a traceback points into the markdown file.
_RUNNER = r"""
import json, linecache, sys
page, blocks = json.load(sys.stdin)
text = open(page, encoding="utf-8").read()
linecache.cache[page] = (len(text), None, text.splitlines(True), page)
namespace = sys.modules["__main__"].__dict__
for line, code in blocks:
    print(f"== {page}:{line}", flush=True)
    exec(compile("\n" * (line - 1) + code, page, "exec"), namespace)
print("== all blocks ran", flush=True)
"""


def run_page(page: Path, cwd: Path) -> subprocess.CompletedProcess:
    blocks = python_blocks(page)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=cwd, env=env, start_new_session=True,  # its own group: nodes it starts go with it
    )
    try:
        out, err = proc.communicate(json.dumps([str(page), blocks]), timeout=PAGE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{page.relative_to(ROOT)}: its blocks did not finish within {PAGE_SECONDS} s\n{out}\n{err[-4000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a node a failed block left running
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


@pytest.mark.timeout(PAGE_SECONDS + 30)
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_python_block_of_the_page_runs(page, tmp_path):
    done = run_page(page, tmp_path)
    assert done.returncode == 0 and "== all blocks ran" in done.stdout, (
        f"{page.relative_to(ROOT)} failed (exit {done.returncode}); the last block started is the last == line\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )


def test_the_guide_has_code_that_runs():
    """The pages that teach the API carry python blocks (so the test above has work to do)."""
    names = {str(page.relative_to(ROOT)) for page in PAGES_WITH_CODE}
    for page in ["docs/getting-started.md", "docs/guide/processes.md", "docs/guide/failure.md",
                 "docs/guide/distribution.md", "docs/guide/migration.md", "docs/guide/dispatch.md"]:
        assert page in names, f"{page} has no ```python block"


def test_blocks_are_found_and_a_failing_block_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n```python\nx = 1\n```\n\n```sh\nexit 1\n```\n\n"
        "- a list\n\n    ```py\n    y = x + 1\n    ```\n\n```python\nassert y == 3, 'wrong'\n```\n"
    )
    assert python_blocks(page) == [(4, "x = 1\n"), (14, "y = x + 1\n"), (18, "assert y == 3, 'wrong'\n")]
    done = run_page(page, tmp_path)
    assert done.returncode != 0
    assert f'File "{page}", line 18' in done.stderr and "assert y == 3, 'wrong'" in done.stderr


def test_an_unclosed_fence_is_an_error():
    with pytest.raises(ValueError, match="never closed"):
        code_blocks("text\n```python\nx = 1\n")


def test_the_api_reference_lists_every_public_name():
    """Each name of termite.__all__ has its entry (``::: termite.NAME``), or a page of its own (a module)."""
    reference = "\n".join(page.read_text() for page in (DOCS / "reference").glob("*.md"))
    missing = [name for name in termite.__all__ if not re.search(rf"^::: termite\.{re.escape(name)}$", reference, re.M)]
    assert not missing, f"the API reference (docs/reference/termite.md) has no entry for {missing}: add ::: termite.NAME"


def _rst_docstrings():
    spec = importlib.util.spec_from_file_location("rst_docstrings", DOCS / "rst_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstrings_tables_literal_blocks_and_roles_become_markdown():
    to_markdown = _rst_docstrings().to_markdown
    text = (
        "Use :class:`GenServer` and :func:`~termite.spawn`, then::\n\n"
        "    pid = spawn(f)\n\n    send(pid, 1)\n\nAfter.\n\n"
        "=========  ===============\n"
        "call       what it does\n"
        "=========  ===============\n"
        "``a(x)``   starts x and\n"
        "           waits for it\n"
        "``b``      a | b\n"
        "=========  ===============\n"
        "End."
    )
    assert to_markdown(text).splitlines() == [
        "Use ``GenServer`` and ``termite.spawn``, then:",
        "", "```python", "pid = spawn(f)", "", "send(pid, 1)", "```",
        "", "After.", "",
        "", "| call | what it does |", "|---|---|",
        "| ``a(x)`` | starts x and waits for it |", "| ``b`` | a \\| b |", "",
        "End.",
    ]


def test_every_gen_server_and_supervisor_table_is_converted():
    """The behaviours' docstrings carry the tables STYLE.md holds up: none is left in reST on the site."""
    to_markdown = _rst_docstrings().to_markdown
    for module in (termite.gen_server, termite.supervisor):
        converted = to_markdown(module.__doc__)
        assert "| --- |" not in converted and "|---|" in converted
        assert not re.search(r"^ *=+ +=+", converted, re.M) and ":class:`" not in converted
