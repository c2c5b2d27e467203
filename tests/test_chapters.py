"""Every chapter notebook matches its jupytext source: chapters/src/NN_name.py <-> chapters/NN_name.ipynb.

The percent-format script is the one source of truth; `make chapters` rebuilds each notebook from it and executes
it. A hand edit of a notebook (or an edit of a source without rebuilding) changes a cell's type or text, and the
test below names the chapter and the first cell that differs.
"""

from pathlib import Path

import jupytext
import nbformat
import pytest

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
SOURCES = sorted((CHAPTERS / "src").glob("[0-9][0-9]_*.py"))


def cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


def first_difference(want, got):
    """Name the first thing that differs between a source cell and a notebook cell: the type or one line."""
    if want[0] != got[0]:
        return f"the source has a {want[0]} cell, the notebook a {got[0]} cell"
    w, g = want[1].splitlines(), got[1].splitlines()
    for n, (a, b) in enumerate(zip(w, g)):
        if a != b:
            return f"line {n}: source {a!r}, notebook {b!r}"
    return f"the source cell has {len(w)} lines, the notebook cell {len(g)} (or trailing whitespace differs)"


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    notebooks = {p.stem for p in CHAPTERS.glob("*.ipynb")}
    sources = {p.stem for p in SOURCES}
    assert sources, f"no chapter sources found in {CHAPTERS / 'src'}"
    assert notebooks == sources, (
        f"notebooks without a source: {sorted(notebooks - sources)}; sources without a notebook: "
        f"{sorted(sources - notebooks)}. Write the chapter as chapters/src/NN_name.py and run `make chapters`."
    )


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_matches_its_source(source):
    want = cells(jupytext.read(source))
    got = cells(nbformat.read(CHAPTERS / f"{source.stem}.ipynb", as_version=4))
    for i, (w, g) in enumerate(zip(want, got)):
        assert w == g, (
            f"chapters/{source.stem}.ipynb cell {i} differs from chapters/src/{source.name}: {first_difference(w, g)}. "
            "Edit the source, not the notebook, then run `make chapters`."
        )
    assert len(want) == len(got), (
        f"chapters/{source.stem}.ipynb has {len(got)} cells, chapters/src/{source.name} has {len(want)}: "
        "edit the source, not the notebook, then run `make chapters`."
    )
