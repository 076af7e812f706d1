"""The CLI's log formatters and buffered handler, in process, with synthetic records.

End-to-end runs (a real process logging through them) are in test_cli.py.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpd_trio.cli import (
    BufferedLogHandler,
    JSONFormatter,
    TextFormatter,
    _line_chunks,
)
from smtpd_trio.handler import Endpoint

# 2026-12-03T10:00:00.123Z
CREATED = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC).timestamp() + 0.123


def record(msg: str, *args: object, **attributes: Any) -> logging.LogRecord:
    fields: dict[str, Any] = {
        "name": "smtpd_trio.session",
        "levelno": logging.INFO,
        "levelname": "INFO",
        "msg": msg,
        "args": args or None,
        "created": CREATED,
        "msecs": 123.0,
    }
    fields.update(attributes)
    return logging.makeLogRecord(fields)


def as_json(rec: logging.LogRecord) -> dict[str, Any]:
    line = JSONFormatter().format(rec)
    assert "\n" not in line
    entry: dict[str, Any] = json.loads(line)
    return entry


# --- JSON ---------------------------------------------------------------------------------


def test_json_time_is_rfc3339_utc_with_milliseconds() -> None:
    assert as_json(record("x"))["time"] == "2026-12-03T10:00:00.123Z"
    assert as_json(record("x", created=CREATED + 61, msecs=7.0))["time"] == (
        "2026-12-03T10:01:01.007Z"
    )


def test_json_without_structured_fields_takes_the_id_from_the_message() -> None:
    entry = as_json(record("[%s] closed (%s) after %d message(s)", "672b5a1", "quit", 1))
    assert entry == {
        "time": "2026-12-03T10:00:00.123Z",
        "level": "info",
        "logger": "smtpd_trio.session",
        "connection_id": "672b5a1",
        "message": "closed (quit) after 1 message(s)",
    }
    assert list(entry) == ["time", "level", "logger", "connection_id", "message"]


def test_json_without_an_id_has_no_connection_id() -> None:
    entry = as_json(record("listening on %s", "127.0.0.1:8025", name="smtpd_trio.cli"))
    assert "connection_id" not in entry
    assert entry["message"] == "listening on 127.0.0.1:8025"
    # Brackets that are not a leading id stay in the message.
    assert as_json(record("refused [abc] "))["message"] == "refused [abc] "
    assert "connection_id" not in as_json(record("[not-hex] x"))


def test_json_merges_structured_fields() -> None:
    smtpd = {
        "connection_id": "672b5a1",
        "client": "192.0.2.1:4242",
        "event": "message-accepted",
        "sender": "a@example.com",
        "recipients": ["b@example.org", "c@example.org"],
        "size": 254,
        "reply_code": 250,
        "reason": None,
    }
    entry = as_json(record("[672b5a1] message 672b5a1.1 accepted", smtpd=smtpd))
    assert entry == {
        "time": "2026-12-03T10:00:00.123Z",
        "level": "info",
        "logger": "smtpd_trio.session",
        **smtpd,
        "message": "message 672b5a1.1 accepted",
    }
    assert list(entry)[:4] == ["time", "level", "logger", "connection_id"]
    assert list(entry)[-1] == "message"


def test_json_structured_fields_never_replace_the_core_keys() -> None:
    smtpd = {
        "time": "yesterday",
        "level": "critical",
        "logger": "someone.else",
        "message": "forged",
        "exception": "none",
        "event": "closed",
    }
    entry = as_json(record("closed", smtpd=smtpd, levelno=logging.WARNING, levelname="WARNING"))
    assert entry == {
        "time": "2026-12-03T10:00:00.123Z",
        "level": "warning",
        "logger": "smtpd_trio.session",
        "event": "closed",
        "message": "closed",
    }


def test_json_structured_id_without_prefix_in_the_message() -> None:
    entry = as_json(record("closed", smtpd={"connection_id": "abc"}))
    assert entry["connection_id"] == "abc"
    assert entry["message"] == "closed"


def test_json_structured_id_wins_over_a_different_prefix() -> None:
    # The leading [id] is cut only when it is the connection's id.
    entry = as_json(record("[def] closed", smtpd={"connection_id": "abc"}))
    assert entry["connection_id"] == "abc"
    assert entry["message"] == "[def] closed"


def test_json_values_it_cannot_represent_are_written_as_text() -> None:
    entry = as_json(record("x", smtpd={"client": Endpoint("2001:db8::1", 25), "size": 3}))
    assert entry["client"] == "[2001:db8::1]:25"
    assert entry["size"] == 3


@pytest.mark.parametrize("smtpd", [None, "connection_id=abc", ["abc"], 42])
def test_json_ignores_structured_fields_that_are_not_a_mapping(smtpd: object) -> None:
    entry = as_json(record("[abc] x", smtpd=smtpd))
    assert entry["connection_id"] == "abc"
    assert set(entry) == {"time", "level", "logger", "connection_id", "message"}


def test_json_keys_that_are_not_text_are_left_out() -> None:
    entry = as_json(record("x", smtpd={1: "one", "event": "e"}))
    assert set(entry) == {"time", "level", "logger", "event", "message"}


def test_json_exception_is_one_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = record("[abc] internal error", exc_info=sys.exc_info(), levelname="ERROR")
    entry = as_json(rec)
    assert entry["connection_id"] == "abc"
    assert entry["message"] == "internal error"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("RuntimeError: boom")


def test_json_exception_and_stack_come_last_in_one_object() -> None:
    odd = "boom\u2028\x85"
    try:
        raise RuntimeError(odd)
    except RuntimeError:
        rec = record(
            "[abc] failed", exc_info=sys.exc_info(), stack_info="Stack:\n  here", smtpd={"x": 1}
        )
    line = JSONFormatter().format(rec)
    assert line.isprintable()
    entry = json.loads(line)
    assert list(entry) == [
        "time", "level", "logger", "connection_id", "x", "message", "exception", "stack"
    ]  # fmt: skip
    assert entry["exception"].endswith(f"RuntimeError: {odd}")
    assert entry["stack"] == "Stack:\n  here"


def test_json_keeps_non_ascii_text() -> None:
    entry_line = JSONFormatter().format(record("from=<%s>", "jörg@exämple.org"))
    assert "jörg@exämple.org" in entry_line


def test_json_escapes_what_is_not_printable_and_stays_one_line() -> None:
    odd = "a\x85b\u2028c\u202ed\x1be\udc80é"
    line = JSONFormatter().format(record("from=<%s>", odd, smtpd={"sender": odd}))
    assert line.isprintable()
    assert "é" in line  # printable non-ASCII text is kept
    assert "\\u2028" in line
    assert "\\u0085" in line
    entry = json.loads(line)
    assert (entry["message"], entry["sender"]) == (f"from=<{odd}>", odd)  # the same text


# --- text ---------------------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@pytest.mark.parametrize("smtpd", [None, {"connection_id": "abc", "event": "closed"}])
def test_text_is_the_standard_format_and_ignores_structured_fields(smtpd: object) -> None:
    plain = record("[abc] closed (%s)", "quit")
    extra = record("[abc] closed (%s)", "quit", smtpd=smtpd)
    expected = logging.Formatter(TEXT_FORMAT).format(plain)
    assert TextFormatter().format(extra) == expected
    assert expected.endswith(",123 INFO smtpd_trio.session: [abc] closed (quit)")


def test_text_time_follows_each_record_across_seconds() -> None:
    formatter, standard = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    for offset, msecs in [(0, 123.0), (0, 999.0), (1, 0.0), (3600, 5.0), (0, 1.0)]:
        rec = record("x", created=CREATED + offset, msecs=msecs)
        assert formatter.format(rec) == standard.format(rec)


@given(
    message=st.text(),
    args=st.lists(st.one_of(st.text(), st.integers(), st.none()), max_size=3),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
    name=st.text(min_size=1),
    with_exception=st.booleans(),
    with_stack=st.booleans(),
)
def test_text_is_what_the_standard_formatter_writes(
    message: str,
    args: list[object],
    level: int,
    name: str,
    with_exception: bool,
    with_stack: bool,
) -> None:
    # The text formatter writes the line in one step; byte for byte what logging.Formatter
    # makes of the same format, for any message text (client-controlled parts included),
    # with a traceback or a stack after it or not.
    msg = message.replace("%", "%%") + " %s" * len(args)
    rec = record(msg, *args, levelno=level, levelname=logging.getLevelName(level), name=name)
    if with_exception:
        try:
            raise ValueError(message)
        except ValueError:
            rec.exc_info = sys.exc_info()
    if with_stack:
        rec.stack_info = "Stack (most recent call last):\n  here"
    assert TextFormatter().format(rec) == logging.Formatter(TEXT_FORMAT).format(rec)


# --- buffered handler ---------------------------------------------------------------------


class RecordingRaw(io.RawIOBase):
    """The file descriptor under a stream: every write() here would be one system call."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.written = threading.Event()
        self._fail = fail

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._fail:
            raise BrokenPipeError(32, "Broken pipe")
        self.writes.append(bytes(data))
        self.written.set()
        return len(data)


def text_stream(raw: RecordingRaw) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace")


@pytest.fixture
def make_logger() -> Iterator[Any]:
    """make_logger(stream, **handler_options) -> (logger, handler); handlers are closed after."""
    made: list[tuple[logging.Logger, BufferedLogHandler]] = []

    def make(stream: Any, **options: Any) -> tuple[logging.Logger, BufferedLogHandler]:
        handler = BufferedLogHandler(stream, **options)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger(f"test_cli_logging.{len(made)}.{id(handler)}")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        made.append((logger, handler))
        return logger, handler

    yield make
    for logger, handler in made:
        handler.close()
        logger.handlers.clear()


def test_records_wait_in_the_buffer_and_go_out_in_one_write(make_logger: Any) -> None:
    raw = RecordingRaw()
    logger, handler = make_logger(text_stream(raw), interval=3600)
    for word in ("one", "two", "three"):
        logger.info(word)
    assert raw.writes == []
    handler.flush()
    assert raw.writes == [b"one\ntwo\nthree\n"]
    handler.flush()
    assert raw.writes == [b"one\ntwo\nthree\n"]  # nothing new, nothing written


def test_a_full_buffer_is_written_at_once(make_logger: Any) -> None:
    raw = RecordingRaw()
    logger, _ = make_logger(text_stream(raw), interval=3600, capacity=10)
    logger.info("1234")
    assert raw.writes == []
    logger.info("56789")  # 11 characters with the line ends
    assert raw.writes == [b"1234\n56789\n"]


def test_the_timer_writes_a_batch(make_logger: Any) -> None:
    raw = RecordingRaw()
    logger, _ = make_logger(text_stream(raw), interval=0.01)
    logger.info("soon")
    assert raw.written.wait(timeout=30)
    assert raw.writes == [b"soon\n"]
    raw.written.clear()
    logger.info("again")  # a second batch, after the writer went back to waiting
    assert raw.written.wait(timeout=30)
    assert raw.writes == [b"soon\n", b"again\n"]


def test_close_writes_what_is_left(make_logger: Any) -> None:
    raw = RecordingRaw()
    logger, handler = make_logger(text_stream(raw), interval=3600)
    logger.info("last words")
    handler.close()
    assert raw.writes == [b"last words\n"]


def test_writes_are_whole_lines_of_at_most_pipe_buf_bytes(make_logger: Any) -> None:
    raw = RecordingRaw()
    logger, handler = make_logger(text_stream(raw), interval=3600)
    lines = [f"{n:04d} " + "é" * 120 for n in range(100)]  # 2 bytes per é
    for line in lines:
        logger.info(line)
    handler.flush()
    assert len(raw.writes) > 1
    assert all(len(w) <= 4096 and w.endswith(b"\n") for w in raw.writes)
    assert b"".join(raw.writes).decode() == "".join(f"{line}\n" for line in lines)


def test_text_written_to_the_stream_first_stays_first(make_logger: Any) -> None:
    raw = RecordingRaw()
    stream = text_stream(raw)
    logger, handler = make_logger(stream, interval=3600)
    logger.info("logged")
    stream.write("printed before the flush\n")
    handler.flush()
    assert b"".join(raw.writes) == b"printed before the flush\nlogged\n"


def test_unencodable_text_is_escaped_not_lost(make_logger: Any) -> None:
    raw = RecordingRaw()
    stream = io.TextIOWrapper(io.BufferedWriter(raw), encoding="ascii", errors="strict")
    logger, handler = make_logger(stream, interval=3600)
    logger.info("to <jörg@example.org>")
    handler.flush()
    assert raw.writes == [b"to <j\\xf6rg@example.org>\n"]


def test_a_stream_without_a_binary_layer_gets_text(make_logger: Any) -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream, interval=3600)
    logger.info("a")
    logger.info("b")
    assert stream.getvalue() == ""
    handler.flush()
    assert stream.getvalue() == "a\nb\n"


def test_a_broken_stream_drops_the_lines_quietly(make_logger: Any) -> None:
    raw = RecordingRaw(fail=True)
    logger, handler = make_logger(text_stream(raw), interval=3600)
    logger.info("nobody is reading")
    handler.flush()  # no exception, no "--- Logging error ---"
    logger.info("still fine")
    handler.flush()


@pytest.mark.parametrize(
    ("data", "limit", "chunks"),
    [
        (b"", 10, []),
        (b"a\n", 10, [b"a\n"]),
        (b"aaaa\nbbbb\ncc\n", 10, [b"aaaa\nbbbb\n", b"cc\n"]),
        (b"aaaa\nbbbbb\n", 10, [b"aaaa\n", b"bbbbb\n"]),
        (b"a\n" + b"x" * 25 + b"\nb\n", 10, [b"a\n", b"x" * 25 + b"\n", b"b\n"]),
        (b"x" * 25 + b"\n", 10, [b"x" * 25 + b"\n"]),
    ],
)
def test_line_chunks(data: bytes, limit: int, chunks: list[bytes]) -> None:
    assert list(_line_chunks(data, limit)) == chunks
