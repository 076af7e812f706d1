"""VRFY and EXPN answered by the handler (RFC 5321 §3.5): the decisions, the replies each may
have (§4.3.2), the defaults without a callback, the checks when the server is built.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import pytest
from machine_driver import drive, refuse

from smtpd_trio import Config, Handler, Reject, Reply, Session, SMTPServer
from smtpd_trio._smtp.events import CommandRejected, Expand, Verify
from smtpd_trio.testing import open_test_session

EHLO = b"EHLO client.example\r\n"


# ---- the machine -------------------------------------------------------------------------------


def test_expn_is_502_unless_the_handler_answers_it() -> None:
    run = drive(EHLO + b"EXPN staff\r\nHELP\r\n")
    assert [(r.code, r.enhanced) for r in run.replies[1:]] == [(502, "5.5.1"), (214, "2.0.0")]
    assert isinstance(run.events[-1], CommandRejected)
    assert "EXPN" not in run.replies[-1].text
    assert run.machine.errors == 1


def test_expn_is_a_decision_when_the_handler_answers_it() -> None:
    run = drive(EHLO + b"EXPN staff\r\nHELP\r\n", expn=True)
    assert Expand("staff") in run.events
    assert [(r.code, r.enhanced) for r in run.replies[1:]] == [(252, "2.5.0"), (214, "2.0.0")]
    assert run.replies[1].text == "Cannot EXPN list, but will accept message and attempt delivery"
    assert "EXPN" in run.replies[2].text
    assert run.machine.errors == 0


def test_expn_multi_line_list() -> None:
    members = Reply(250, None, "Alice <alice@example.org>", ("Bob <bob@example.org>",))
    run = drive(
        EHLO + b"EXPN staff\r\n",
        lambda event: members if isinstance(event, Expand) else None,
        expn=True,
    )
    assert run.output.endswith(
        b"250-2.0.0 Alice <alice@example.org>\r\n250 2.0.0 Bob <bob@example.org>\r\n"
    )


@pytest.mark.parametrize(
    ("kind", "line", "allowed"),
    [(Verify, b"VRFY bob\r\n", {250, 251, 252}), (Expand, b"EXPN staff\r\n", {250, 252})],
)
def test_the_positive_replies_each_may_have(
    kind: type[Any], line: bytes, allowed: set[int]
) -> None:
    """RFC 5321 §4.3.2: VRFY 250, 251, 252; EXPN 250, 252. Any other positive code is the
    handler's mistake (ValueError), never sent."""
    for code in (220, 221, 235, 250, 251, 252, 334, 354):
        run = drive(EHLO, expn=True)
        m = run.machine
        m.receive_data(line)
        assert isinstance(m.next_event(), kind)
        if code in allowed:
            m.respond(Reply(code, None, "ok"))
            assert m.data_to_send().startswith(f"{code} 2.0.0 ok".encode())
        else:
            with pytest.raises(ValueError, match="is not an answer to"):
                m.respond(Reply(code, None, "no"))
            assert m.pending is not None  # still waiting for a proper answer


@pytest.mark.parametrize("kind", [Verify, Expand])
def test_refusals_get_an_address_status_code(kind: type[Any]) -> None:
    run = drive(
        EHLO + b"VRFY bob\r\nEXPN staff\r\n",
        refuse(kind, reply=Reply(550, None, "No such user")),
        expn=True,
    )
    refused = [r for r in run.replies if r.code == 550]
    assert [(r.enhanced, r.text) for r in refused] == [("5.1.0", "No such user")]


def test_expn_without_an_argument_is_501() -> None:
    run = drive(EHLO + b"EXPN\r\n", expn=True)
    assert (run.replies[-1].code, run.replies[-1].enhanced) == (501, "5.5.4")
    assert run.replies[-1].text == "Syntax error: EXPN requires an argument"


def test_expn_counts_as_junk() -> None:
    run = drive(EHLO + b"EXPN a\r\nVRFY b\r\nEXPN c\r\n", expn=True, max_junk_commands=2)
    assert [r.code for r in run.replies] == [250, 252, 252, 421]
    assert run.replies[-1].enhanced == "4.7.0"


# ---- through a session -------------------------------------------------------------------------


USERS: Final = {"bob": "Bob Smith <bob@example.org>"}
LISTS: Final = {"staff": ("Alice <alice@example.org>", "Bob Smith <bob@example.org>")}


class Directory(Handler):
    async def on_vrfy(self, session: Session, argument: str) -> Reply | None:
        if argument == "later":
            return None
        found = USERS.get(argument.lower())
        if found is None:
            raise Reject(550, "5.1.1", "No such user here")
        return Reply(250, "2.1.5", found)

    async def on_expn(self, session: Session, argument: str) -> Reply | None:
        members = LISTS.get(argument.lower())
        if members is None:
            raise Reject(550, "5.1.1", "No such list")
        return Reply(250, None, members[0], members[1:])


async def test_vrfy_and_expn_callbacks() -> None:
    async with open_test_session(Directory()) as client:
        await client.ehlo()
        reply = await client.command("VRFY Bob")
        assert (reply.code, reply.lines) == (250, ("2.1.5 Bob Smith <bob@example.org>",))
        reply = await client.command("VRFY carol")
        assert (reply.code, reply.lines) == (550, ("5.1.1 No such user here",))
        reply = await client.command("VRFY later")
        assert (reply.code, reply.enhanced) == (252, "2.5.0")
        reply = await client.command("EXPN staff")
        assert reply.code == 250
        assert reply.lines == (
            "2.0.0 Alice <alice@example.org>",
            "2.0.0 Bob Smith <bob@example.org>",
        )
        reply = await client.command("EXPN nobody")
        assert (reply.code, reply.enhanced) == (550, "5.1.1")
        help_reply = await client.command("HELP")
        assert "EXPN" in help_reply.text


async def test_defaults_without_callbacks() -> None:
    async with open_test_session(Handler()) as client:
        await client.ehlo()
        reply = await client.command("VRFY bob")
        assert (reply.code, reply.enhanced) == (252, "2.5.0")
        reply = await client.command("EXPN staff")
        assert (reply.code, reply.enhanced) == (502, "5.5.1")


async def test_a_wrong_answer_is_451_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Wrong(Handler):
        async def on_vrfy(self, session: Session, argument: str) -> Reply | None:
            return Reply(354, None, "go ahead")

        async def on_expn(self, session: Session, argument: str) -> Reply | None:
            raise RuntimeError("directory down")

    with caplog.at_level(logging.ERROR, logger="smtpd_trio.session"):
        async with open_test_session(Wrong()) as client:
            await client.ehlo()
            reply = await client.command("VRFY bob")
            assert (reply.code, reply.enhanced) == (451, "4.3.0")
            reply = await client.command("EXPN staff")
            assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert "handler on_vrfy returned" in caplog.text
    assert "handler on_expn failed" in caplog.text


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("def on_vrfy(self, session, argument): return None", "on_vrfy must be an async function"),
        ("async def on_expn(self, session): return None", r"on_expn\(session\) cannot be called"),
    ],
)
def test_callbacks_are_checked_when_the_server_is_built(method: str, message: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"class Bad(Handler):\n    {method}\n", {"Handler": Handler}, namespace)
    with pytest.raises(TypeError, match=message):
        SMTPServer(namespace["Bad"](), config=Config(hostname="mx.test"))
