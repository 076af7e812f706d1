"""Development tasks: ``nox -s tests lint typecheck docs bench``; by hand: ``build``, ``abuse``,
``soak``, ``fuzz``."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.default_venv_backend = "venv"

PYTHON = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHON[0])
def tests(session: nox.Session) -> None:
    """The whole test suite (the README's command)."""
    session.install("-e", ".[test,crc32c]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON[0])
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON[0])
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the tests, the examples, the fuzz targets and the abuse
    and soak scripts."""
    session.install("-e", ".[test,crc32c]", "mypy")
    session.run("mypy")
    session.run(
        "mypy",
        "--strict",
        "bench/abuse.py",
        "bench/soak.py",
        "bench/serverproc.py",
        "bench/metrics_cost.py",
        "bench/thread_startstop.py",
    )


@nox.session(python=PYTHON[0])
def docs(session: nox.Session) -> None:
    """Build the documentation site into docs/_build/html: Sphinx over the Markdown pages and
    an API reference from the docstrings, every warning (a broken reference included) an
    error, nothing fetched from the network. First, docs/check_docs.py checks every relative
    link and anchor, and that every Python example compiles (tests/test_docs.py runs them)."""
    session.install("-e", ".[docs]")
    session.run("python", "docs/check_docs.py")
    session.run(
        "sphinx-build",
        *("-W", "--keep-going", "-n", "-E", "-b", "html"),
        *("docs", "docs/_build/html"),
        *session.posargs,
    )


@nox.session(python=PYTHON[0])
def build(session: nox.Session) -> None:
    """Build the source and wheel distributions into dist/ (``python -m build``), then check
    them: ``twine check --strict``, and what each must (and must not) contain."""
    session.install("build", "twine")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist")
    files = sorted(str(path) for path in Path("dist").iterdir())
    session.run("twine", "check", "--strict", *files)
    problems = check_distributions(Path("dist"))
    if problems:
        session.error("; ".join(problems))
    session.log(f"dist/ holds {len(files)} checked distributions")


def check_distributions(dist: Path) -> list[str]:
    """What is wrong with the one wheel and the one sdist in ``dist``: the wheel must hold
    py.typed and the licence and no tests; the sdist the licence, changelog, docs and tests."""
    problems: list[str] = []
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"expected one wheel and one sdist in {dist}, found {wheels + sdists}"]
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
    if "smtpd_trio/py.typed" not in names:
        problems.append("the wheel has no smtpd_trio/py.typed")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("the wheel has no LICENSE in its .dist-info")
    strays = [n for n in names if n.split("/")[0] != "smtpd_trio" and ".dist-info/" not in n]
    tests = [n for n in names if "/tests/" in f"/{n}" or n.split("/")[-1].startswith("test_")]
    if strays or tests:
        problems.append(f"the wheel holds files it should not: {sorted(set(strays + tests))}")
    with tarfile.open(sdists[0]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    needed = ("LICENSE", "CHANGELOG.md", "README.md", "smtpd_trio/py.typed", "docs/conf.py")
    problems += [f"the sdist has no {name}" for name in needed if name not in members]
    if not any(name.startswith("tests/") for name in members):
        problems.append("the sdist has no tests")
    return problems


@nox.session(python=PYTHON[0])
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks: prints figures, never fails on them."""
    session.install("-e", ".[crc32c]")
    session.run("python", "bench/run.py", *session.posargs)
    session.run("python", "bench/large_message.py")


@nox.session(python=PYTHON[0])
def instructions(session: nox.Session) -> None:
    """Instructions per message and per connection under Valgrind, smtpd-trio beside the floor
    and aiosmtpd: figures a shared machine's load does not move, for before/after."""
    session.install("-e", ".")
    session.run("python", "bench/instructions.py", *session.posargs)


@nox.session(python=PYTHON[0])
def abuse(session: nox.Session) -> None:
    """Attacks on an open port, smtpd-trio beside aiosmtpd (docs/abuse.md); ``-- --quick`` for
    a short run. Prints a table, never fails on a figure."""
    session.install("-e", ".")
    session.run("python", "bench/abuse.py", *session.posargs)


@nox.session(python=PYTHON[0])
def soak(session: nox.Session) -> None:
    """A million messages through the Maildir handler (docs/abuse.md); ``-- --messages N`` for
    fewer. Fails if a 250 is not a stored file, a file has no 250, or RSS grows."""
    session.install("-e", ".")
    session.run("python", "bench/soak.py", *session.posargs)


@nox.session(python=PYTHON[0])
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the parsers, one target after the other (fuzz/README.md):
    ``nox -s fuzz -- --seconds 300`` per target (default 60), or ``-- --runs N``, optionally
    followed by target names. Not a default session: it runs for minutes."""
    session.install("-e", ".[fuzz,crc32c]")
    session.run("python", "fuzz/run_all.py", *session.posargs)
