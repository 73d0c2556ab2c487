"""The walkthrough stays true: its code is in the files it names, its tests exist, its links work.

The convention, for anyone editing ``docs/walkthrough.md`` or ``docs/walkthrough.zh.md``:

- A fenced code block shown from the project is preceded, on the line just above its opening
  fence, by ``<!-- from: app.py -->`` (a path from the top of the checkout). Its lines must
  appear in that file in the same order and next to each other, compared line by line with the
  indentation and runs of spaces ignored, and blank lines ignored. A line ``...`` alone in the
  block stands for lines left out.
- Every fence names its language; Python, JavaScript, HTML and CSS blocks must come from a
  file. Shell commands, HTTP exchanges and diagrams (``sh``, ``text``, ``mermaid``) need not.
- A test is named as ``tests/test_server.py::TestPush::test_name`` (or ``::test_name`` for a
  test outside a class), and must exist.
- Both languages show the same snippets, name the same tests and have the same sections.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGHS = {
    "en": ROOT / "docs" / "walkthrough.md",
    "zh": ROOT / "docs" / "walkthrough.zh.md",
}

FROM_MARKER = re.compile(r"<!--\s*from:\s*(\S+)\s*-->")
FENCE = re.compile(r"(`{3,}|~{3,})\s*([^`\s]*)[^`]*")
ELISION = "..."
# Code in these languages is only ever shown from a real file.
SOURCE_LANGUAGES = {"python", "py", "javascript", "js", "html", "jinja", "css"}
MAX_SNIPPET_LINES = 40
TEST_REFERENCE = re.compile(r"\btests/[\w/]+\.py(?:::\w+)+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*$")
# Characters found only in Traditional Chinese; Simplified writes each of them differently.
TRADITIONAL_ONLY = set(
    "這個們來時會為說對發與關開連線種實點數從後應該處還邊變讓記錄務義經過頁問題請運環標準轉輸"
    "網絡設計結態嗎見測試閱讀單將當體質導壓裡錯誤據確認鐘斷異鏈碼戶訊響傳輪詢間啟動執緒範圖"
)


@dataclasses.dataclass
class Block:
    """A fenced code block of a walkthrough."""

    doc: Path
    line: int  # of the opening fence, counted from 1
    language: str
    source: str | None  # the path in the from: marker, if any
    lines: list[str]

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def key(self) -> tuple[str | None, tuple[str, ...]]:
        return self.source, tuple(normalised(self.lines))


@dataclasses.dataclass
class Walkthrough:
    path: Path
    blocks: list[Block]
    prose: list[str]  # the lines outside code blocks

    @property
    def text(self) -> str:
        return "\n".join(self.prose)


def normalised(lines: list[str]) -> list[str]:
    """Lines with indentation and runs of whitespace ignored, blank ones dropped."""
    return [" ".join(line.split()) for line in lines if line.strip()]


def read_walkthrough(path: Path) -> Walkthrough:
    blocks: list[Block] = []
    prose: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        opening = FENCE.fullmatch(lines[number].strip())
        if opening is None:
            prose.append(lines[number])
            number += 1
            continue
        fence, language = opening.groups()
        marker = FROM_MARKER.fullmatch(lines[number - 1].strip()) if number else None
        if marker:
            prose.pop()  # it belongs to the block; one left in the prose is a stray
        start = number
        number += 1
        body: list[str] = []
        while number < len(lines) and not (
            lines[number].strip().startswith(fence[0] * len(fence))
            and not lines[number].strip().strip(fence[0])
        ):
            body.append(lines[number])
            number += 1
        assert number < len(lines), f"{path.name}:{start + 1}: code block never closed"
        number += 1
        source = marker.group(1) if marker else None
        blocks.append(Block(path, start + 1, language.lower(), source, body))
    return Walkthrough(path, blocks, prose)


@functools.cache
def load(language: str) -> Walkthrough:
    return read_walkthrough(WALKTHROUGHS[language])


def find_run(haystack: list[str], needle: list[str], start: int) -> int:
    """Index in ``haystack`` at or after ``start`` where ``needle`` begins, or -1."""
    for index in range(start, len(haystack) - len(needle) + 1):
        if haystack[index : index + len(needle)] == needle:
            return index
    return -1


def snippet_problem(block: Block) -> str | None:
    """Say why a block does not match the file it names, or return None if it does."""
    assert block.source is not None
    path = (ROOT / block.source).resolve()
    if ROOT not in path.parents or not path.is_file():
        return f"{block.where}: no file {block.source!r} in the project"
    in_file = normalised(path.read_text(encoding="utf-8").splitlines())
    chunks: list[list[str]] = [[]]
    for line in normalised(block.lines):
        if line == ELISION:
            chunks.append([])
        else:
            chunks[-1].append(line)
    position = 0
    for chunk in filter(None, chunks):
        found = find_run(in_file, chunk, position)
        if found < 0:
            return f"{block.where}: {block.source} {mismatch(in_file, chunk, position)}"
        position = found + len(chunk)
    return None


def mismatch(in_file: list[str], chunk: list[str], start: int) -> str:
    """Describe where the best partial match of ``chunk`` in the file breaks off."""
    missing = [line for line in chunk if line not in in_file]
    if missing:
        return f"has no line {missing[0]!r}"
    if find_run(in_file, chunk, 0) >= 0:
        return f"has {chunk[0]!r} and what follows, but before the part above the '...'"
    best = 0
    for index in range(start, len(in_file)):
        length = 0
        while (
            length < len(chunk)
            and index + length < len(in_file)
            and in_file[index + length] == chunk[length]
        ):
            length += 1
        best = max(best, length)
    if best == 0:
        return f"has {chunk[0]!r} only before the part above the '...'"
    return f"has {chunk[best - 1]!r}, but not followed by {chunk[best]!r}"


@pytest.mark.parametrize("language", WALKTHROUGHS)
def test_every_snippet_appears_in_the_file_it_names(language: str) -> None:
    """A code block marked ``<!-- from: path -->`` is still, line for line, in that file."""
    blocks = [block for block in load(language).blocks if block.source]
    assert blocks, "no snippets taken from the project's files"
    problems = [problem for block in blocks if (problem := snippet_problem(block))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", WALKTHROUGHS)
def test_code_in_a_programming_language_names_its_file(language: str) -> None:
    """Every fence names its language, and program code is never written for the page alone."""
    doc = load(language)
    markers = [line for line in doc.prose if FROM_MARKER.fullmatch(line.strip())]
    problems = [f"a from: marker not just above a fence: {line.strip()}" for line in markers]
    for block in doc.blocks:
        if not block.language:
            problems.append(f"{block.where}: the fence names no language")
        elif block.language in SOURCE_LANGUAGES and block.source is None:
            problems.append(f"{block.where}: {block.language} code without <!-- from: path -->")
        if block.source and len(normalised(block.lines)) > MAX_SNIPPET_LINES:
            problems.append(f"{block.where}: over {MAX_SNIPPET_LINES} lines, show less")
    assert not problems, "\n".join(problems)


def defined_names(path: Path) -> set[str]:
    """``name`` for each top-level function and class, ``Class::name`` for each method."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}::{item.name}")
    return names


def named_tests(doc: Walkthrough) -> set[str]:
    return set(TEST_REFERENCE.findall(doc.text))


@pytest.mark.parametrize("language", WALKTHROUGHS)
def test_every_test_named_exists(language: str) -> None:
    """Each ``tests/<file>.py::Class::test`` the walkthrough names is defined in that file."""
    references = named_tests(load(language))
    assert references, "the walkthrough names no tests"
    problems = []
    for reference in sorted(references):
        file, name = reference.split("::", 1)
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{reference}: no file {file}")
        elif name not in defined_names(path):
            problems.append(f"{reference}: {file} defines no {name.replace('::', '.')}")
    assert not problems, "\n".join(problems)


def test_both_languages_show_the_same_snippets_and_tests() -> None:
    """The English and Chinese walkthroughs quote the same code and name the same tests."""
    english, chinese = load("en"), load("zh")
    snippets_en = {block.key() for block in english.blocks if block.source}
    snippets_zh = {block.key() for block in chinese.blocks if block.source}
    only_en = sorted(f"{source}: {lines[0]}" for source, lines in snippets_en - snippets_zh)
    only_zh = sorted(f"{source}: {lines[0]}" for source, lines in snippets_zh - snippets_en)
    assert not only_en and not only_zh, f"only in English: {only_en}; only in Chinese: {only_zh}"
    tests_en, tests_zh = named_tests(english), named_tests(chinese)
    assert tests_en == tests_zh, (
        f"only in English: {sorted(tests_en - tests_zh)}; "
        f"only in Chinese: {sorted(tests_zh - tests_en)}"
    )


def headings(doc: Walkthrough) -> list[tuple[int, str]]:
    found = []
    for line in doc.prose:
        heading = HEADING.fullmatch(line)
        if heading:
            found.append((len(heading.group(1)), heading.group(2)))
    return found


def test_both_languages_have_the_same_sections() -> None:
    """Section for section, the two walkthroughs have the same outline."""
    english = [level for level, _ in headings(load("en"))]
    chinese = [level for level, _ in headings(load("zh"))]
    assert english == chinese, (
        "heading levels differ:\n"
        + "\n".join(f"{title}" for _, title in headings(load("en")))
        + "\n---\n"
        + "\n".join(f"{title}" for _, title in headings(load("zh")))
    )


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("language", WALKTHROUGHS)
def test_relative_links_point_to_files_that_exist(language: str) -> None:
    """Every link that is not a web address leads to a file in the checkout (and heading)."""
    doc = load(language)
    problems = []
    for target in LINK.findall(doc.text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: and the like
        file, _, anchor = target.partition("#")
        path = (doc.path.parent / file).resolve() if file else doc.path
        if not path.exists():
            problems.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md":
            titles = headings(read_walkthrough(path))
            if anchor not in {github_anchor(title) for _, title in titles}:
                problems.append(f"{target}: no such heading")
    assert not problems, "\n".join(problems)


def test_chinese_walkthrough_is_in_simplified_characters() -> None:
    """The article is in Traditional characters; the walkthrough for its readers is Simplified."""
    text = WALKTHROUGHS["zh"].read_text(encoding="utf-8")
    found = sorted({character for character in text if character in TRADITIONAL_ONLY})
    assert not found, f"Traditional characters in the Chinese walkthrough: {''.join(found)}"


def test_readme_links_to_both_walkthroughs() -> None:
    """A reader finds the walkthrough, in either language, from the README."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = set(LINK.findall(readme))
    for path in WALKTHROUGHS.values():
        assert str(path.relative_to(ROOT)) in targets, f"README.md does not link to {path.name}"
