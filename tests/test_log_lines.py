"""The server's log lines are something others parse (log shippers, grep, the JSON format's
readers): whatever a client sends, every line about its connection is one line, names the
connection, and is at most INFO, without a traceback (hypothesis over every field a client
controls: HELO names, addresses and their parameters, XCLIENT attributes, AUTH, VRFY, message
text and raw bytes)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import unicodedata

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_log import kept_records

from smtpd_trio import Config, Endpoint, Handler, Session, run_session
from smtpd_trio.cli import JSONFormatter, TextFormatter, _setup_logging

_TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO) smtpd_trio\.(server|session): "
    r"\[(?P<id>[0-9a-f]+)\] \S.*"
)
# The client: a mail proxy allowed to send XCLIENT, so the client the lines name is also
# something it controls.
_PEER = Endpoint("192.0.2.25", 40000)

_part = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["a", "\u2028", "\x85", "\x1b[31m", "x\ny", "\u202e", "é", "a\u2029b"]),
    # The same in XCLIENT's xtext (its parser refuses them today: the lines must not depend
    # on that).
    st.sampled_from(["a+0Ab", "+E2+80+A8", "+85", "+1B[31m", "+C2+85", "+E2+80+AE"]),
)
# An address: valid more often than arbitrary text would be, so that its characters reach
# the lines of an accepted message.
_address = st.builds(
    lambda local, domain: f"{local}@{domain}",
    _part,
    st.one_of(st.sampled_from(["example.com", "é.example", "[192.0.2.1]"]), _part),
)
_field = st.one_of(_part, _address, st.just(""))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


_commands = st.one_of(
    st.builds(
        lambda v, f: _utf8(f"{v} {f}\r\n"), st.sampled_from(["HELO", "EHLO", "LHLO"]), _field
    ),
    st.builds(lambda f, p: _utf8(f"MAIL FROM:<{f}> {p}\r\n"), _field, _field),
    st.builds(lambda f: _utf8(f"RCPT TO:<{f}>\r\n"), _field),
    st.builds(
        lambda k, f: _utf8(f"XCLIENT {k}={f}\r\n"),
        st.sampled_from(["ADDR", "NAME", "HELO", "LOGIN", "PORT", "PROTO"]),
        _field,
    ),
    st.builds(lambda f: _utf8(f"VRFY {f}\r\n"), _field),
    st.builds(lambda f: _utf8(f"AUTH PLAIN {f}\r\n"), _field),
    st.builds(lambda f: b"DATA\r\n" + _utf8(f) + b"\r\n.\r\n", _field),
    st.sampled_from([b"EHLO client.example\r\n", b"XCLIENT ADDR=198.51.100.7\r\n", b"RSET\r\n"]),
    st.binary(max_size=40),
    # A whole transaction, so that fields reach the lines of an accepted message.
    st.builds(
        lambda f, t, b: _utf8(f"MAIL FROM:<{f}> SMTPUTF8\r\nRCPT TO:<{t}>\r\nDATA\r\n{b}\r\n.\r\n"),
        _address,
        _address,
        _field,
    ),
)


def _one_line(line: str) -> bool:
    # One line for every reader: no character that any of them breaks or colours a line on
    # (str.splitlines' separators, C0 and C1 controls, DEL).
    return len(line.splitlines()) == 1 and not any(
        unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in line
    )


async def _converse(commands: list[bytes]) -> Session:
    """One connection from a mail proxy sending ``commands`` then QUIT; its session."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    sessions: list[Session] = []
    config = Config(hostname="mx.test", xclient_hosts=["192.0.2.0/24"])

    async def serve() -> None:
        sessions.append(await run_session(server_stream, Handler(), peer=_PEER, config=config))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with contextlib.suppress(trio.BrokenResourceError):
                for command in [*commands, b"QUIT\r\n"]:
                    await client_stream.send_all(command)
                await client_stream.send_eof()
            while await client_stream.receive_some(65536):
                pass
    (session,) = sessions
    return session


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(greet=st.booleans(), commands=st.lists(_commands, max_size=12))
async def test_every_line_is_one_line_naming_the_connection(
    greet: bool, commands: list[bytes]
) -> None:
    if greet:
        commands = [b"EHLO client.example\r\n", *commands]
    with kept_records() as records:
        session = await _converse(commands)
    assert records, "a session logs at least its close line"
    assert any(r.getMessage().startswith(f"[{session.id}] closed (") for r in records)
    text, as_json = TextFormatter(), JSONFormatter()
    for record in records:
        assert record.levelno <= logging.INFO, record.getMessage()
        assert not record.exc_info, record.getMessage()
        _check_text(text.format(record), session.id)
        _check_json(as_json.format(record), session.id)


def _check_text(line: str, connection_id: str) -> None:
    assert _one_line(line), line
    match = _TEXT_LINE.fullmatch(line)
    assert match, line
    assert match["id"] == connection_id, line


def _check_json(line: str, connection_id: str) -> None:
    assert _one_line(line), line
    entry = json.loads(line)
    assert entry["connection_id"] == connection_id, entry


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    fmt=st.sampled_from(["text", "json"]),
    commands=st.lists(_commands, max_size=12),
)
async def test_the_lines_the_cli_writes_without_records_too(
    fmt: str, commands: list[bytes]
) -> None:
    # With the CLI's handler the only one, the message and close lines skip LogRecord
    # (smtpd_trio._loglines): the lines it writes, whatever the client sent, are checked the
    # same way.
    logger = logging.getLogger("smtpd_trio")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        handler = _setup_logging(logging.INFO, fmt)
    try:
        session = await _converse([b"EHLO client.example\r\n", *commands])
        handler.flush()
    finally:
        handler.close()
        logger.handlers[:], logger.level, logger.propagate = saved
    lines = stream.getvalue().split("\n")
    assert lines.pop() == ""
    assert any(session.id in line and "closed (" in line for line in lines), lines
    for line in lines:
        if fmt == "text":
            _check_text(line, session.id)
        else:
            _check_json(line, session.id)
