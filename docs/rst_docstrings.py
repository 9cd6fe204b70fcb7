"""termite's docstrings, written in reStructuredText's habits, turned into the Markdown mkdocstrings renders.

A griffe extension (mkdocs.yml: the python handler's ``extensions``).  The
docstrings stay as they are, readable in ``help()``; only what Markdown
would garble is rewritten:

- roles (``:class:`X```, ``:func:`~x.y```) become code spans;
- a paragraph ending in ``::`` and the indented block after it become the
  paragraph (ending in ``:``) and a fenced python block;
- simple tables (``=====  =====`` borders, a row whose first column is
  empty continuing the row above) become Markdown tables.
"""

from __future__ import annotations

import re
import textwrap

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`[~!]?([^`]+)`")
_BORDER = re.compile(r"^( *)=+( +=+)+ *$")


def to_markdown(text: str) -> str:
    """A docstring's text, with its reStructuredText tables, literal blocks and roles in Markdown."""
    text = _ROLE.sub(r"``\1``", text)
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _BORDER.match(line):
            table, i = _table(lines, i)
            out.extend(table)
            continue
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            block, end = _indented_block(lines, i + 2, _indent(line))
            if block:
                lead = line.rstrip()[:-2].rstrip()
                if lead:
                    out.append(lead + ":")
                out.extend(["", "```python", *block, "```"])
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_block(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The lines from ``start`` indented deeper than ``base`` (blank lines inside kept), dedented."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return textwrap.dedent("\n".join(lines[start:end])).splitlines(), end


def _table(lines: list[str], start: int) -> tuple[list[str], int]:
    """The simple table whose top border is ``lines[start]``, as Markdown; and the line after it."""
    border = lines[start]
    columns = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
    borders = 1
    rows: list[list[str]] = []
    header: list[str] | None = None
    i = start + 1
    while i < len(lines) and borders < 3:
        line = lines[i]
        i += 1
        if _BORDER.match(line):
            borders += 1
            if borders == 2 and header is None:
                header, rows = (rows[0] if rows else []), []
            continue
        if not line.strip():
            continue
        cells = _cells(line, columns)
        if rows and not cells[0]:  # a continuation line of the row above
            rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    header = header or [""] * len(columns)
    def row(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
    return ["", row(header), "|" + "---|" * len(columns), *map(row, rows), ""], i


def _cells(line: str, columns: list[tuple[int, int]]) -> list[str]:
    """A table line cut at the columns' starts; the last column takes the rest of the line."""
    starts = [start for start, _ in columns] + [len(line) + 1]
    return [line[starts[k]:starts[k + 1]].strip() for k in range(len(columns))]


try:
    import griffe
except ImportError:  # the tests read to_markdown without the docs tools installed
    griffe = None

if griffe is not None:

    class RstDocstrings(griffe.Extension):
        """Rewrite each docstring as it is loaded."""

        def on_instance(self, *, obj, **kwargs) -> None:
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value)
