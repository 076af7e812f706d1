"""Build the seed corpora from the test suite's own byte strings.

Every ``bytes`` and ``str`` literal in ``tests/**/*.py`` (docstrings left out; ``str`` encoded
as UTF-8; ``a + b`` of two literals folded into one) is a transcript fragment someone thought
worth testing. Each target's ``seeds()`` turns them into inputs in its own format. The seeds are
written at run time, never committed::

    python fuzz/make_corpus.py [--out DIR] [TARGET ...]

writes ``DIR/seeds/<target>/<sha1>`` for each seed (keeping unchanged ones) and
``DIR/<target>.dict`` for targets with a dictionary. ``DIR`` defaults to ``fuzz/corpus``
(ignored by git).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import harness

#: Literals longer than this are left out (the fuzzer's inputs are a few kilobytes).
MAX_LITERAL = 8192


def _value(node: ast.expr) -> bytes | str | None:
    """The value of a literal, or of ``literal + literal`` (recursively); None otherwise."""
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes | str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _value(node.left), _value(node.right)
        if isinstance(left, bytes) and isinstance(right, bytes):
            return left + right
        if isinstance(left, str) and isinstance(right, str):
            return left + right
    return None


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ) and (
            node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        ):
            found.add(id(node.body[0].value))
    return found


def literals_in(source: str) -> Iterator[bytes]:
    """The byte-string values of the literals in one Python source file."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.expr):
            continue
        value = _value(node)
        if value is None:
            continue
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        if len(data) <= MAX_LITERAL:
            yield data


def collect_literals(tests_dir: Path = harness.ROOT / "tests") -> list[bytes]:
    """All distinct literals of the test suite, in a stable order."""
    found: set[bytes] = set()
    for path in sorted(tests_dir.rglob("*.py")):
        found.update(literals_in(path.read_text(encoding="utf-8")))
    return sorted(found, key=lambda b: (len(b), b))


def seeds_for(name: str, literals: Sequence[bytes]) -> list[bytes]:
    """The distinct seeds of target ``name``, in a stable order."""
    target = harness.load_target(name)
    limit = harness.max_len(target)
    return sorted({s for s in target.seeds(literals) if len(s) <= limit}, key=lambda b: (len(b), b))


def write_seeds(
    out: Path, names: Iterable[str], literals: Sequence[bytes], *, limit: int | None = None
) -> dict[str, int]:
    """Write the seeds (at most ``limit`` per target, evenly picked) and the dictionaries;
    return the seed count per target. Seeds no longer derived from the tests are removed."""
    counts = {}
    for name in names:
        seed_dir = out / "seeds" / name
        seed_dir.mkdir(parents=True, exist_ok=True)
        seeds = seeds_for(name, literals)
        if limit is not None and len(seeds) > limit:
            seeds = [seeds[i * len(seeds) // limit] for i in range(limit)]
        wanted = {hashlib.sha1(seed).hexdigest(): seed for seed in seeds}
        for stale in seed_dir.iterdir():
            if stale.name not in wanted:
                stale.unlink()
        for digest, seed in wanted.items():
            path = seed_dir / digest
            if not path.exists():
                path.write_bytes(seed)
        tokens = harness.dictionary(harness.load_target(name))
        if tokens:
            harness.write_dictionary(out / f"{name}.dict", tokens)
        counts[name] = len(seeds)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=harness.DEFAULT_WORK_DIR)
    parser.add_argument("targets", nargs="*", help="default: every target")
    args = parser.parse_args(argv)
    names = args.targets or harness.target_names()
    literals = collect_literals()
    counts = write_seeds(args.out, names, literals)
    print(f"{len(literals)} literals from tests/")
    for name, count in counts.items():
        print(f"  {name}: {count} seeds in {args.out / 'seeds' / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
