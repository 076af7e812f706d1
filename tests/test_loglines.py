"""The per-message and per-connection lines written without a LogRecord (``_loglines``):
the same line as through ``logging``, and ``logging`` itself whenever anyone but the CLI's
handler could see the record (another handler, a filter, another formatter, a disabled
logger)."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from smtpd_trio import Config, Endpoint, Handler, run_session
from smtpd_trio._loglines import LineFormatter, info
from smtpd_trio.cli import BufferedLogHandler, JSONFormatter, TextFormatter, _setup_logging

_TIME = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} |"time": ?"[^"]*", ')
_FORMATTERS: dict[str, Callable[[], LineFormatter]] = {"text": TextFormatter, "json": JSONFormatter}

_fields = st.dictionaries(
    st.one_of(st.text(max_size=12), st.integers()),
    st.one_of(st.text(), st.integers(), st.none(), st.lists(st.text(), max_size=2)),
    max_size=4,
)


@given(
    fmt=st.sampled_from(list(_FORMATTERS)),
    message=st.text(),
    name=st.text(min_size=1),
    level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING]),
    fields=_fields,
    created=st.floats(min_value=0, max_value=4e9),
)
def test_a_line_from_its_parts_is_the_line_of_the_record(
    fmt: str,
    message: str,
    name: str,
    level: int,
    fields: dict[object, object],
    created: float,
) -> None:
    # Any message text (a client's parts included), any structured fields.
    levelname = logging.getLevelName(level)
    msecs = float(int((created - int(created)) * 1000))
    record = logging.makeLogRecord(
        {
            "name": name,
            "levelno": level,
            "levelname": levelname,
            "msg": message,  # no arguments: taken as it is
            "args": None,
            "created": created,
            "msecs": msecs,
            "smtpd": fields,
        }
    )
    formatter = _FORMATTERS[fmt]()
    assert formatter.format_line(
        created, msecs, levelname, name, message, fields
    ) == formatter.format(record)


@pytest.fixture(params=list(_FORMATTERS))
def cli_logging(request: pytest.FixtureRequest) -> Iterator[tuple[io.StringIO, BufferedLogHandler]]:
    """The CLI's logging set-up, writing to a string; undone after."""
    root = logging.getLogger("smtpd_trio")
    saved = (root.handlers[:], root.level, root.propagate)
    stream = io.StringIO()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr("sys.stderr", stream)
    try:
        handler = _setup_logging(logging.INFO, request.param)
        handler.setFormatter(_FORMATTERS[request.param]())
        yield stream, handler
        handler.close()
    finally:
        monkeypatch.undo()
        root.handlers[:], root.level, root.propagate = saved


@pytest.fixture
def made_records(monkeypatch: pytest.MonkeyPatch) -> list[logging.LogRecord]:
    """Every LogRecord made meanwhile."""
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        made.append(factory(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(logging, "_logRecordFactory", counting)
    return made


_ARGS = ("5eed1", "message 5eed1-1 accepted: from=<%s> size=%d", "a\u2028@example.com", 42)
_FIELDS = {"connection_id": "5eed1", "event": "message-accepted", "size": 42}


def _only(handler: BufferedLogHandler) -> None:
    """Take away the handlers pytest's log capture adds to every logger that does not
    propagate while a test runs: the CLI's handler is the only one, as in the CLI."""
    logging.getLogger("smtpd_trio").handlers[:] = [handler]


def _written(stream: io.StringIO, handler: BufferedLogHandler) -> list[str]:
    handler.flush()
    lines = stream.getvalue().split("\n")[:-1]
    stream.seek(0)
    stream.truncate()
    return [_TIME.sub("", line) for line in lines]


def test_the_cli_handler_gets_the_line_without_a_record(
    cli_logging: tuple[io.StringIO, BufferedLogHandler], made_records: list[logging.LogRecord]
) -> None:
    stream, handler = cli_logging
    _only(handler)
    log = logging.getLogger("smtpd_trio.session")
    connection_id, msg, *args = _ARGS
    info(log, _FIELDS, f"[%s] {msg}", connection_id, *args)
    assert made_records == []
    direct = _written(stream, handler)
    log.info(f"[%s] {msg}", connection_id, *args, extra={"smtpd": _FIELDS})
    assert len(made_records) == 1
    through_logging = _written(stream, handler)
    assert len(direct) == 1
    assert direct == through_logging


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _drop_all(record: logging.LogRecord) -> bool:
    return False


def _another_handler(seen: _Seen, cli: BufferedLogHandler) -> None:
    logging.getLogger("smtpd_trio").addHandler(seen)


def _a_handler_on_the_session_logger(seen: _Seen, cli: BufferedLogHandler) -> None:
    logging.getLogger("smtpd_trio.session").addHandler(seen)


def _propagating_to_the_root(seen: _Seen, cli: BufferedLogHandler) -> None:
    logging.getLogger("smtpd_trio").propagate = True
    logging.getLogger().addHandler(seen)


class _SeeingFormatter(logging.Formatter):
    def __init__(self, seen: _Seen) -> None:
        super().__init__("%(message)s")
        self.seen = seen

    def format(self, record: logging.LogRecord) -> str:
        self.seen.records.append(record)
        return super().format(record)


def _another_formatter(seen: _Seen, cli: BufferedLogHandler) -> None:
    cli.setFormatter(_SeeingFormatter(seen))


def _a_filter_on_a_logger(seen: _Seen, cli: BufferedLogHandler) -> None:
    logging.getLogger("smtpd_trio.session").addFilter(_seen_by(seen))


def _a_filter_on_the_handler(seen: _Seen, cli: BufferedLogHandler) -> None:
    cli.addFilter(_seen_by(seen))


def _seen_by(seen: _Seen) -> Callable[[logging.LogRecord], bool]:
    def look(record: logging.LogRecord) -> bool:
        seen.records.append(record)
        return True

    return look


@pytest.mark.parametrize(
    "change",
    [
        _another_handler,
        _a_handler_on_the_session_logger,
        _propagating_to_the_root,
        _another_formatter,
        _a_filter_on_a_logger,
        _a_filter_on_the_handler,
    ],
)
def test_whatever_else_could_see_the_record_gets_it(
    cli_logging: tuple[io.StringIO, BufferedLogHandler],
    change: Callable[[_Seen, BufferedLogHandler], None],
) -> None:
    _, handler = cli_logging
    _only(handler)
    seen = _Seen()
    root_logger = logging.getLogger()
    session_logger = logging.getLogger("smtpd_trio.session")
    saved_root = root_logger.handlers[:]
    try:
        change(seen, handler)
        connection_id, msg, *args = _ARGS
        info(session_logger, _FIELDS, f"[%s] {msg}", connection_id, *args)
    finally:
        root_logger.handlers[:] = saved_root
        session_logger.handlers.clear()
        session_logger.filters.clear()
    (record,) = seen.records
    assert (
        record.getMessage()
        == "[5eed1] message 5eed1-1 accepted: from=<a\u2028@example.com> size=42"
    )
    assert getattr(record, "smtpd", None) == _FIELDS


def test_a_disabled_logger_writes_nothing(
    cli_logging: tuple[io.StringIO, BufferedLogHandler],
) -> None:
    stream, handler = cli_logging
    _only(handler)
    log = logging.getLogger("smtpd_trio.session")
    log.disabled = True
    try:
        info(log, _FIELDS, "[%s] anything", "5eed1")
    finally:
        log.disabled = False
    assert _written(stream, handler) == []


async def test_a_session_logs_the_same_lines_either_way(
    cli_logging: tuple[io.StringIO, BufferedLogHandler], made_records: list[logging.LogRecord]
) -> None:
    # A whole conversation through the CLI's handler: its message and close lines are
    # written without records, and are the lines logging would have written.
    stream, handler = cli_logging
    _only(handler)

    async def converse() -> None:
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_session(
                    server,
                    Handler(),
                    peer=Endpoint("192.0.2.7", 4000),
                    config=Config(hostname="mx.test"),
                )
            )
            await client.send_all(
                b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"
            )
            while await client.receive_some(65536):
                pass

    await converse()
    assert made_records == []
    direct = _written(stream, handler)
    seen = _Seen()
    handler.addFilter(_seen_by(seen))
    await converse()
    through_logging = _written(stream, handler)
    assert len(seen.records) == 2
    ids = re.compile(r"[0-9a-f]+-\d+|\b[0-9a-f]{6,}\b|\d+\.\d{3} s|\"duration\": ?[\d.]+")
    assert [ids.sub("#", line) for line in direct] == [
        ids.sub("#", line) for line in through_logging
    ]
    assert len(direct) == 2
    assert " accepted: from=<a@example.com> rcpts=1 size=" in direct[0]
    assert "closed (quit) after 1 message(s): client 192.0.2.7:4000" in direct[1]


class _Failing(TextFormatter):
    def format_line(self, *parts: Any) -> str:
        raise ValueError("cannot format this")


def test_a_line_that_cannot_be_formatted_is_logging_s_problem_not_the_session_s(
    cli_logging: tuple[io.StringIO, BufferedLogHandler],
    made_records: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A formatter that fails: the line goes to logging, whose handleError reports it (here,
    # on the stream standard error is); nothing is raised to the caller.
    _, handler = cli_logging
    _only(handler)
    handler.setFormatter(_Failing())
    reported = io.StringIO()
    monkeypatch.setattr("sys.stderr", reported)
    info(logging.getLogger("smtpd_trio.session"), _FIELDS, "[%s] anything", "5eed1")
    assert len(made_records) == 1
    assert "ValueError: cannot format this" in reported.getvalue()
