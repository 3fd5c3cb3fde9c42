"""The documentation: citations resolve, nothing points outside, every public class is documented.

1. Every relative path the repository's text files cite resolves: the targets of Markdown
   links relative to the citing file, and mentions of ``docs/*.md`` relative to the
   repository root. A bare mention of the reference file (its name without the ``docs/``
   folder) is a failure: a citation must be a path a reader can follow.
2. No file cites anything outside the repository (the team's private notes, absolute paths).
3. Every loss class of ``losses`` and every metric class of ``lightning_calib.metrics`` is
   named in the docs, so a new one cannot ship undocumented.

The files scanned are those ``git ls-files`` lists, plus untracked files git does not
ignore (so a new file is checked before it is committed); binary files are skipped, and
notebooks are scanned cell by cell.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

import lightning_calib.metrics
import losses

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "docs/REFERENCE.md"
DOCS = INDEX.parent

# A Markdown link or image: bracketed text, then the target (and an optional quoted title) in
# parentheses. Not an indexing call in code: an identifier, ``]`` or ``)`` before the bracket.
MARKDOWN_LINK = re.compile(r"(?<![\w\])])!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# ``docs/<name>.md`` as a path of its own (not the tail of ``../docs/...`` or of a URL).
DOCS_MENTION = re.compile(r"(?<![\w./-])docs/[\w./-]*?\.md\b")
# The reference file by name, wherever it occurs (``docs/`` before it is checked apart).
REFERENCE_NAME = re.compile(r"(?<![\w.-])REFERENCE\.md\b")
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

# Built from pieces so that this file does not contain what it looks for.
OUTSIDE_NEEDLES = (
    "shared" + "/docs",
    ".." + "/shared",
    "/" + "work/",
    "/" + "root/",
)


@cache
def repo_files() -> tuple[str, ...]:
    """Tracked files and untracked, non-ignored ones, relative to the repository root."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    cmd = ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.decode(errors='replace').strip()}")
    names = {n for n in proc.stdout.decode("utf-8").split("\0") if n}
    return tuple(sorted(n for n in names if (REPO / n).is_file()))


@cache
def read_text(name: str) -> str | None:
    """The file's text, or ``None`` for a binary file (NUL bytes or not UTF-8)."""
    data = (REPO / name).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_lines(name: str) -> Iterator[tuple[str, str]]:
    """``(location, line)`` of every line of a text file; notebooks cell by cell."""
    text = read_text(name)
    if text is None:
        return
    if name.endswith(".ipynb"):
        try:
            cells = json.loads(text).get("cells", [])
        except (json.JSONDecodeError, AttributeError):
            cells = None
        if cells is not None:
            for c, cell in enumerate(cells):
                source = cell.get("source", "")
                source = "".join(source) if isinstance(source, list) else str(source)
                for i, line in enumerate(source.splitlines(), 1):
                    yield f"{name} (cell {c}, line {i})", line
            return
    for i, line in enumerate(text.splitlines(), 1):
        yield f"{name}:{i}", line


def resolves(base: Path, target: str) -> bool:
    """Whether ``target`` names an existing file or folder inside the repository."""
    path = (REPO / target.lstrip("/")) if target.startswith("/") else (base / target)
    path = path.resolve()
    return path.exists() and path.is_relative_to(REPO)


def citation_failures() -> list[str]:
    """``location: problem`` for every citation that does not resolve."""
    failures = []
    for name in repo_files():
        folder = (REPO / name).parent
        for where, line in text_lines(name):
            link_spans = []
            for match in MARKDOWN_LINK.finditer(line):
                link_spans.append(match.span(1))
                target = match.group(1)
                if target.startswith("#") or URL_SCHEME.match(target):
                    continue
                path = unquote(target.split("#", 1)[0].split("?", 1)[0])
                if path and not resolves(folder, path):
                    failures.append(f"{where}: link target {target!r} does not resolve")
            for match in DOCS_MENTION.finditer(line):
                if not resolves(REPO, match.group(0)):
                    failures.append(f"{where}: {match.group(0)!r} does not exist")
            for match in REFERENCE_NAME.finditer(line):
                start = match.start()
                if line[max(0, start - 5) : start] == "docs/":
                    continue  # a docs/ mention, checked above (or a link target, checked above)
                if any(a <= start < b for a, b in link_spans):
                    continue  # a Markdown link relative to its file, checked above
                failures.append(
                    f"{where}: bare {match.group(0)!r}; cite it as a path, "
                    f"{INDEX.relative_to(REPO).as_posix()!r}"
                )
    return failures


def test_cited_paths_resolve():
    failures = citation_failures()
    assert not failures, "unresolvable citations:\n" + "\n".join(failures)


def test_nothing_cites_outside_the_repository():
    failures = []
    for name in repo_files():
        text = read_text(name)
        if text is None:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            failures += [f"{name}:{i}: {needle!r}" for needle in OUTSIDE_NEEDLES if needle in line]
    assert not failures, "references outside the repository:\n" + "\n".join(failures)


# ----------------------------------------------------------------------------------------------
# the docs name what the packages export
# ----------------------------------------------------------------------------------------------


@cache
def documented_names() -> frozenset[str]:
    """Every identifier that appears inside an inline code span of the Markdown docs."""
    assert INDEX.is_file(), f"{INDEX.relative_to(REPO)} is missing"
    words: set[str] = set()
    for path in sorted(DOCS.rglob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for span in re.findall(r"`([^`]+)`", line):
                words.update(re.findall(r"[A-Za-z_]\w*", span))
    return frozenset(words)


def exported_classes(module) -> list[str]:
    return [n for n in module.__all__ if inspect.isclass(getattr(module, n))]


LOSS_CLASSES = exported_classes(losses)
METRIC_CLASSES = exported_classes(lightning_calib.metrics)


def test_exports_are_found():
    assert "ACLS" in LOSS_CLASSES and "CalibrationLoss" in LOSS_CLASSES
    assert "ECE" in METRIC_CLASSES and "functional" not in METRIC_CLASSES


@pytest.mark.parametrize("name", LOSS_CLASSES + METRIC_CLASSES)
def test_public_class_is_documented(name):
    assert name in documented_names(), (
        f"{name} is exported but not named (as `{name}`) in docs/; document it in "
        f"{INDEX.relative_to(REPO).as_posix()}"
    )


@pytest.mark.parametrize("name", LOSS_CLASSES)
def test_loss_parts_are_documented(name):
    missing = [p for p in getattr(losses, name).part_names if p not in documented_names()]
    assert not missing, f"{name} logs parts {missing} that docs/ does not name"


def test_docs_cite_nothing_outside():
    """The docs are checked even before they are committed (the scan above sees them too)."""
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        found = [needle for needle in OUTSIDE_NEEDLES if needle in text]
        assert not found, f"{path.relative_to(REPO)} cites {found}"
