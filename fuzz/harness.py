"""What every fuzz target shares: instrumentation, the libFuzzer entry point, input framing.

A target is one file ``fuzz/fuzz_<name>.py`` that defines:

- ``one_input(data: bytes) -> None``: run the code under test on one input and ``assert`` its
  invariants. Anything it raises is a finding.
- ``seeds(literals: Sequence[bytes]) -> Iterable[bytes]``: turn the byte strings of the test
  suite (see ``make_corpus.py``) into starting inputs in this target's input format.
- optionally ``DICTIONARY: Sequence[bytes]``: tokens for libFuzzer's ``-dict`` option, and
  ``MAX_LEN: int``: the longest input to try (default :data:`DEFAULT_MAX_LEN`).

and ends with::

    if __name__ == "__main__":
        harness.fuzz(one_input)

It imports the code under test inside ``with harness.instrumented(__name__, "package.module"):``
so the fuzzer gets coverage feedback from the named modules when the file is run as a program
(naming only the code under test keeps start-up quick and the coverage figures meaningful),
and imports it plainly otherwise (the seed replay test imports targets without atheris).
``run_all.py``, ``make_corpus.py``, the nox session and the smoke test find targets by their
file name: adding a target is adding one file.

This module must not import ``smtpd_trio``: whatever it imported before the ``with`` block would
not be instrumented.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final, Protocol, cast

#: The directory holding the targets.
FUZZ_DIR: Final = Path(__file__).resolve().parent
#: The repository root.
ROOT: Final = FUZZ_DIR.parent
#: Where corpora, dictionaries and crash files go by default (ignored by git).
DEFAULT_WORK_DIR: Final = FUZZ_DIR / "corpus"
#: The longest input libFuzzer tries when a target sets no MAX_LEN.
DEFAULT_MAX_LEN: Final = 4096
#: The packages instrumented for coverage feedback when a target names none.
INSTRUMENTED: Final = ("smtpd_trio",)

#: The most chunk lengths a framed input can carry (see :func:`unframe`).
MAX_CUTS: Final = 15


class Target(Protocol):
    """What a ``fuzz_<name>.py`` module provides (``DICTIONARY`` and ``MAX_LEN`` are optional)."""

    def one_input(self, data: bytes) -> None: ...

    def seeds(self, literals: Sequence[bytes]) -> Iterable[bytes]: ...


# ---- running ------------------------------------------------------------------------------------


@contextlib.contextmanager
def instrumented(module_name: str, *packages: str) -> Iterator[None]:
    """Instrument the modules of ``packages`` (default: all of ``smtpd_trio``) that are first
    imported in the block, if ``module_name`` is ``"__main__"``; otherwise do nothing."""
    if module_name != "__main__":
        yield
        return
    import atheris

    wanted = packages or INSTRUMENTED
    top = sorted({name.partition(".")[0] for name in wanted})
    # atheris includes whole top-level packages; leave out the modules not asked for.
    others = [m for m in _submodules(top) if not any(_within(m, w) for w in wanted)]
    with atheris.instrument_imports(include=top, exclude=others):
        yield


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _submodules(packages: Iterable[str]) -> Iterator[str]:
    """The names of the modules in ``packages``, found on disk without importing them."""
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        root = Path(spec.origin).parent
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts))


def fuzz(
    one_input: Callable[[bytes], None],
    *,
    also_instrument: Iterable[Callable[..., object]] = (),
    argv: Sequence[str] | None = None,
) -> None:
    """Hand ``one_input`` to libFuzzer with the command line's options; does not return.

    Besides the packages imported under :func:`instrumented`, the functions of the target's
    own module and of this one are instrumented (their branches tell the fuzzer which checks
    an input reached), and so is each of ``also_instrument``.
    """
    import atheris

    main = sys.modules["__main__"]
    for module in (main, sys.modules[__name__]):
        for value in list(vars(module).values()):
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                atheris.instrument_func(value)
    for function in also_instrument:
        atheris.instrument_func(function)
    atheris.Setup(list(sys.argv if argv is None else argv), one_input)
    atheris.Fuzz()


def target_names() -> list[str]:
    """The names of all targets (``fuzz_<name>.py`` files), sorted."""
    return sorted(p.stem.removeprefix("fuzz_") for p in FUZZ_DIR.glob("fuzz_*.py"))


def target_path(name: str) -> Path:
    return FUZZ_DIR / f"fuzz_{name}.py"


def load_target(name: str) -> Target:
    """Import a target as a plain module (not instrumented)."""
    if str(FUZZ_DIR) not in sys.path:
        sys.path.insert(0, str(FUZZ_DIR))
    module: ModuleType = importlib.import_module(f"fuzz_{name}")
    return cast(Target, module)


def dictionary(target: Target) -> Sequence[bytes]:
    return cast(Sequence[bytes], getattr(target, "DICTIONARY", ()))


def max_len(target: Target) -> int:
    return cast(int, getattr(target, "MAX_LEN", DEFAULT_MAX_LEN))


def libfuzzer_command(
    name: str,
    *,
    corpus_dirs: Sequence[Path],
    artifact_prefix: Path,
    dict_file: Path | None,
    options: Sequence[str] = (),
) -> list[str]:
    """The command line that fuzzes target ``name``; new inputs go to ``corpus_dirs[0]``."""
    target = load_target(name)
    command = [
        sys.executable,
        str(target_path(name)),
        *(str(d) for d in corpus_dirs),
        f"-artifact_prefix={artifact_prefix}",
        f"-max_len={max_len(target)}",
        # A few milliseconds is normal; a second means a pathological input worth a report.
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]
    if dict_file is not None:
        command.append(f"-dict={dict_file}")
    command.extend(options)
    return command


def write_dictionary(path: Path, tokens: Iterable[bytes]) -> None:
    """Write libFuzzer's dictionary format: one double-quoted, escaped token per line."""
    lines = []
    for token in tokens:
        escaped = "".join(
            chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}" for b in token
        )
        lines.append(f'"{escaped}"\n')
    path.write_text("".join(lines), encoding="ascii")


# ---- input framing ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Framed:
    """A framed input: flags, the chunks to feed, and the payload they split."""

    flags: int
    chunks: tuple[bytes, ...]
    payload: bytes


def unframe(data: bytes, flag_bytes: int = 1) -> Framed:
    """Decode ``flags, n, len_1 .. len_n, payload``: ``flag_bytes`` bytes of flags (big-endian),
    then one byte each.

    ``n`` is taken modulo ``MAX_CUTS + 1``; the lengths cut the payload into consecutive chunks
    (a zero length is an empty chunk, a length past the end takes what is left) and whatever
    remains is the last chunk. Missing bytes count as zero, so every input is valid.
    """
    flags = int.from_bytes(data[:flag_bytes].ljust(flag_bytes, b"\x00"), "big")
    data = data[flag_bytes:]
    n = data[0] % (MAX_CUTS + 1) if data else 0
    cuts = data[1 : 1 + n]
    payload = data[1 + n :]
    chunks = []
    pos = 0
    for cut in cuts:
        chunks.append(payload[pos : pos + cut])
        pos = min(pos + cut, len(payload))
    chunks.append(payload[pos:])
    return Framed(flags, tuple(chunks), payload)


def frame(payload: bytes, flags: int = 0, cuts: Sequence[int] = (), flag_bytes: int = 1) -> bytes:
    """The inverse of :func:`unframe` (lengths over 255 are not representable)."""
    if len(cuts) > MAX_CUTS:
        raise ValueError(f"at most {MAX_CUTS} cuts")
    return flags.to_bytes(flag_bytes, "big") + bytes([len(cuts), *cuts]) + payload


def bytewise(data: bytes) -> list[bytes]:
    """``data`` one byte at a time."""
    return [data[i : i + 1] for i in range(len(data))]


def lines_of(literals: Iterable[bytes]) -> Iterator[bytes]:
    """Every CRLF-separated line of every literal (without its CRLF), then the literals."""
    for literal in literals:
        yield from literal.split(b"\r\n")
        yield literal


# ---- mirrors of the machine's glue ------------------------------------------------------------


def sasl_b64decode(text: str) -> bytes | None:
    """Decode one SASL response the way the SMTP machine does (RFC 4954 §4): the machine's own
    ``decode_response`` (imported here, after the target chose what to instrument)."""
    from smtpd_trio._smtp.sasl import decode_response

    return decode_response(text)
