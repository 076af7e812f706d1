"""Check the documentation: README.md and docs/*.md.

- Every fenced code block marked ``python`` (or ``py``) must compile (``compile()``: it is
  parsed, not run; the test suite runs every one, see ``tests/doc_runner.py``).
- Every relative Markdown link (``[text](path)``, ``![alt](path)``, ``[label]: path``) must point
  at a file or directory that exists, and a ``#fragment`` into a Markdown file must name one of
  its headings (GitHub's anchor rules). Links with a scheme (``https:``, ``mailto:``) are not
  checked; links inside code are ignored.

Prints each problem as ``file:line: message`` and exits 1 if there is any, else prints a summary
and exits 0. Standard library only: ``python docs/check_docs.py [ROOT]`` (ROOT defaults to the
repository this script lives in).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import unquote

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(?P<target><[^>]*>|[^\s)]+)")
_REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(?P<target><[^>]*>|\S+)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_PYTHON_INFO = frozenset({"python", "py", "python3"})


class Block:
    """A fenced code block: its info string, first content line (1-based) and text."""

    def __init__(self, info: str, line: int, text: str) -> None:
        self.info = info
        self.line = line
        self.text = text


def split_markdown(text: str) -> tuple[list[Block], list[tuple[int, str]]]:
    """The fenced code blocks, and the (line number, line) pairs outside them."""
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    fence: str | None = None
    info = ""
    start = 0
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence, info, start, body = m.group("fence"), m.group("info").strip(), number, []
            else:
                prose.append((number, line))
        elif m and m.group("fence").startswith(fence[0]) and len(m.group("fence")) >= len(fence):
            if not m.group("info").strip():
                blocks.append(Block(info, start + 1, "\n".join(body) + "\n"))
                fence = None
            else:
                body.append(line)
        else:
            body.append(line)
    if fence is not None:  # an unclosed fence runs to the end of the file
        blocks.append(Block(info, start + 1, "\n".join(body) + "\n"))
    return blocks, prose


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors_of(path: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ...)."""
    _, prose = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose:
        m = _HEADING.match(line)
        if not m:
            continue
        anchor = github_anchor(m.group("text"))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return frozenset(found)


def links(prose: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link outside code."""
    for number, line in prose:
        m = _REFERENCE_DEF.match(line)
        if m:
            yield number, m.group("target").strip("<>")
            continue
        for m in _INLINE_LINK.finditer(_CODE_SPAN.sub("", line)):
            yield number, m.group("target").strip("<>")


def check_link(source: Path, target: str) -> str | None:
    """A problem with one link, or None if it is fine."""
    if _SCHEME.match(target) or target.startswith("//"):
        return None
    path_part, _, fragment = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    dest = source if not path_part else (source.parent / path_part).resolve()
    if not dest.exists():
        return f"broken link {target!r}: {path_part} does not exist"
    is_markdown = dest.is_file() and dest.suffix.lower() == ".md"
    if fragment and is_markdown and unquote(fragment).lower() not in anchors_of(dest):
        return f"broken link {target!r}: no heading with anchor #{fragment} in {dest.name}"
    return None


def check_file(path: Path, root: Path) -> list[str]:
    """Every problem in one Markdown file, as ``file:line: message``."""
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    problems: list[str] = []
    blocks, prose = split_markdown(path.read_text(encoding="utf-8"))
    for block in blocks:
        language = block.info.split(maxsplit=1)[0].lower() if block.info else ""
        if language not in _PYTHON_INFO:
            continue
        try:
            compile(block.text, f"{name}:{block.line}", "exec", dont_inherit=True)
        except SyntaxError as exc:
            line = block.line + (exc.lineno or 1) - 1
            problems.append(f"{name}:{line}: python block does not compile: {exc.msg}")
    for number, target in links(prose):
        problem = check_link(path.resolve(), target)
        if problem:
            problems.append(f"{name}:{number}: {problem}")
    return problems


def markdown_files(root: Path) -> list[Path]:
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted((root / "docs").glob("*.md"))


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    root = root.resolve()
    files = markdown_files(root)
    if not files:
        print(f"check_docs: no README.md or docs/*.md under {root}", file=sys.stderr)
        return 1
    problems = [problem for path in files for problem in check_file(path, root)]
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_docs: {len(problems)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    print(f"check_docs: {len(files)} file(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
