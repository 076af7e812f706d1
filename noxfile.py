"""Development tasks: ``nox -s tests lint typecheck docs bench``; by hand: ``abuse``, ``soak``."""

from __future__ import annotations

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
    """mypy --strict over the package, the tests, the examples and the abuse and soak scripts."""
    session.install("-e", ".[test,crc32c]", "mypy")
    session.run("mypy")
    session.run(
        "mypy",
        "--strict",
        "bench/abuse.py",
        "bench/soak.py",
        "bench/serverproc.py",
        "bench/thread_startstop.py",
    )


@nox.session(python=PYTHON[0])
def docs(session: nox.Session) -> None:
    """Check the docs: every Python example in docs/ and README.md compiles, every relative
    link points at a file that exists."""
    session.install("-e", ".")
    session.run("python", "docs/check_docs.py")


@nox.session(python=PYTHON[0])
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks: prints figures, never fails on them."""
    session.install("-e", ".[crc32c]")
    session.run("python", "bench/run.py", *session.posargs)
    session.run("python", "bench/large_message.py")


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
