"""Sphinx configuration for the documentation site.

The pages are the Markdown files in this directory (parsed by MyST), which also read well on
GitHub; ``api.md`` adds a reference generated from the docstrings. Build it with
``nox -s docs``, or by hand::

    python -m pip install -e '.[docs]'
    sphinx-build -W --keep-going -n -b html docs docs/_build/html

The build needs no network: there is no intersphinx (its inventories would be fetched), so
references to the standard library, Trio and attrs stay plain text (see ``nitpick_ignore_regex``).
"""

from __future__ import annotations

import re
from pathlib import Path

from sphinx.application import Sphinx

import smtpd_trio

project = "smtpd-trio"
author = "The smtpd-trio developers"
copyright = "The smtpd-trio developers"
release = smtpd_trio.__version__
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Every "#fragment" in a link is a GitHub heading anchor; MyST makes the same ones.
myst_heading_anchors = 6

html_theme = "furo"
html_title = f"smtpd-trio {release}"

# Document what the code says, in the order it says it; a public attribute without a docstring
# (ProxyInfo.source_address, ClientReply.code) is still listed, with its type.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True, "undoc-members": True}

# A reference that does not resolve is an error (the build runs with -W) unless it names
# something outside this project: without intersphinx those cannot resolve. Internal names
# that are deliberately not documented are listed too.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(trio|ssl|enum|ipaddress|collections\.abc|typing|datetime|_dt|os|attrs|email)(\..*)?",
    ),
    # Private modules' classes that public signatures mention, and the optional
    # prometheus-client's.
    (r"py:.*", r"smtpd_trio\.handlers\._upstream\..*"),
    (r"py:.*", r"prometheus_client(\..*)?"),
    # Type variables, and the private modules public classes derive from.
    (r"py:.*", r"(smtpd_trio\.handler\.)?StateT"),
    (r"py:.*", r"smtpd_trio\._smtp\..*"),
]

#: Where links to repository files outside docs/ point on the site (on GitHub they are
#: relative and work as they are).
SOURCE_URL = "https://github.com/smtpd-trio/smtpd-trio/blob/main/"
TREE_URL = "https://github.com/smtpd-trio/smtpd-trio/tree/main/"

_DOCS = Path(__file__).resolve().parent
_REPO = _DOCS.parent
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_OUTSIDE_LINK = re.compile(r"\]\((\.\./[^)\s#]*)(#[^)\s]*)?\)")


def repository_links(text: str) -> str:
    """Markdown with its links to files outside docs/ (``../examples/minimal.py``) made
    absolute links to the repository; links into docs/ and code blocks are left alone."""

    def absolute(match: re.Match[str]) -> str:
        target = (_DOCS / match.group(1)).resolve()
        if target.is_relative_to(_DOCS) or not target.is_relative_to(_REPO):
            return match.group(0)
        relative = target.relative_to(_REPO).as_posix()
        base = TREE_URL if target.is_dir() else SOURCE_URL
        return f"]({base}{relative}{match.group(2) or ''})"

    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and m and m.group(1).startswith(fence):
            fence = None
        elif fence is None:
            line = _OUTSIDE_LINK.sub(absolute, line)
        out.append(line)
    return "".join(out)


def _rewrite_source(app: Sphinx, docname: str, source: list[str]) -> None:
    source[0] = repository_links(source[0])


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("source-read", _rewrite_source)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
