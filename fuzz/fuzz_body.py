"""Fuzz the DATA body reader, ``smtpd_trio._smtp.body.BodyReader``.

Input: a framed input (``harness.unframe``): the flags byte picks the configuration, the cut
lengths split the payload into the chunks to feed. Flags: bit 0 the bare line ending policy
(KEEP if set), bits 1-3 the line limit, bits 4-6 the size limit (from the tables below; never
both None, which ``Config`` refuses), bit 7 streaming (``take()`` after every chunk, as
``Handler.on_data_chunks`` does).

Asserted, against a reference model written from RFC 5321 here (not from the reader's code):

- ``feed`` never raises;
- fed whole, in the fuzzer's chunks, or one byte at a time, the reader gives the same
  :class:`BodyResult` (content, problem, size) and the same bytes after the terminator;
- it returns a result exactly when the bytes fed so far first contain the end of the message
  (``<CRLF>.<CRLF>``, or ``.<CRLF>`` at the very start), never earlier or later, and what it
  reports as trailing is exactly the input after that ``.<CRLF>``;
- the result is the model's: the un-stuffed text, its size, and the gravest problem (a bare CR
  or LF under REJECT, then a line over the limit, then the size);
- with streaming, what ``take()`` handed out plus the final content is the whole text, and is
  always a prefix of it;
- memory stays bounded: after each ``feed`` the held partial line is at most the line limit
  (or the size limit + 1), and the held text at most the size limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import harness

with harness.instrumented(__name__, "smtpd_trio._smtp.body"):
    from smtpd_trio._smtp.body import BareLineEndings, BodyProblem, BodyReader, BodyResult

MAX_LEN: Final = 4096
DICTIONARY: Final = (b"\r\n.\r\n", b".\r\n", b"\r\n..", b"\r\n", b"\r", b"\n", b".\n", b"\r.\r")

LINE_LIMITS: Final[tuple[int | None, ...]] = (1000, None, 1, 2, 3, 4, 10, 78)
SIZE_LIMITS: Final[tuple[int | None, ...]] = (None, 1, 2, 5, 16, 100, 1000, 10_240_000)
#: The reader always keeps a partial line of 2 octets (it may be the ".<CR>" of the end).
MIN_HELD: Final = 2

Outcome = tuple[BodyResult, bytes] | None


def config(flags: int) -> tuple[BareLineEndings, int | None, int | None, bool]:
    policy = BareLineEndings.KEEP if flags & 1 else BareLineEndings.REJECT
    max_line = LINE_LIMITS[(flags >> 1) & 7]
    max_size = SIZE_LIMITS[(flags >> 4) & 7]
    if max_line is None and max_size is None:
        max_size = SIZE_LIMITS[-1]
    return policy, max_line, max_size, bool(flags & 0x80)


def reference(
    data: bytes, policy: BareLineEndings, max_line: int | None, max_size: int | None
) -> tuple[int, bytes, BodyProblem | None] | None:
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
    if policy is BareLineEndings.REJECT and any(b"\r" in ln or b"\n" in ln for ln in lines):
        problem = BodyProblem.BARE_LINE_ENDING
    elif max_line is not None and any(len(line) > max_line - 2 for line in lines):
        problem = BodyProblem.LINE_TOO_LONG
    elif max_size is not None and len(text) > max_size:
        problem = BodyProblem.TOO_BIG
    return end + 3, text, problem


def feed(
    chunks: Sequence[bytes],
    policy: BareLineEndings,
    max_line: int | None,
    max_size: int | None,
    stream: bool,
    expected_end: int | None,
) -> tuple[Outcome, bytes]:
    """Feed ``chunks`` until a result; return it with all bytes after the terminator, and what
    ``take()`` handed out on the way."""
    reader = BodyReader(max_size=max_size, max_line_length=max_line, bare_line_endings=policy)
    partial_bound = max_line
    if max_size is not None:
        partial_bound = min(max_line or max_size + 1, max_size + 1)
    assert partial_bound is not None
    fed = 0
    taken: list[bytes] = []
    for i, chunk in enumerate(chunks):
        result = reader.feed(chunk)
        fed += len(chunk)
        if result is not None:
            assert expected_end is not None, "a result without an end of message"
            assert fed - len(chunk) < expected_end <= fed, (fed, len(chunk), expected_end)
            return (result, reader.trailing + b"".join(chunks[i + 1 :])), b"".join(taken)
        assert expected_end is None or fed < expected_end, "the end of message was missed"
        held = reader._buf
        assert len(held) <= max(partial_bound, MIN_HELD), (len(held), partial_bound)
        if max_size is not None:
            assert sum(map(len, reader._parts)) <= max_size
        if stream:
            taken.append(reader.take())
    return None, b"".join(taken)


def one_input(data: bytes) -> None:
    framed = harness.unframe(data)
    policy, max_line, max_size, stream = config(framed.flags)
    payload = framed.payload
    model = reference(payload, policy, max_line, max_size)
    expected_end = None if model is None else model[0]
    ways = [framed.chunks, (payload,)]
    if len(payload) <= 1024:
        ways.append(tuple(harness.bytewise(payload)))
    verdicts = []
    for chunks in ways:
        outcome, taken = feed(chunks, policy, max_line, max_size, stream, expected_end)
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
        # What take() handed out depends on the chunks (for a refused message, how much went
        # out before the problem showed); the message as a whole must not.
        whole = taken + result.content if problem is None else b""
        verdicts.append((whole, result.problem, result.size, trailing))
    assert all(v == verdicts[0] for v in verdicts), verdicts


#: Configurations the seeds cycle through: defaults, KEEP, streaming, tight limits.
SEED_FLAGS: Final = (0x00, 0x01, 0x80, 0b0101_1000, 0b0011_0111)


def seeds(literals: Sequence[bytes]) -> Iterable[bytes]:
    """Every literal as it is, and as a message (what follows ``DATA<CRLF>`` in it, ended by
    ``<CRLF>.<CRLF>`` if it has no end), cycling through a few configurations and cuts."""
    for i, literal in enumerate(literals):
        yield harness.frame(literal)
        body = literal.split(b"DATA\r\n", 1)[-1]
        if reference(body, BareLineEndings.KEEP, None, None) is None:
            body += b"\r\n.\r\n"
        third = len(body) // 3 % 256
        yield harness.frame(body, SEED_FLAGS[i % len(SEED_FLAGS)], [third, third][: i % 3])


if __name__ == "__main__":
    harness.fuzz(one_input)
