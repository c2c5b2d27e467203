"""The project's reference, docs/glm41v.md: every citation of it points at a real section, and nothing cites a
document a reader cannot open.

* every reference of the form `docs/glm41v.md §X[.Y]` (also lists `§4.1, §5.1`, ranges `§1.2-1.3`, steps
  `§4 step 5`) in the package, tests, benchmarks, scripts, README and chapters names a heading of the document,
  and a named step is a numbered item of that section;
* no file of the repository points a reader at notes outside it;
* the document has the outline the code cites (§1 to §10, then Sources), and every section cites a public source.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "glm41v.md"
DOC_NAME = "docs/" + "glm41v.md"  # split so that this file's own strings are not references

# Where references are looked for: these folders, the chapter notebooks, and the README.
SCANNED_DIRS = ("minglm4v/", "tests/", "benchmarks/", "scripts/", "chapters/src/")
SCANNED_FILES = ("README.md",)

# Strings that would point a reader at notes outside the repository (built by concatenation so that this file
# does not contain them).
FORBIDDEN = ("facts " + "§", "facts " + "sheet", "../" + "shared", "/work/" + "shared", "glm41v-" + "facts")

# The outline the code and chapters cite: top-level sections and their subsections.
OUTLINE = {
    "1": ("Configuration", ["1.1", "1.2", "1.3", "1.4"]),
    "2": ("Image preprocessing", ["2.1", "2.2", "2.3", "2.4"]),
    "3": ("Video preprocessing", ["3.1", "3.2", "3.3"]),
    "4": ("Vision encoder", ["4.1"]),
    "5": ("Text decoder", ["5.1"]),
    "6": ("M-RoPE", ["6.1", "6.2"]),
    "7": ("Prompt format, special tokens, generation", ["7.1", "7.2", "7.3", "7.4"]),
    "8": ("Checkpoint layout", []),
    "9": ("Known pitfalls", []),
    "10": ("Testing against transformers", []),
}

# A citation line starts with "Source:" and names something public: a Python file, the Hub, the paper, a URL,
# an issue or pull request number, a README or a documentation page.
SOURCE_LINE = re.compile(r"^Sources?:", re.M)
PUBLIC = re.compile(r"\.py\b|\bHub\b|\bpaper\b|https?://|#\d+|README|documentation|\.json\b|\.jinja\b")

# ---------------------------------------------------------------------- parsing the document

_HEADING = re.compile(r"^(##|###) (\d+(?:\.\d+)?)\.? (.+)$", re.M)


def headings(text: str) -> list[tuple[int, str, str]]:
    """[(level, number, title)] of the numbered headings: `## 1. Configuration` -> (2, "1", "Configuration")."""
    return [(len(m.group(1)), m.group(2), m.group(3).strip()) for m in _HEADING.finditer(text)]


def sections(text: str) -> dict[str, str]:
    """{number: body} for every numbered heading; a top-level body includes its subsections."""
    marks = [(m.start(), len(m.group(1)), m.group(2)) for m in re.finditer(r"^(##|###) (\d+(?:\.\d+)?)", text, re.M)]
    ends = [m.start() for m in re.finditer(r"^##? ", text, re.M)]  # any level-1/2 heading ends a top-level body
    out = {}
    for i, (start, level, number) in enumerate(marks):
        if level == 2:
            end = min([e for e in ends if e > start] + [len(text)])
        else:
            end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
            end = min([end] + [e for e in ends if e > start])
        out[number] = text[start:end]
    return out


def numbered_items(body: str) -> set[int]:
    """The numbers of a section's numbered list items (`1. ...`, `10. ...`)."""
    return {int(n) for n in re.findall(r"^\s*(\d+)\. ", body, re.M)}


# ---------------------------------------------------------------------- parsing references

# One link of a reference chain: optional separators, then §X[.Y], an optional range end, optional steps.
_LINK = re.compile(
    r"""(?:\s|\(|,|\band\b)*                         # separators: spaces, "(", ",", "and"
        §(?P<num>\d+(?:\.\d+)?)                      # §4 or §4.1
        (?:\s*[-–]\s*§?(?P<to>\d+(?:\.\d+)?))?       # a range: §1.2-1.3
        (?:\s+steps?\s+(?P<steps>\d+(?:\s*(?:,|and)\s*\d+)*))?   # steps: "step 5", "steps 3, 4 and 6"
    """,
    re.X,
)


def references(text: str) -> list[tuple[int, str, list[int]]]:
    """[(offset, section number, [steps])] for every section named right after a mention of the document."""
    out = []
    for m in re.finditer(re.escape(DOC_NAME), text):
        pos = m.end()
        while (link := _LINK.match(text, pos)) is not None:
            steps = [int(s) for s in re.findall(r"\d+", link.group("steps") or "")]
            out.append((m.start(), link.group("num"), steps))
            if link.group("to"):
                start, to = link.group("num"), link.group("to")
                if "." in start and "." not in to:  # "§1.2-3" means §1.2 to §1.3
                    to = start.split(".")[0] + "." + to
                out.append((m.start(), to, []))
            pos = link.end()
    return out


def repo_files() -> list[Path]:
    """Tracked files and untracked files git does not ignore, relative to the repository root."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise AssertionError(f"tests/test_docs.py needs a git checkout and the git command: {e}") from e
    return [Path(p) for p in sorted(set(listed.decode().split("\0"))) if p and (ROOT / p).is_file()]


def text_of(path: Path) -> str | None:
    """A file's text, or None for a binary file (a NUL byte, or not UTF-8)."""
    data = (ROOT / path).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def scanned_texts() -> list[tuple[str, str]]:
    """[(where, text)]: source files whole, notebooks cell by cell (their JSON escapes undone)."""
    out = []
    for path in repo_files():
        p = path.as_posix()
        if p.startswith("chapters/") and p.endswith(".ipynb") and "/" not in p[len("chapters/"):]:
            cells = json.loads((ROOT / path).read_text(encoding="utf-8"))["cells"]
            for i, cell in enumerate(cells):
                src = cell["source"]
                out.append((f"{p} cell {i}", "".join(src) if isinstance(src, list) else src))
        elif (p.startswith(SCANNED_DIRS) or p in SCANNED_FILES) and (text := text_of(path)) is not None:
            out.append((p, text))
    return out


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# ---------------------------------------------------------------------- tests

def test_reference_parser_reads_every_form_the_code_uses():
    """The parser itself: lists, ranges, parentheses, steps; and a sentence that merely mentions a § later on."""
    got = [(n, s) for _, n, s in references(
        f"a ({DOC_NAME} §5, §6): b; c {DOC_NAME} (§4.1, §5.1). d {DOC_NAME} §1.2-1.3 e; "
        f"{DOC_NAME} §4 steps 3, 4 and 6 f; {DOC_NAME} §4 step 5; the tables of {DOC_NAME} §4.1 and §5.1; "
        f"{DOC_NAME} §4, \"Numerics\". {DOC_NAME}, then later §9 is not a reference")]
    assert got == [("5", []), ("6", []), ("4.1", []), ("5.1", []), ("1.2", []), ("1.3", []), ("4", [3, 4, 6]),
                   ("4", [5]), ("4.1", []), ("5.1", []), ("4", [])]


def test_document_has_the_cited_outline():
    text = DOC.read_text(encoding="utf-8")
    found = headings(text)
    expected = []
    for number, (title, subs) in OUTLINE.items():
        expected.append((2, number))
        expected += [(3, s) for s in subs]
    assert [(level, n) for level, n, _ in found] == expected, "docs/glm41v.md headings are out of order or missing"
    titles = {n: t for level, n, t in found if level == 2}
    wrong = {n: (titles[n], title) for n, (title, _) in OUTLINE.items() if titles[n] != title}
    assert not wrong, f"top-level titles differ from the outline (found, expected): {wrong}"
    assert re.search(r"^## Sources$", text, re.M), "docs/glm41v.md must end with a '## Sources' section"
    assert text.index("## Sources") > text.index("## 10."), "'## Sources' must come after §10"


def test_every_reference_names_a_section_that_exists():
    doc = DOC.read_text(encoding="utf-8")
    bodies = sections(doc)
    texts = scanned_texts()
    assert any(where.endswith(".ipynb cell 0") for where, _ in texts), "no chapter notebook was scanned"
    bad, count = [], 0
    for where, text in texts:
        for offset, number, steps in references(text):
            count += 1
            at = f"{where}:{_line(text, offset)}"
            if number not in bodies:
                bad.append(f"{at}: §{number} is not a heading of {DOC_NAME}")
                continue
            missing = [s for s in steps if s not in numbered_items(bodies[number])]
            if missing:
                bad.append(f"{at}: §{number} has no numbered step {missing}")
    assert count > 20, f"only {count} references found; the scan or the parser is broken"
    assert not bad, "references to sections that do not exist:\n" + "\n".join(bad)


def test_no_file_names_notes_outside_the_repository():
    hits = []
    for path in repo_files():
        text = text_of(path)
        if text is None:
            continue
        low = text.lower()
        for needle in FORBIDDEN:
            i = low.find(needle)
            while i != -1:
                hits.append(f"{path}:{_line(text, i)}: {needle!r}")
                i = low.find(needle, i + 1)
    assert not hits, ("these point a reader at a document that is not in the repository; cite "
                      f"{DOC_NAME} or the public source instead:\n" + "\n".join(hits))


def test_every_section_cites_a_public_source():
    bodies = sections(DOC.read_text(encoding="utf-8"))
    bad = []
    for number in OUTLINE:
        lines = list(SOURCE_LINE.finditer(bodies[number]))
        cited = [bodies[number][m.start():].split("\n\n")[0] for m in lines]  # the whole Source paragraph
        if not any(PUBLIC.search(c) for c in cited):
            bad.append(f"§{number}: no 'Source:' line naming a public source ({len(lines)} Source lines)")
    for _, subs in OUTLINE.values():  # and every subsection has its own
        for s in subs:
            if not SOURCE_LINE.search(bodies[s]):
                bad.append(f"§{s}: no 'Source:' line")
    assert not bad, "\n".join(bad)
