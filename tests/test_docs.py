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
- Both languages have the same sections, and each section shows the same snippets, names the
  same tests and has the same links (an in-page link counts by the heading it leads to).
- The facts around the code follow the code: the README's options table has a row for each
  ``define()`` with its default, the close-code tables match the ``CLOSE_*`` constants, the
  status table the ``HTTPError`` statuses, and numbers in prose ("64 characters", "ten a
  second") are listed in ``facts()`` with the code they come from.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
import shlex
from pathlib import Path
from typing import Any

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
        marker = FROM_MARKER.fullmatch(lines[number - 1].strip()) if number else None
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
        source = marker.group(1) if marker else None
        blocks.append(Block(path, start + 1, language.lower(), source, body))
    return Walkthrough(path, blocks, prose, prose_lines)


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


@dataclasses.dataclass
class Section:
    """What a section of a walkthrough holds, in terms both languages must share."""

    level: int
    title: str
    snippets: set[tuple[str | None, tuple[str, ...]]]
    tests: set[str]
    links: list[str]  # in-page anchors as the number of the heading they lead to
    fences: list[str]  # the language of each code block, in order


def sections(doc: Walkthrough) -> list[Section]:
    """Cut a walkthrough at every heading (the text before the first one is section 0)."""
    starts = [(0, 0, "")]
    for line, number in zip(doc.prose, doc.prose_lines):
        heading = HEADING.fullmatch(line)
        if heading:
            starts.append((number, len(heading.group(1)), heading.group(2)))
    anchors = {github_anchor(title): index for index, (_, _, title) in enumerate(starts)}
    other = {name.name for name in WALKTHROUGHS.values()} - {doc.path.name}
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
            else:
                links.append("the other language" if target in other else target)
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


def test_both_languages_have_the_same_sections() -> None:
    """Section for section, the two walkthroughs show the same code, tests and links."""
    english, chinese = sections(load("en")), sections(load("zh"))
    outline = "\n".join(
        f"{'#' * en.level} {en.title}  |  {'#' * zh.level} {zh.title}"
        for en, zh in zip(english, chinese)
    )
    assert [s.level for s in english] == [s.level for s in chinese], outline
    problems = []
    for en, zh in zip(english, chinese):
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


# Codes a client of this server can see although the server never sends them itself: the
# page's own Close (1000), a connection that broke (1006), and the standard's answer to text
# that is not UTF-8 (1007), which Tornado gives by dropping the connection instead.
SEEN_NOT_SENT = {1000, 1006, 1007}
NEVER_SENT = {"en": "never sent", "zh": "从不"}


def codes(rows: list[list[str]]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for row in rows:
        found.setdefault(int(plain(row[0])), []).append(" | ".join(row[1:]))
    return found


def test_readme_close_codes_match_constants() -> None:
    """The README's close codes are exactly the CLOSE_* constants, reasons as the code says."""
    constants = set(close_constants().values())
    assert constants, "no CLOSE_* constants found"
    rows = table(README.read_text(encoding="utf-8"), {"code"})
    assert set(codes(rows)) == constants
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


@pytest.mark.parametrize("language", WALKTHROUGHS)
def test_walkthrough_close_codes_match_constants(language: str) -> None:
    """The walkthrough's table has every CLOSE_* code, and says so of codes never sent."""
    constants = set(close_constants().values())
    table_codes = codes(table(load(language).text, {"code", "关闭码"}))
    assert constants | SEEN_NOT_SENT <= set(table_codes)
    problems = [
        f"{code}: no CLOSE_* constant, and the row does not say it is never sent"
        for code, rows in table_codes.items()
        if code not in constants and not all(NEVER_SENT[language] in row for row in rows)
    ]
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
    return WALKTHROUGHS[name].read_text(encoding="utf-8")


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
