"""The docs stay true: their code is in the files they name, their tests exist, their links work.

The convention, for anyone editing the tutorial (``docs/tutorial/part-*.md``) or another page
of ``docs/``:

- A fenced code block shown from the project has a caption on the line just above its opening
  fence, which the reader sees: ``**app.py**, `MyWebSocketHandler.open()``` (a path from the top
  of the checkout, then the function, method, class or module-level name the lines come from;
  ``**app.py**`` alone for lines from several places). Its lines must appear in that file, and
  within that name's definition, in the same order and next to each other, compared line by
  line with the indentation and runs of spaces ignored, and blank lines ignored. A line ``...``
  alone in the block stands for lines left out. The same holds in Chinese: the older
  ``<!-- from: app.py -->`` marker, which the reader cannot see, is refused on every page.
- Every fence names its language; Python, JavaScript, HTML and CSS blocks must come from a
  file. Shell commands, HTTP exchanges and diagrams (``sh``, ``text``, ``mermaid``) need not.
- A test is named as ``tests/test_server.py::TestPush::test_name`` (or ``::test_name`` for a
  test outside a class), and must exist.
- A part of the tutorial and its Chinese version (``part-1.md``, ``part-1.zh.md``) have the
  same sections, and each section shows the same snippets, names the same
  tests and has the same links (a link to a heading counts by the heading's number, a link to
  a Chinese page as one to its English page; a page only in Chinese, such as the note for the
  article's readers, is not compared). The Chinese part has every check the English one has.
- Each part stays within its word limit (a Chinese character counts as half a word), ends with
  exercises (``## 练习`` in Chinese), each with a hint (``提示``) and an answer under
  ``docs/answers/`` that ``tests/test_answers.py`` runs.
- The facts around the code follow the code: the README's options table has a row for each
  ``define()`` with its default, the close-code tables match the codes the server and Tornado
  send, the status table the ``HTTPError`` statuses, numbers in prose ("64 characters", "ten a
  second", "10 个令牌") are listed in ``facts()`` with the code they come from, "the second line
  of `open()`" (「`open()` 的第二行」) names that line, and a close code said never to be sent
  (「从不发送」) is one nothing sends, in either language.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIAL = DOCS / "tutorial"
# Every page whose code, tests and links are checked, by a short name. "zh" is the Chinese
# index, walkthrough.zh.md; a name ending in ".zh" is a page of the Chinese tutorial.
PAGES = {
    "part-1": TUTORIAL / "part-1.md",
    "part-2": TUTORIAL / "part-2.md",
    "tests": TUTORIAL / "tests.md",
    "walkthrough": DOCS / "walkthrough.md",
    "race": DOCS / "race.md",
    "security": DOCS / "security.md",
    "clock": DOCS / "clock.md",
    "deploy": DOCS / "deploy.md",
    "performance": DOCS / "performance.md",
    "zh": DOCS / "walkthrough.zh.md",
    "from-the-article.zh": TUTORIAL / "from-the-article.zh.md",
}
# The English pages whose numbers are this server's defaults (deploy.md and performance.md
# run it on other ports and with other limits).
DEFAULTS_TOLD = ["part-1", "part-2", "security", "clock"]
# The parts of the tutorial, and the most words of prose (code left out) each may have.
PARTS = {"part-1": 2500, "part-2": 4000}
# The Chinese version of each part, by its name, with the English part's. It has every check
# its English part has; its word limit counts each Chinese character as half a word.
ZH_PARTS = {f"{name}.zh": name for name in PARTS}
PAGES.update({zh: PAGES[en].with_name(f"{en}.zh.md") for zh, en in ZH_PARTS.items()})
ENGLISH = [name for name in PAGES if name != "zh" and not name.endswith(".zh")]
CHINESE = [name for name in PAGES if name not in ENGLISH]
# A part and its Chinese version.
TRANSLATED = [(en, PAGES[zh]) for zh, en in ZH_PARTS.items()]
# The words of a Chinese part's headings for the exercises and their hints.
EXERCISES = {"en": ("Exercises", "Hint"), "zh": ("练习", "提示")}

FROM_MARKER = re.compile(r"<!--\s*from:\s*(\S+)\s*-->")
# A caption the reader sees: **app.py**, `MyWebSocketHandler.open()`
CAPTION = re.compile(r"\*\*([\w./-]+\.\w+)\*\*(?:, `([A-Za-z_][\w.]*)(?:\(\))?`)?")
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
    source: str | None  # the path in the caption or from: marker, if any
    lines: list[str]
    name: str | None = None  # what the caption says the lines come from: "Class.method"
    captioned: bool = False  # named by a caption, rather than by a from: marker

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
    prose_lines: list[int]  # the line number of each, counted from 1

    @property
    def text(self) -> str:
        return "\n".join(self.prose)


def normalised(lines: list[str]) -> list[str]:
    """Lines with indentation and runs of whitespace ignored, blank ones dropped."""
    return [" ".join(line.split()) for line in lines if line.strip()]


def read_walkthrough(path: Path) -> Walkthrough:
    blocks: list[Block] = []
    prose: list[str] = []
    prose_lines: list[int] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        opening = FENCE.fullmatch(lines[number].strip())
        if opening is None:
            prose.append(lines[number])
            prose_lines.append(number + 1)
            number += 1
            continue
        fence, language = opening.groups()
        above = lines[number - 1].strip() if number else ""
        marker = FROM_MARKER.fullmatch(above)
        caption = CAPTION.fullmatch(above)
        if marker:
            prose.pop()  # it belongs to the block; one left in the prose is a stray
            prose_lines.pop()
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
        found = marker or caption
        source = found.group(1) if found else None
        name = caption.group(2) if caption else None
        blocks.append(
            Block(path, start + 1, language.lower(), source, body, name, caption is not None)
        )
    return Walkthrough(path, blocks, prose, prose_lines)


@functools.cache
def load(page: str) -> Walkthrough:
    return read_walkthrough(PAGES[page])


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
    text = path.read_text(encoding="utf-8").splitlines()
    if block.name:
        span = definition_span(path, block.name)
        if span is None:
            return f"{block.where}: {block.source} defines no {block.name}"
        text = text[span[0] - 1 : span[1]]
    in_file = normalised(text)
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
            where = f"{block.source}, {block.name}," if block.name else block.source
            return f"{block.where}: {where} {mismatch(in_file, chunk, position)}"
        position = found + len(chunk)
    return None


def definition_span(path: Path, name: str) -> tuple[int, int] | None:
    """The first and last line of the definition ``name`` (``Class.method``, a function, a
    class, or a name assigned at module level) in a Python file, with the comments and
    decorators just above it; the whole file for another language if it has ``name`` in it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".js":  # a top-level function, up to its closing brace
        start = next(
            (i for i, line in enumerate(lines) if line.startswith(f"function {name}(")), None
        )
        if start is None:
            return None
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("}"))
        return start + 1, end + 1
    if path.suffix != ".py":
        return None
    nodes: list[ast.stmt] = parsed(path).body
    node: ast.stmt | None = None
    for part in name.split("."):
        node = next((n for n in nodes if part in statement_names(n)), None)
        if node is None:
            return None
        nodes = getattr(node, "body", [])
    assert node is not None
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    while first > 1 and lines[first - 2].strip().startswith("#"):
        first -= 1
    return first, node.end_lineno or node.lineno


def statement_names(node: ast.stmt) -> set[str]:
    """The names a statement defines: a function's or class's, an assignment's targets."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {target.id for target in targets if isinstance(target, ast.Name)}


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


@pytest.mark.parametrize("page", PAGES)
def test_every_snippet_appears_in_the_file_it_names(page: str) -> None:
    """A code block captioned ``**path**, `name()``` is still, line for line, in that file and
    within that definition."""
    blocks = [block for block in load(page).blocks if block.source]
    problems = [problem for block in blocks if (problem := snippet_problem(block))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [*PARTS, *ZH_PARTS])
def test_the_lessons_show_code_from_the_files(page: str) -> None:
    """The parts of the tutorial, in either language, show the project's real code."""
    assert any(block.source for block in load(page).blocks), "no snippets from the files"


@pytest.mark.parametrize("page", PAGES)
def test_code_in_a_programming_language_names_its_file(page: str) -> None:
    """Every fence names its language, and program code is never written for the page alone;
    the file is named where the reader sees it, in a caption."""
    doc = load(page)
    markers = [line for line in doc.prose if FROM_MARKER.fullmatch(line.strip())]
    problems = [f"a from: marker not just above a fence: {line.strip()}" for line in markers]
    for block in doc.blocks:
        if not block.language:
            problems.append(f"{block.where}: the fence names no language")
        elif block.language in SOURCE_LANGUAGES and block.source is None:
            problems.append(f"{block.where}: {block.language} code without a caption **path**")
        if block.source and len(normalised(block.lines)) > MAX_SNIPPET_LINES:
            problems.append(f"{block.where}: over {MAX_SNIPPET_LINES} lines, show less")
        if block.source and not block.captioned:
            problems.append(f"{block.where}: a from: marker the reader cannot see; caption it")
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


@pytest.mark.parametrize("page", PAGES)
def test_every_test_named_exists(page: str) -> None:
    """Each ``tests/<file>.py::Class::test`` a page names is defined in that file."""
    references = named_tests(load(page))
    if page == "tests":
        assert references, "the page names no tests"
    problems = []
    for reference in sorted(references):
        file, name = reference.split("::", 1)
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{reference}: no file {file}")
        elif name not in defined_names(path):
            problems.append(f"{reference}: {file} defines no {name.replace('::', '.')}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [*PARTS, *ZH_PARTS])
def test_test_names_stay_out_of_the_lesson(page: str) -> None:
    """A part of the tutorial leaves the names of tests to its table (tests.md)."""
    assert not named_tests(load(page)), "move these to docs/tutorial/tests.md"


@pytest.mark.parametrize("page, chinese", TRANSLATED)
def test_both_languages_show_the_same_snippets_and_tests(page: str, chinese: Path) -> None:
    """A part and its Chinese version quote the same code and name the same tests."""
    english, translated = load(page), read_walkthrough(chinese)
    snippets_en = {block.key() for block in english.blocks if block.source}
    snippets_zh = {block.key() for block in translated.blocks if block.source}
    only_en = sorted(f"{source}: {lines[0]}" for source, lines in snippets_en - snippets_zh)
    only_zh = sorted(f"{source}: {lines[0]}" for source, lines in snippets_zh - snippets_en)
    assert not only_en and not only_zh, f"only in English: {only_en}; only in Chinese: {only_zh}"
    tests_en, tests_zh = named_tests(english), named_tests(translated)
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


@dataclasses.dataclass
class Section:
    """What a section of a page holds, in terms both languages must share."""

    level: int
    title: str
    snippets: set[tuple[str | None, tuple[str, ...]]]
    tests: set[str]
    links: list[str]  # in-page anchors as the number of the heading they lead to
    fences: list[str]  # the language of each code block, in order


def other_language(path: Path) -> str:
    """The file name of a page's counterpart: part-1.md for part-1.zh.md, and back."""
    if path.name.endswith(".zh.md"):
        return path.name.removesuffix(".zh.md") + ".md"
    return path.stem + ".zh.md"


def link_key(page: Path, target: str) -> str | None:
    """What a link to another file stands for, the same in both languages: a link to a
    Chinese page counts as one to its English page, and a heading of another page by its
    number. The page's own other language is "the other language"; a page that only exists in
    Chinese (the note for the article's readers) has no English to match: None."""
    if re.match(r"[a-z][a-z0-9+.-]*:", target):
        return target
    file, _, anchor = target.partition("#")
    if file == other_language(page) and not anchor:
        return "the other language"
    path = (page.parent / file).resolve()
    if anchor and path.suffix == ".md" and path.is_file():
        titles = [title for _, title in headings(read_walkthrough(path))]
        numbers = {github_anchor(title): number for number, title in enumerate(titles, 1)}
        anchor = str(numbers.get(anchor, anchor))
    if path.name.endswith(".zh.md"):
        if not path.with_name(other_language(path)).is_file():
            return None
        file = file.removesuffix(".zh.md") + ".md"
    return f"{file}#{anchor}" if anchor else file


def sections(doc: Walkthrough) -> list[Section]:
    """Cut a page at every heading (the text before the first one is section 0)."""
    starts = [(0, 0, "")]
    for line, number in zip(doc.prose, doc.prose_lines):
        heading = HEADING.fullmatch(line)
        if heading:
            starts.append((number, len(heading.group(1)), heading.group(2)))
    anchors = {github_anchor(title): index for index, (_, _, title) in enumerate(starts)}
    found = []
    for index, (first, level, title) in enumerate(starts):
        last = starts[index + 1][0] if index + 1 < len(starts) else 1 << 30
        text = "\n".join(
            line for line, number in zip(doc.prose, doc.prose_lines) if first <= number < last
        )
        blocks = [block for block in doc.blocks if first <= block.line < last]
        links = []
        for target in LINK.findall(text):
            if target.startswith("#"):
                links.append(f"#{anchors.get(target[1:], target)}")
            elif (key := link_key(doc.path, target)) is not None:
                links.append(key)
        found.append(
            Section(
                level,
                title,
                {block.key() for block in blocks if block.source},
                set(TEST_REFERENCE.findall(text)),
                sorted(links),
                [block.language for block in blocks],
            )
        )
    return found


@pytest.mark.parametrize("page, chinese", TRANSLATED)
def test_both_languages_have_the_same_sections(page: str, chinese: Path) -> None:
    """Section for section, a part and its Chinese version show the same code, tests and links."""
    english, translated = sections(load(page)), sections(read_walkthrough(chinese))
    outline = "\n".join(
        f"{'#' * en.level} {en.title}  |  {'#' * zh.level} {zh.title}"
        for en, zh in zip(english, translated)
    )
    assert [s.level for s in english] == [s.level for s in translated], outline
    problems = []
    for en, zh in zip(english, translated):
        for field in ("snippets", "tests", "links", "fences"):
            if getattr(en, field) != getattr(zh, field):
                problems.append(
                    f"{en.title} / {zh.title}: {field} differ:\n"
                    f"  en {getattr(en, field)}\n  zh {getattr(zh, field)}"
                )
    assert not problems, "\n".join(problems)


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_to_files_that_exist(page: str) -> None:
    """Every link that is not a web address leads to a file in the checkout (and heading)."""
    doc = load(page)
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


def test_chinese_pages_are_in_simplified_characters() -> None:
    """The article is in Traditional characters; the pages for its readers are Simplified (a
    spelling quoted from the article, in backquotes, aside)."""
    for path in sorted(DOCS.rglob("*.zh.md")):
        text = INLINE_CODE.sub(" ", path.read_text(encoding="utf-8"))
        found = sorted({character for character in text if character in TRADITIONAL_ONLY})
        assert not found, f"Traditional characters in {path.name}: {''.join(found)}"


def test_readme_links_to_the_tutorial() -> None:
    """A reader finds the tutorial's parts, and the walkthrough in either language, from the
    README."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = set(LINK.findall(readme))
    for page in (*PARTS, "walkthrough", "zh"):
        path = PAGES[page]
        assert str(path.relative_to(ROOT)) in targets, f"README.md does not link to {path.name}"


# The parts of the tutorial: finished in one sitting, each ending with exercises.

INLINE_CODE = re.compile(r"`[^`\n]+`")
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def prose_words(doc: Walkthrough) -> float:
    """The words of a page's prose: code blocks, comments and link targets left out, a span
    of inline code counted as one word, a Chinese character as half of one."""
    text = HTML_COMMENT.sub(" ", doc.text)
    text = LINK.sub(lambda link: link.group(0).split("](")[0], text)
    text = INLINE_CODE.sub(" code ", text)
    return len(WORD.findall(text)) + len(HAN.findall(text)) / 2


@pytest.mark.parametrize("page", [*PARTS, *ZH_PARTS])
def test_parts_within_their_word_limit(page: str) -> None:
    """A part can be read in one sitting: Part 1 at most 2,500 words, Part 2 at most 4,000,
    in either language."""
    limit = PARTS[ZH_PARTS.get(page, page)]
    words = prose_words(load(page))
    assert 0 < words <= limit, f"{page}: {words:.0f} words, {limit} at most"


@pytest.mark.parametrize("page", [*PARTS, *ZH_PARTS])
def test_parts_end_with_exercises_with_answers(page: str) -> None:
    """A part ends with exercises; each has a hint and an answer under docs/answers/ that
    tests/test_answers.py runs."""
    text = PAGES[page].read_text(encoding="utf-8")
    exercises_title, hint = EXERCISES["zh" if page in ZH_PARTS else "en"]
    exercises = section(text, exercises_title)
    titles = [t for level, t in headings(read_walkthrough(PAGES[page])) if level == 2]
    assert titles[-1] == exercises_title, "the exercises are not the part's last section"
    each = re.split(r"(?m)^### ", exercises)[1:]
    assert each, f"no exercise (### headings under ## {exercises_title})"
    runner = (ROOT / "tests" / "test_answers.py").read_text(encoding="utf-8")
    for exercise in each:
        title = exercise.splitlines()[0]
        assert f"<summary>{hint}</summary>" in exercise, f"{title}: no hint"
        answers = re.findall(r"\]\(\.\./answers/([\w.]+)\)", exercise)
        assert answers, f"{title}: no link to its answer in docs/answers/"
        for answer in answers:
            assert (DOCS / "answers" / answer).is_file(), f"{title}: no docs/answers/{answer}"
            assert f"docs/answers/{answer}" in runner, f"tests/test_answers.py runs no {answer}"


@pytest.mark.parametrize("page", ["part-1", "part-1.zh"])
def test_part_1_shows_the_real_fix(page: str) -> None:
    """The diff in Part 1 (in either language) is the real one between docs/unsafe.py and
    docs/minimal.py, all but the docstrings, as in docs/race.md."""
    unsafe, fixed = (
        (DOCS / name).read_text(encoding="utf-8").splitlines(keepends=True)
        for name in ("unsafe.py", "minimal.py")
    )
    diff = "".join(difflib.unified_diff(unsafe, fixed, "docs/unsafe.py", "docs/minimal.py", n=1))
    header, docstrings, *hunks = re.split(r"(?m)^(?=@@ )", diff)
    assert docstrings.startswith("@@ -1,")
    shown = [block for block in load(page).blocks if block.language == "diff"]
    assert len(shown) == 1, "expected one diff block in Part 1"
    assert "\n".join(shown[0].lines) + "\n" == header + "".join(hunks)


# The facts around the code: tables and numbers in README.md and the walkthroughs.

README = ROOT / "README.md"
# Folders whose Python is not the server's: their define() calls and constants do not count.
NOT_THE_SERVER = {"tests", "benchmarks", "docs", "static", "templates", "build", "dist"}


def server_modules() -> list[Path]:
    """The server's own Python files: app.py and any optional module or folder beside it."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] in NOT_THE_SERVER or any(
            part.startswith(".") or part.endswith(".egg-info") or part == "site-packages"
            for part in parts
        ):
            continue
        found.append(path)
    return found


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def defined_options() -> dict[str, Any]:
    """Each ``define(name, default=...)`` in the server's modules: name -> default."""
    import tornado.options

    import app  # registers app.py's options, the fallback for a default that is not literal

    assert app
    found = {}
    for path in server_modules():
        for node in ast.walk(parsed(path)):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "define"):
                continue
            name = ast.literal_eval(node.args[0])
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            try:  # a literal or arithmetic such as 64 * 1024
                value = eval(compile(ast.Expression(default), str(path), "eval"), {})
            except Exception:
                value = getattr(tornado.options.options, name)
            found[name] = value
    return found


def close_constants() -> dict[str, int]:
    """Each module-level ``CLOSE_... = <code>`` in the server's modules."""
    found = {}
    for path in server_modules():
        for node in parsed(path).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.startswith("CLOSE_"):
                        found[target.id] = node.value.value
    return found


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in ``text``: rows of stripped cells, the header row first."""
    found: list[list[list[str]]] = []
    previous = False
    for line in text.splitlines():
        row = line.strip()
        if row.startswith("|") and row.endswith("|"):
            cells = [cell.strip() for cell in row[1:-1].split("|")]
            if set("".join(cells)) <= set("-: "):
                continue  # the line under the header
            if not previous:
                found.append([])
            found[-1].append(cells)
            previous = True
        else:
            previous = False
    return found


def table(text: str, first_header: set[str]) -> list[list[str]]:
    """The rows (without the header) of the one table whose first header cell is given."""
    matching = [rows for rows in tables(text) if rows[0][0] in first_header]
    assert len(matching) == 1, f"expected one table headed {first_header}, found {len(matching)}"
    return matching[0][1:]


def section(text: str, title: str) -> str:
    """The part of ``text`` under the heading ``title``, up to the next heading as high."""
    lines = text.splitlines()
    starts = []
    in_code = False
    for index, line in enumerate(lines):
        if FENCE.fullmatch(line.strip()):
            in_code = not in_code
        elif not in_code and (found := HEADING.fullmatch(line)):
            starts.append((index, len(found.group(1)), found.group(2)))
    matching = [(index, level) for index, level, heading in starts if heading == title]
    assert len(matching) == 1, f"expected one heading {title!r}, found {len(matching)}"
    first, level = matching[0]
    ends = [index for index, other, _ in starts if index > first and other <= level]
    return "\n".join(lines[first + 1 : ends[0] if ends else len(lines)])


def plain(cell: str) -> str:
    return cell.strip().strip("`")


def readme_default(value: Any) -> set[str]:
    """How the README may write a default."""
    if value in (None, "", [], ()):
        return {"(empty)", "(none)", ""}
    if isinstance(value, (list, tuple)):
        return {",".join(map(str, value))}
    return {str(value)}


def test_readme_options_match_define() -> None:
    """The README's options table has a row for each define(), with its name and default."""
    options = defined_options()
    assert "port" in options, "no define() found"
    rows = table(README.read_text(encoding="utf-8"), {"option"})
    in_readme = {plain(row[0]).removeprefix("--"): plain(row[1]) for row in rows}
    problems = [f"--{name}: no row in the README" for name in options if name not in in_readme]
    # Tornado defines a few options of its own (--logging and the other log options).
    import tornado.log
    import tornado.options

    parser = tornado.options.OptionParser()
    tornado.log.define_logging_options(parser)
    tornados = {name.replace("-", "_") for name in parser._options}
    unknown = in_readme.keys() - options.keys() - tornados
    problems += [f"--{name}: in the README, but no define()" for name in unknown]
    for name, written in in_readme.items():
        if name in options and written not in readme_default(options[name]):
            problems.append(f"--{name}: the README says {written!r}, define() {options[name]!r}")
    assert not problems, "\n".join(problems)


# Codes a client of this server can see although nothing on the server sends them: a
# connection that broke (1006), and the standard's answer to text that is not UTF-8 (1007),
# which Tornado gives by dropping the connection instead. (1000 is the page's own Close, and
# Tornado's when a ping goes unanswered: see tornado_close_codes().)
SEEN_NOT_SENT = {1006, 1007}
NEVER_SENT = {"en": "never sent", "zh": "从不发送"}
# Said of a close code, in either language: that nothing on the server sends it.
NEVER_SENT_CLAIM = {
    "en": re.compile(r"\bnever (?:sent|sends|send)\b|\bis not sent\b"),
    "zh": re.compile(r"从不(?:会)?(?:被)?(?:发送|发出)|不会(?:被)?(?:发送|发出)"),
}
CLOSE_CODE = re.compile(r"\b(1\d{3}|[34]\d{3})\b")


def codes(rows: list[list[str]]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for row in rows:
        found.setdefault(int(plain(row[0])), []).append(" | ".join(row[1:]))
    return found


@functools.cache
def tornado_close_codes() -> dict[int, str]:
    """The close codes Tornado's WebSocket code sends by itself, each with its reason: 1009
    for a message too big, and 1000 when a ping went unanswered (``close(reason=...)`` with
    no code, which Tornado turns into 1000)."""
    import tornado.websocket

    text = Path(tornado.websocket.__file__).read_text(encoding="utf-8")
    found = {
        int(code): reason for code, reason in re.findall(r'\.close\((\d{4}), "([^"]*)"\)', text)
    }
    if "code = 1000" in text:
        for reason in re.findall(r'\bself\.close\(reason="([^"]*)"\)', text):
            found.setdefault(1000, reason)
    return found


def sendable_codes() -> set[int]:
    """Every close code the server can send: its CLOSE_* constants and Tornado's own."""
    return set(close_constants().values()) | set(tornado_close_codes())


def test_tornado_sends_what_the_docs_say() -> None:
    """Tornado's own close codes are the two the docs describe: 1009 for a message too big,
    1000 "ping timed out"."""
    assert tornado_close_codes().get(1000) == "ping timed out"
    assert 1009 in tornado_close_codes()


def test_readme_close_codes_match_constants() -> None:
    """The README's close codes are exactly those the server and Tornado send, each with the
    reason the code gives."""
    constants = set(close_constants().values())
    assert constants, "no CLOSE_* constants found"
    rows = table(README.read_text(encoding="utf-8"), {"code"})
    assert set(codes(rows)) == sendable_codes()
    import tornado.websocket

    sources = [path.read_text(encoding="utf-8") for path in server_modules()]
    sources.append(Path(tornado.websocket.__file__).read_text(encoding="utf-8"))
    unknown = [row[1] for row in rows if not any(f'"{row[1]}"' in text for text in sources)]
    assert not unknown, f"reasons no code sends: {unknown}"


def test_readme_statuses_match_refusals() -> None:
    """Every HTTP status the server raises has a row in the README: the statuses of /push in
    the section on push, the others in the one on refusals."""
    push: set[int] = set()
    other = {403}  # also Tornado's own answer when check_origin() says no
    for path in server_modules():
        for cls in ast.walk(parsed(path)):
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in ast.walk(cls):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "attr", getattr(node.func, "id", None)) == "HTTPError"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    (push if cls.name == "PushHandler" else other).add(node.args[0].value)
    readme = README.read_text(encoding="utf-8")
    requests = table(section(readme, "What the server refuses, and how it says so"), {"status"})
    pushes = table(section(readme, "Several processes, several machines, and push"), {"status"})
    assert {int(plain(row[0])) for row in requests} == other
    assert {int(plain(row[0])) for row in pushes} == push


@pytest.mark.parametrize(
    "page, header, language", [("part-2", "code", "en"), ("part-2.zh", "关闭码", "zh")]
)
def test_tutorial_close_codes_match_the_code(page: str, header: str, language: str) -> None:
    """Part 2's table, in either language, has every code the server or Tornado sends, and
    the codes a client sees that nothing sends, which it says are never sent."""
    table_codes = codes(table(load(page).text, {header}))
    assert sendable_codes() | SEEN_NOT_SENT | {1000} <= set(table_codes)
    problems = [
        f"{code}: nothing sends it, and the row does not say it is never sent"
        for code, rows in table_codes.items()
        if code not in sendable_codes() and not all(NEVER_SENT[language] in row for row in rows)
    ]
    assert not problems, "\n".join(problems)


def english_texts() -> dict[str, str]:
    """The README and every English page, by name."""
    found = {"README": README.read_text(encoding="utf-8")}
    for page in ENGLISH:
        found[page] = PAGES[page].read_text(encoding="utf-8")
    return found


def texts() -> list[tuple[str, str, str]]:
    """(name, language, text) for the README and every page, English and Chinese."""
    found = [(name, "en", text) for name, text in english_texts().items()]
    found += [(page, "zh", PAGES[page].read_text(encoding="utf-8")) for page in CHINESE]
    return found


# Where a sentence ends, in each language: in Chinese after 。 or a full-width ! or ?.
SENTENCE_END = {
    "en": re.compile(r"(?<=[.!?])\s+(?=[A-Z`(])"),
    "zh": re.compile(r"(?<=[。\uff01\uff1f])\s*"),
}


def sentences(text: str, language: str = "en") -> list[str]:
    """The prose of a Markdown text cut into sentences, each table row one sentence."""
    prose = "\n".join(outside_code(text))
    found = []
    # A blank line, or an item of a list, starts a new paragraph.
    for paragraph in re.split(r"\n\s*\n|\n(?=\s*(?:[-*]|\d+\.) )", prose):
        if paragraph.lstrip().startswith("|"):
            found += paragraph.splitlines()
        else:
            found += SENTENCE_END[language].split(" ".join(paragraph.split()))
    return found


def outside_code(text: str) -> list[str]:
    """The lines of ``text`` outside fenced code blocks."""
    prose, fence = [], ""
    for line in text.splitlines():
        opening = FENCE.fullmatch(line.strip())
        if fence:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = ""
        elif opening:
            fence = opening.group(1)
        else:
            prose.append(line)
    return prose


def test_no_close_code_said_never_sent_is_sent() -> None:
    """A sentence (or table row) that says a close code is never sent names none that the
    server or Tornado sends: 1000 goes out when a ping is not answered."""
    problems = []
    for name, language, text in texts():
        for sentence in sentences(text, language):
            if NEVER_SENT_CLAIM[language].search(sentence):
                for code in map(int, CLOSE_CODE.findall(sentence)):
                    if code in sendable_codes():
                        problems.append(f"{name}: {code} is sent, yet: {sentence.strip()}")
    assert not problems, "\n".join(problems)


ORDINALS = {"first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "last": -1}
ORDINALS.update({"第一": 0, "第二": 1, "第三": 2, "第四": 3, "第五": 4, "最后一": -1})
# "the second line of `open()`", 「`open()` 的第二行」: the groups are the ordinal and the name.
ORDINAL_CLAIM = {
    "en": re.compile(
        r"\b(first|second|third|fourth|fifth|last) (?:line|statement)s? of "
        r"(?:[\w./`]+'s )?`([A-Za-z_][\w.]*)\(\)`"
    ),
    "zh": re.compile(
        r"`(?P<name>[A-Za-z_][\w.]*)\(\)`\s*的\s*(?P<ordinal>第[一二三四五]|最后一)(?:行|条语句)"
    ),
}
# Words before a claim that make it a request ("make it the first line of run()").
INSTRUCTION = {
    "en": re.compile(r"\b(?:[Mm]ake|[Pp]ut|[Aa]dd|[Ii]nsert|[Mm]ove)\b"),
    "zh": re.compile(r"把|放[到在进]|加[到在进]|插[到在入]|移[到至]|改成"),
}
# Where a claim's sentence ends; one ending in a colon may name the code block below it.
CLAIM_END = {
    "en": (re.compile(r"(?<=[.!?:])\s+(?=[A-Z`(])"), ":"),
    "zh": (re.compile(r"(?<=[。\uff01\uff1f\uff1a])\s*"), "\uff1a"),
}


def statements_of(name: str) -> list[list[str]]:
    """For each function called ``name`` (or ending in ``.name``) in the project's Python
    outside the tests, the source of each statement of its body on one line, docstring left
    out."""
    found = []
    for path in [*server_modules(), *sorted(DOCS.rglob("*.py"))]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(parsed(path)):
            body = getattr(node, "body", [])
            for item in body if isinstance(body, list) else []:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                qualified = f"{getattr(node, 'name', '')}.{item.name}"
                if not (qualified == name or qualified.endswith("." + name)):
                    continue
                statements = item.body[1:] if ast.get_docstring(item) else item.body
                found.append(
                    [
                        " ".join(" ".join(lines[s.lineno - 1 : s.end_lineno]).split())
                        for s in statements
                    ]
                )
    return found


def paragraphs(text: str) -> list[tuple[str, str]]:
    """Each paragraph of a Markdown text's prose, with the first line of the code block that
    follows it at once (its caption aside), or ""."""
    found: list[list[str]] = []
    current: list[str] = []
    fence = ""
    pending: int | None = None  # the paragraph just ended, with no prose after it yet

    def end_paragraph() -> None:
        nonlocal current, pending
        if current:
            found.append([" ".join(" ".join(current).split()), ""])
            pending = len(found) - 1
            current = []

    for line in text.splitlines():
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence, pending = "", None
            elif pending is not None and stripped:
                found[pending][1] = " ".join(stripped.split())
                pending = None
        elif opening := FENCE.fullmatch(stripped):
            end_paragraph()
            fence = opening.group(1)
        elif not stripped or CAPTION.fullmatch(stripped):
            end_paragraph()
        else:
            pending = None
            current.append(stripped)
    end_paragraph()
    return [(paragraph, below) for paragraph, below in found]


def test_ordinal_claims_about_lines_are_true() -> None:
    """ "`self.set_nodelay(True)` is the second line of `open()`": the sentence names a line in
    backquotes (or the code block after it begins with it), and that is the line it says."""
    problems = []
    for name, language, text in texts():
        end, colon = CLAIM_END[language]
        for paragraph, below in paragraphs(text):
            claims = [claim for claim in end.split(paragraph) if claim]
            for number, sentence in enumerate(claims):
                for claim in ORDINAL_CLAIM[language].finditer(sentence):
                    ordinal, function = (
                        claim.group(1, 2) if language == "en" else claim.group("ordinal", "name")
                    )
                    if INSTRUCTION[language].search(sentence[: claim.start()]):
                        continue  # "make it the first line of run()" asks; it does not claim
                    candidates = [
                        " ".join(code.split())
                        for code in re.findall(r"`([^`]+)`", sentence)
                        if code != f"{function}()"
                    ]
                    if number == len(claims) - 1 and sentence.endswith(colon) and below:
                        candidates.append(below)  # the line is the code block's first
                    index = ORDINALS[ordinal]
                    bodies = statements_of(function)
                    firsts = [body[index] for body in bodies if len(body) > max(index, 0)]
                    if not firsts:
                        problems.append(f"{name}: no function {function}(): {sentence}")
                    elif not any(c and c in line for c in candidates for line in firsts):
                        problems.append(
                            f"{name}: the {ordinal} line of {function}() is {firsts}, "
                            f"which this does not name: {sentence}"
                        )
    assert not problems, "\n".join(problems)


NUMBER_WORDS = {"a": 1, "one": 1, "ten": 10, "eleven": 11, "twenty": 20, "thirty": 30}


def code_number(pattern: str, path: str = "app.py") -> int:
    """A number written in a server file's source (app.py unless named), found by a regular
    expression."""
    found = re.search(pattern, (ROOT / path).read_text(encoding="utf-8"))
    assert found, f"{path} no longer matches {pattern!r}"
    return int(found.group(1))


def facts() -> list[tuple[str, str, int]]:
    """(document, pattern whose group is a number, the value the code gives it)."""
    import app

    options = defined_options()
    rate = options["max_messages_per_second"]
    idle = code_number(r"idle_connection_timeout=(\d+)")
    return [
        ("README", r"(\d+) printable characters", app.MAX_ID_LENGTH),
        ("en", r"longer than (\d+) characters", app.MAX_ID_LENGTH),
        ("zh", r"超过 (\d+) 个字符", app.MAX_ID_LENGTH),
        (
            "README",
            r"last (\d+) ticks",
            code_number(r"deque\(maxlen=(\d+)\)", "timepush/counters.py"),
        ),
        ("en", r"\((\d+) KiB\)", options["max_message_size"] // 1024),
        ("zh", r"\uff08(\d+) KiB\uff09", options["max_message_size"] // 1024),
        ("en", r"`--max_messages_per_second` \((\d+)\)", rate),
        ("zh", r"`--max_messages_per_second`\uff08(\d+) 条\uff09", rate),
        ("en", r"starts with (\w+) tokens", rate),
        ("en", r"come back at (\w+) a second", rate),
        ("zh", r"开始时有 (\d+) 个令牌", rate),
        ("zh", r"以每秒 (\d+) 个的速度补回", rate),
        ("en", r"send (\w+) messages at once", rate + 1),
        ("zh", r"一口气发送 (\d+) 条消息", rate + 1),
        ("en", r"i < (\d+)", rate + 1),
        ("zh", r"i < (\d+)", rate + 1),
        ("en", r"a ping every (\d+) seconds", int(options["ping_interval"])),
        ("zh", r"每 (\d+) 秒发送一次 ping", int(options["ping_interval"])),
        ("en", r"after (\d+) idle seconds", idle),
        ("zh", r"空闲 (\d+) 秒后断开", idle),
        ("README", r"localhost:(\d+)", options["port"]),
        ("en", r"localhost:(\d+)", options["port"]),
        ("zh", r"localhost:(\d+)", options["port"]),
    ]


def document_text(name: str) -> str:
    if name == "README":
        return README.read_text(encoding="utf-8")
    if name == "en":  # the pages that tell of this server's defaults, together
        return "\n".join(PAGES[page].read_text(encoding="utf-8") for page in DEFAULTS_TOLD)
    if name == "zh":  # the Chinese parts, which tell of the same defaults
        return "\n".join(PAGES[page].read_text(encoding="utf-8") for page in ZH_PARTS)
    return PAGES[name].read_text(encoding="utf-8")


def test_numbers_in_prose_match_the_code() -> None:
    """A number the prose takes from the code ("64 characters", "ten a second") is the code's."""
    problems = []
    for document, pattern, expected in facts():
        written = re.findall(pattern, document_text(document))
        if not written:
            problems.append(f"{document}: {pattern!r} no longer found; update this check")
        for word in written:
            value = int(word) if word.isdigit() else NUMBER_WORDS.get(word.lower())
            if value != expected:
                problems.append(f"{document}: {pattern!r} says {word}, the code {expected}")
    assert not problems, "\n".join(problems)


# CI runs the README's test command, so that a newcomer's first command is the one CI checks.

CI_SCRIPT = ROOT / ".ci" / "run"


def readme_test_block() -> str:
    """The shell block under the README's Test heading, backslash-newlines joined."""
    test = section(README.read_text(encoding="utf-8"), "Test")
    blocks = re.findall(r"^```sh\n(.*?)^```", test, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "expected one sh block under the README's Test heading"
    return blocks[0].replace("\\\n", " ").strip()


def ci_commands() -> list[list[str]]:
    """The commands of .ci/run, comments left out, a line's ``&&`` chain split up."""
    found = []
    for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for command in line.split("&&"):
            try:
                found.append(shlex.split(command.strip().strip("()").strip()))
            except ValueError:  # a quote left open for the next line: not a command sought
                found.append(command.split())
    return found


def same_command(readme: list[str], ci: list[str]) -> bool:
    """``ci`` is ``readme`` word for word, except that CI picks the Python and keeps its
    virtual environment elsewhere (never in the checkout's ``.venv``, which is the user's)."""
    if len(readme) != len(ci):
        return False
    for written, run in zip(readme, ci):
        if written == "python3":
            if "python" not in run:
                return False
        elif ".venv" in written:
            if not re.fullmatch(
                re.escape(written).replace(r"\.venv", r"(?!(\./)?\.venv\b)\S+"), run
            ):
                return False
        elif written != run:
            return False
    return True


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run makes a virtual environment, installs with the test extra and runs plain pytest,
    one after the other, exactly as the README's Test section tells a newcomer to."""
    written = readme_test_block()
    readme = [shlex.split(command) for command in written.split("&&")]
    assert [words[:2] for words in readme[-2:]] == [["pip", "install"], ["pytest"]], readme
    ci = ci_commands()
    for start in range(len(ci) - len(readme) + 1):
        if all(same_command(w, r) for w, r in zip(readme, ci[start : start + len(readme)])):
            return
    pytest.fail(f".ci/run does not run the README's test command, in this order: {written}")
