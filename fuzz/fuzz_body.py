"""Fuzz the DATA body reader, ``smtpd_trio._smtp.body.BodyReader``.

Input: a framed input (``harness.unframe`` with two flag bytes): the flags pick the
configuration, the cut lengths split the payload into the chunks to feed. Flag bits: 0 the bare
line ending policy (KEEP if set), 1-3 the line limit, 4-6 the size limit (from the tables below;
never both None, which ``Config`` refuses), 7 streaming (``take()`` after every chunk, as
``Handler.on_data_chunks`` does), 8 the NUL policy (REJECT if set), 9-11 the memory budget (none,
or a fresh ``MemoryBudget`` of a limit from the table).

Asserted, against a reference model written from RFC 5321 here (not from the reader's code):

- ``feed`` never raises;
- fed whole, in the fuzzer's chunks, or one byte at a time (payloads up to 256 bytes), the
  reader gives the same :class:`BodyResult` (content, problem, size, reserved) and the same
  bytes after the terminator;
- it returns a result exactly when the bytes fed so far first contain the end of the message
  (``<CRLF>.<CRLF>``, or ``.<CRLF>`` at the very start), never earlier or later, and what it
  reports as trailing is exactly the input after that ``.<CRLF>``;
- the result is the model's: the un-stuffed text, its size, and the gravest problem (a bare CR
  or LF under REJECT, a NUL under REJECT, a line over the limit, the size, then the budget);
- with streaming, what ``take()`` handed out plus the final content is the whole text, and is
  always a prefix of it;
- the budget: a kept message holds exactly its size, a refused one nothing, the budget never
  goes over its limit, and ``abandon()`` gives everything back;
- memory stays bounded: after each ``feed`` the held partial line is at most the line limit
  (or the size limit + 1), and the held text at most the size limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Final

import harness

with harness.instrumented(__name__, "smtpd_trio._smtp.body"):
    from smtpd_trio._smtp.body import (
        BareLineEndings,
        BodyProblem,
        BodyReader,
        BodyResult,
        MemoryBudget,
        NulOctets,
    )

MAX_LEN: Final = 4096
FLAG_BYTES: Final = 2
DICTIONARY: Final = (
    b"\r\n.\r\n",
    b".\r\n",
    b"\r\n..",
    b"\r\n",
    b"\r",
    b"\n",
    b".\n",
    b"\r.\r",
    b"\x00",
)

LINE_LIMITS: Final[tuple[int | None, ...]] = (1000, None, 1, 2, 3, 4, 10, 78)
SIZE_LIMITS: Final[tuple[int | None, ...]] = (None, 1, 2, 5, 16, 100, 1000, 10_240_000)
#: No budget (-1), a budget that only counts (None), or one with a limit.
BUDGETS: Final[tuple[int | None, ...]] = (-1, None, 0, 1, 5, 100, 1000, 10_240_000)
#: Payloads up to this long are also fed one byte at a time (longer ones cost too many runs).
BYTEWISE_MAX: Final = 256
#: The reader always keeps a partial line of 2 octets (it may be the ".<CR>" of the end).
MIN_HELD: Final = 2

Outcome = tuple[BodyResult, bytes] | None


@dataclasses.dataclass(frozen=True)
class Settings:
    policy: BareLineEndings
    max_line: int | None
    max_size: int | None
    stream: bool
    nul: NulOctets
    budget: int | None  # -1: no budget

    @classmethod
    def from_flags(cls, flags: int) -> Settings:
        max_line = LINE_LIMITS[(flags >> 1) & 7]
        max_size = SIZE_LIMITS[(flags >> 4) & 7]
        if max_line is None and max_size is None:
            max_size = SIZE_LIMITS[-1]
        return cls(
            policy=BareLineEndings.KEEP if flags & 1 else BareLineEndings.REJECT,
            max_line=max_line,
            max_size=max_size,
            stream=bool(flags & 0x80),
            nul=NulOctets.REJECT if flags & 0x100 else NulOctets.KEEP,
            budget=BUDGETS[(flags >> 9) & 7],
        )

    def new_budget(self) -> MemoryBudget | None:
        return None if self.budget == -1 else MemoryBudget(self.budget)


def reference(data: bytes, s: Settings) -> tuple[int, bytes, BodyProblem | None] | None:
    """Where the message ends in ``data`` (the offset after its ``.<CRLF>``), its un-stuffed
    text and its problem; None if ``data`` holds no end."""
    if data.startswith(b".\r\n"):
        end = 0
    else:
        found = data.find(b"\r\n.\r\n")
        if found < 0:
            return None
        end = found + 2
    lines = data[:end].split(b"\r\n")[:-1]
    text = b"".join((line[1:] if line[:1] == b"." else line) + b"\r\n" for line in lines)
    problem = None
    if s.policy is BareLineEndings.REJECT and any(b"\r" in ln or b"\n" in ln for ln in lines):
        problem = BodyProblem.BARE_LINE_ENDING
    elif s.nul is NulOctets.REJECT and b"\x00" in text:
        problem = BodyProblem.NUL
    elif s.max_line is not None and any(len(line) > s.max_line - 2 for line in lines):
        problem = BodyProblem.LINE_TOO_LONG
    elif s.max_size is not None and len(text) > s.max_size:
        problem = BodyProblem.TOO_BIG
    elif s.budget is not None and s.budget >= 0 and len(text) > s.budget:
        problem = BodyProblem.NO_MEMORY
    return end + 3, text, problem


def feed(
    chunks: Sequence[bytes], s: Settings, expected_end: int | None
) -> tuple[Outcome, bytes, MemoryBudget | None]:
    """Feed ``chunks`` until a result; return it with all bytes after the terminator, what
    ``take()`` handed out on the way, and the budget."""
    budget = s.new_budget()
    reader = BodyReader(
        max_size=s.max_size,
        max_line_length=s.max_line,
        bare_line_endings=s.policy,
        nul_octets=s.nul,
        budget=budget,
    )
    partial_bound = s.max_line
    if s.max_size is not None:
        partial_bound = min(s.max_line or s.max_size + 1, s.max_size + 1)
    assert partial_bound is not None
    fed = 0
    taken: list[bytes] = []
    for i, chunk in enumerate(chunks):
        result = reader.feed(chunk)
        fed += len(chunk)
        if result is not None:
            assert expected_end is not None, "a result without an end of message"
            assert fed - len(chunk) < expected_end <= fed, (fed, len(chunk), expected_end)
            outcome = (result, reader.trailing + b"".join(chunks[i + 1 :]))
            return outcome, b"".join(taken), budget
        assert expected_end is None or fed < expected_end, "the end of message was missed"
        assert len(reader._buf) <= max(partial_bound, MIN_HELD), (len(reader._buf), partial_bound)
        if s.max_size is not None:
            assert reader._stored <= s.max_size
        if budget is not None and budget.limit is not None:
            assert budget.in_use <= budget.limit
        if s.stream:
            taken.append(reader.take())
    reader.abandon()
    if budget is not None:
        assert budget.in_use == 0, budget.in_use
    return None, b"".join(taken), budget


def one_input(data: bytes) -> None:
    framed = harness.unframe(data, FLAG_BYTES)
    s = Settings.from_flags(framed.flags)
    payload = framed.payload
    model = reference(payload, s)
    expected_end = None if model is None else model[0]
    ways = [framed.chunks, (payload,)]
    if len(payload) <= BYTEWISE_MAX:
        ways.append(tuple(harness.bytewise(payload)))
    verdicts = []
    for chunks in ways:
        outcome, taken, budget = feed(chunks, s, expected_end)
        if model is None:
            assert outcome is None
            continue
        end, text, problem = model
        assert outcome is not None
        result, trailing = outcome
        assert trailing == payload[end:]
        assert result.problem is problem, (result.problem, problem)
        assert result.size == len(text), (result.size, len(text))
        assert text.startswith(taken)
        if problem is None:
            assert taken + result.content == text
        else:
            assert result.content == b""
        if budget is None or problem is not None:
            assert result.reserved == 0, result
        else:
            assert result.reserved == len(text), (result.reserved, len(text))
        if budget is not None:
            assert budget.in_use == result.reserved, (budget.in_use, result.reserved)
            assert budget.limit is None or budget.peak <= budget.limit
        # What take() handed out depends on the chunks (for a refused message, how much went
        # out before the problem showed); the message as a whole must not.
        whole = taken + result.content if problem is None else b""
        verdicts.append((whole, result.problem, result.size, result.reserved, trailing))
    assert all(v == verdicts[0] for v in verdicts), verdicts


#: Configurations the seeds cycle through: defaults, KEEP, streaming, tight limits, NUL
#: refused, a small budget.
SEED_FLAGS: Final = (0x000, 0x001, 0x080, 0b0101_1000, 0b0011_0111, 0x100, 0b1000_0000_0000)


def seeds(literals: Sequence[bytes]) -> Iterable[bytes]:
    """Every literal as it is, and as a message (what follows ``DATA<CRLF>`` in it, ended by
    ``<CRLF>.<CRLF>`` if it has no end), cycling through a few configurations and cuts."""
    for i, literal in enumerate(literals):
        yield harness.frame(literal, flag_bytes=FLAG_BYTES)
        body = literal.split(b"DATA\r\n", 1)[-1]
        if not (body.startswith(b".\r\n") or b"\r\n.\r\n" in body):
            body += b"\r\n.\r\n"
        third = len(body) // 3 % 256
        flags = SEED_FLAGS[i % len(SEED_FLAGS)]
        yield harness.frame(body, flags, [third, third][: i % 3], flag_bytes=FLAG_BYTES)


if __name__ == "__main__":
    harness.fuzz(one_input)
