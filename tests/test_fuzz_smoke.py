"""The fuzz targets of fuzz/ in the test suite: every seed through every target (no fuzzer
needed), and a short coverage-guided run of each target with atheris, in a subprocess.

The long runs are ``nox -s fuzz``; see fuzz/README.md.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Sequence
from pathlib import Path

import harness
import make_corpus
import pytest
from packaging.requirements import Requirement

#: Mutations per target in the short run, on top of the sampled seeds.
SMOKE_RUNS = 500
#: Seeds per target in the short run (the replay test runs all of them).
SMOKE_SEEDS = 200
#: Only a hung subprocess ever gets near this; the runs take a second or two.
HANG_GUARD = 600

TARGETS = harness.target_names()


def atheris_expected() -> bool:
    """Whether the ``test`` extra installs atheris on this Python (its marker says so)."""
    pyproject = tomllib.loads((harness.ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for spec in pyproject["project"]["optional-dependencies"]["test"]:
        requirement = Requirement(spec)
        if requirement.name == "atheris":
            return requirement.marker is None or requirement.marker.evaluate()
    return False


@pytest.fixture(scope="module")
def literals() -> list[bytes]:
    return make_corpus.collect_literals()


@pytest.fixture
def atheris_installed() -> None:
    if importlib.util.find_spec("atheris") is not None:
        return
    if atheris_expected():
        pytest.fail(
            "atheris is missing but the test extra installs it here: pip install -e '.[test]'"
        )
    pytest.skip(
        f"atheris cannot be installed on {platform.python_implementation()} "
        f"{platform.python_version()} {sys.platform}/{platform.machine()} (no wheel): "
        "fuzz smoke run skipped; the seed replay still ran"
    )


def run(
    command: Sequence[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=harness.ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )


# ---- the pieces ---------------------------------------------------------------------------------


def test_literals_are_collected_folded_and_without_docstrings() -> None:
    source = textwrap.dedent('''
        """Module docstring."""
        def f() -> None:
            """Function docstring."""
            x = b"EHLO " + b"a\\r\\n"
            y = "caf\\u00e9"
    ''')
    found = set(make_corpus.literals_in(source))
    assert found == {b"EHLO ", b"a\r\n", b"EHLO a\r\n", "café".encode()}


def test_framing_covers_the_payload_in_order() -> None:
    framed = harness.unframe(harness.frame(b"abcdefgh", 0x81, [3, 0, 2]))
    assert framed.flags == 0x81
    assert framed.payload == b"abcdefgh"
    assert framed.chunks == (b"abc", b"", b"de", b"fgh")
    # Lengths past the end take what is left; short inputs are still valid.
    assert harness.unframe(bytes([0, 2, 200, 9]) + b"xy").chunks == (b"xy", b"", b"")
    assert harness.unframe(b"").chunks == (b"",)
    assert harness.unframe(b"\x07").flags == 7
    wide = harness.frame(b"xyz", 0x1234, [1], flag_bytes=2)
    assert harness.unframe(wide, flag_bytes=2) == harness.Framed(0x1234, (b"x", b"yz"), b"xyz")
    assert harness.unframe(b"\x01", flag_bytes=2).flags == 0x0100


def test_targets_are_found() -> None:
    assert {"base64", "body", "commands", "dsn", "proxy", "sasl"} <= set(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_come_from_the_tests(name: str, literals: list[bytes]) -> None:
    seeds = make_corpus.seeds_for(name, literals)
    assert len(seeds) >= 100, f"only {len(seeds)} seeds for {name}: did the tests change shape?"
    assert all(len(s) <= harness.max_len(harness.load_target(name)) for s in seeds)


@pytest.mark.parametrize("name", TARGETS)
def test_every_seed_passes_its_target(name: str, literals: list[bytes]) -> None:
    """The invariants hold on everything the test suite exercises (no fuzzer needed)."""
    target = harness.load_target(name)
    for seed in make_corpus.seeds_for(name, literals):
        try:
            target.one_input(seed)
        except Exception as error:
            raise AssertionError(f"fuzz_{name} fails on seed {seed!r}") from error


# ---- short fuzzing runs -------------------------------------------------------------------------


@pytest.mark.usefixtures("atheris_installed")
@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_briefly(name: str, literals: list[bytes], tmp_path: Path) -> None:
    counts = make_corpus.write_seeds(tmp_path, [name], literals, limit=SMOKE_SEEDS)
    seeds = tmp_path / "seeds" / name
    work = tmp_path / "work"
    work.mkdir()
    command = harness.libfuzzer_command(
        name,
        corpus_dirs=[work, seeds],
        artifact_prefix=tmp_path / f"{name}-",
        dict_file=tmp_path / f"{name}.dict" if (tmp_path / f"{name}.dict").exists() else None,
        options=[f"-runs={counts[name] + SMOKE_RUNS}", "-seed=1"],
    )
    done = run(command)
    assert done.returncode == 0, f"fuzz_{name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    executed = re.search(r"^stat::number_of_executed_units:\s+(\d+)", done.stderr, re.MULTILINE)
    assert executed is not None, done.stderr[-3000:]
    assert int(executed.group(1)) >= SMOKE_RUNS
    assert not list(tmp_path.glob(f"{name}-crash-*"))


@pytest.mark.usefixtures("atheris_installed")
def test_a_failing_target_fails_and_its_crash_reproduces(tmp_path: Path) -> None:
    """The smoke run can fail: a target whose invariant breaks exits non-zero, writes the
    input, and running the target on that file shows the error again (fuzz/README.md)."""
    target = tmp_path / "fuzz_broken.py"
    target.write_text(
        textwrap.dedent("""
            import harness

            def one_input(data: bytes) -> None:
                assert not data.startswith(b"boom"), "invariant broken"

            if __name__ == "__main__":
                harness.fuzz(one_input)
        """),
        encoding="utf-8",
    )
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seed").write_bytes(b"boom!")
    env = {**os.environ, "PYTHONPATH": str(harness.FUZZ_DIR)}
    done = run(
        [sys.executable, str(target), str(corpus), f"-artifact_prefix={tmp_path}/", "-runs=100"],
        env=env,
    )
    assert done.returncode != 0
    assert "AssertionError: invariant broken" in done.stdout  # atheris prints the traceback there
    crashes = list(tmp_path.glob("crash-*"))
    assert len(crashes) == 1
    assert crashes[0].read_bytes() == b"boom!"
    again = run([sys.executable, str(target), str(crashes[0])], env=env)
    assert again.returncode != 0
    assert "AssertionError: invariant broken" in again.stdout
