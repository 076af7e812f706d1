"""XCLIENT and XFORWARD in the state machine: who may send them, the replies (220, 250, 501, 503,
550), the XCLIENT restart and what it keeps, and the XFORWARD facts on the Envelope."""

from __future__ import annotations

from typing import Any

import pytest
from machine_driver import Policy, Run, accept_all, drive, new_run, outcomes, refuse

from smtpd_trio._smtp.events import (
    Authenticate,
    Closed,
    CloseReason,
    CommandRejected,
    Connect,
    DecisionEvent,
    MailFrom,
    MessageReceived,
    RcptTo,
    TransactionEnded,
    TransactionOutcome,
    XClient,
)
from smtpd_trio._smtp.facts import TLSInfo
from smtpd_trio._smtp.machine import SMTPMachine, State
from smtpd_trio._smtp.replies import Reply
from smtpd_trio._smtp.sasl import Plain
from smtpd_trio._smtp.settings import SMTPSettings
from smtpd_trio._smtp.xclient import UNAVAILABLE, XClientInfo, XForwardInfo

EHLO = b"EHLO proxy.example\r\n"
MAIL = b"MAIL FROM:<a@b.example>\r\n"
RCPT = b"RCPT TO:<c@d.example>\r\n"
MESSAGE = b"DATA\r\nSubject: t\r\n\r\nhi\r\n.\r\n"
XCLIENT = b"XCLIENT ADDR=192.0.2.7 NAME=client.example\r\n"
XFORWARD = b"XFORWARD NAME=up.example ADDR=198.51.100.7 IDENT=4F2A\r\n"
BANNER = b"220 mx.example.org ESMTP smtpd-trio ready\r\n"
XCLIENT_KEYWORD = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"
XFORWARD_KEYWORD = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"


def trusted(data: bytes, policy: Policy = accept_all, **options: Any) -> Run:
    """``data`` from a client allowed both XCLIENT and XFORWARD."""
    options.setdefault("xclient", True)
    options.setdefault("xforward", True)
    return drive(data, policy, **options)


def last(run: Run) -> tuple[int, str | None]:
    reply = run.replies[-1]
    return reply.code, reply.enhanced


def facts(run: Run) -> tuple[str | None, bool, str | None, XClientInfo | None]:
    f = run.machine.facts
    return f.helo_name, f.extended, f.authenticated_as, f.xclient


# ---- who may: 550 5.7.0 for everyone else, and nothing changes -----------------------------


@pytest.mark.parametrize("command", [XCLIENT, XFORWARD, b"XCLIENT\r\n", b"XFORWARD junk\r\n"])
@pytest.mark.parametrize("prefix", [b"", EHLO])
def test_not_allowed_is_550_and_nothing_changes(command: bytes, prefix: bytes) -> None:
    plain = drive(prefix)
    run = drive(prefix + command + MAIL)
    assert run.replies[-2].code == 550
    assert run.replies[-2].enhanced == "5.7.0"
    assert run.replies[-2].text == "Insufficient authorization"
    assert facts(run) == facts(plain)
    assert not run.of_type(XClient)
    assert drive(prefix + command).machine.errors == 1  # a refusal counts towards max_errors
    # The session goes on as before: MAIL after EHLO is accepted, without it 503.
    assert run.replies[-1].code == (250 if prefix else 503)


def test_each_right_is_its_own() -> None:
    only_xforward = drive(EHLO + XCLIENT + XFORWARD, xforward=True)
    assert only_xforward.codes == [250, 550, 250]
    only_xclient = drive(EHLO + XFORWARD + XCLIENT, xclient=True)
    assert only_xclient.codes == [250, 550, 220]


@pytest.mark.parametrize(
    ("xclient", "xforward", "shown"),
    [
        (False, False, []),
        (True, False, [XCLIENT_KEYWORD]),
        (False, True, [XFORWARD_KEYWORD]),
        (True, True, [XCLIENT_KEYWORD, XFORWARD_KEYWORD]),
    ],
)
def test_advertised_only_to_the_clients_allowed(
    xclient: bool, xforward: bool, shown: list[str]
) -> None:
    run = drive(EHLO + b"HELO proxy.example\r\n", xclient=xclient, xforward=xforward)
    ehlo, helo = run.replies
    assert [line for line in ehlo.lines if line.startswith("X")] == shown
    assert ehlo.lines[-1] == "HELP"
    assert helo.lines == ("mx.example.org",)


def test_the_forwarding_replies_are_built_once() -> None:
    settings = SMTPSettings(hostname="mx.example.org")
    assert settings.ehlo_reply(False, xclient=True) is settings.ehlo_reply(False, xclient=True)
    assert settings.ehlo_reply(True) is settings.ehlo_reply(True, xclient=False, xforward=False)


# ---- XCLIENT: the restart ------------------------------------------------------------------


def test_xclient_is_a_decision_then_a_new_greeting() -> None:
    run = trusted(EHLO + XCLIENT)
    [event] = run.of_type(XClient)
    assert event.info == XClientInfo(addr="192.0.2.7", name="client.example")
    assert run.output.endswith(BANNER)  # the same 220 the connection began with
    assert run.machine.state is State.CONNECTED
    assert facts(run) == (None, False, None, event.info)


def test_the_decision_waits_for_its_answer() -> None:
    run = new_run(xclient=True)
    m = run.machine
    m.receive_data(EHLO + XCLIENT + b"EHLO client.example\r\n")
    assert m.next_event() == m.pending  # Hello
    m.respond(None)
    event = m.next_event()
    assert isinstance(event, XClient)
    with pytest.raises(RuntimeError, match="answer XClient first"):
        m.next_event()
    # The facts are in effect while it is pending: the handler sees the new client's.
    assert m.facts.xclient == event.info
    assert m.facts.helo_name is None
    m.respond(None)
    assert m.data_to_send().endswith(BANNER)
    assert m.next_event() == m.pending  # the pipelined EHLO, after the 220


def test_after_xclient_helo_or_ehlo_again() -> None:
    run = trusted(EHLO + XCLIENT + MAIL + b"EHLO client.example\r\n" + MAIL)
    assert run.codes == [250, 220, 503, 250, 250]
    assert run.replies[2] == run.replies[2].__class__(503, "5.5.1", ("Send HELO or EHLO first",))
    assert run.machine.facts.helo_name == "client.example"
    assert XCLIENT_KEYWORD in run.replies[3].lines  # still allowed: the peer is the same


def test_xclient_helo_and_proto_stand_for_the_clients_ehlo() -> None:
    run = trusted(EHLO + b"XCLIENT HELO=client.example PROTO=ESMTP ADDR=192.0.2.7\r\n" + MAIL)
    assert run.codes == [250, 220, 250]
    assert run.machine.state is State.MAIL
    helo, extended, _, _ = facts(run)
    assert (helo, extended) == ("client.example", True)
    # ... until the client's next HELO/EHLO, which replaces them, as in Postfix.
    run.feed(b"RSET\r\nHELO other.example\r\n")
    assert facts(run)[:2] == ("other.example", False)


@pytest.mark.parametrize(
    ("command", "helo", "extended"),
    [
        (b"XCLIENT HELO=h.example\r\n", "h.example", False),  # PROTO defaults to SMTP
        (b"XCLIENT HELO=[UNAVAILABLE] PROTO=ESMTP\r\n", None, True),
        (b"XCLIENT PROTO=ESMTP\r\n", None, True),
        (b"XCLIENT ADDR=192.0.2.7\r\n", None, False),
    ],
)
def test_what_xclient_gives_is_what_counts(
    command: bytes, helo: str | None, extended: bool
) -> None:
    run = trusted(b"EHLO proxy.example\r\n" + command)
    assert facts(run)[:2] == (helo, extended)
    assert run.machine.state is (State.READY if helo else State.CONNECTED)


def test_only_the_last_xclients_helo_survives() -> None:
    run = trusted(b"XCLIENT HELO=first.example\r\nXCLIENT ADDR=192.0.2.7\r\n")
    assert run.codes == [220, 220]
    info = run.machine.facts.xclient
    assert info == XClientInfo(helo="first.example", addr="192.0.2.7")  # all that was said
    assert run.machine.facts.helo_name is None  # but HELO was reset by the second restart


def test_attributes_accumulate_over_commands() -> None:
    run = trusted(
        b"XCLIENT NAME=client.example PORT=1111\r\n"
        b"XCLIENT ADDR=IPV6:2001:db8::7\r\n"  # a new address: the old port means nothing
        b"XCLIENT PORT=2525 DESTADDR=192.0.2.25 DESTPORT=25\r\n"
        b"XCLIENT DESTADDR=192.0.2.26\r\n"
    )
    infos = [e.info for e in run.of_type(XClient)]
    assert infos[0] == XClientInfo(name="client.example", port=1111)
    assert infos[1] == XClientInfo(name="client.example", addr="2001:db8::7")
    assert infos[2].port == 2525
    assert (infos[2].destaddr, infos[2].destport) == ("192.0.2.25", 25)
    assert (infos[3].destaddr, infos[3].destport) == ("192.0.2.26", None)
    assert infos[3].port == 2525


def test_login_is_the_authenticated_identity() -> None:
    run = trusted(
        EHLO + b"XCLIENT LOGIN=alice+40example.org\r\n" + EHLO + b"AUTH PLAIN AGEAYg==\r\n",
        auth_mechanisms=(Plain(),),
        auth_over_plaintext=True,
    )
    assert run.codes == [250, 220, 250, 503]
    assert run.machine.facts.authenticated_as == "alice@example.org"
    assert run.replies[-1].text == "Already authenticated"
    assert not run.of_type(Authenticate)


def test_xclient_forgets_an_earlier_identity_unless_it_gives_one() -> None:
    auth = b"AUTH PLAIN " + b"AHVzZXIAcmlnaHQ=" + b"\r\n"  # user / right
    options: dict[str, Any] = {"auth_mechanisms": (Plain(),), "auth_over_plaintext": True}
    run = trusted(EHLO + auth + b"XCLIENT ADDR=192.0.2.7\r\n", accept_all, **options)
    assert run.codes == [250, 235, 220]
    assert run.machine.facts.authenticated_as is None
    run = trusted(EHLO + auth + b"XCLIENT LOGIN=[UNAVAILABLE]\r\n", accept_all, **options)
    assert run.machine.facts.authenticated_as is None
    run = trusted(EHLO + auth + b"XCLIENT LOGIN=bob\r\n", accept_all, **options)
    assert run.machine.facts.authenticated_as == "bob"


def test_tls_is_kept() -> None:
    info = TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
    m = SMTPMachine(
        SMTPSettings(hostname="mx.example.org", starttls=True), session_id="t", xclient=True
    )
    m.tls_established(info)  # implicit TLS, before the greeting
    assert isinstance(m.next_event(), Connect)
    m.respond(None)
    run = Run(machine=m, banner=m.data_to_send())
    run.feed(EHLO + XCLIENT + b"EHLO client.example\r\nSTARTTLS\r\n")
    assert run.codes == [250, 220, 250, 503]
    assert m.facts.tls is info
    assert "STARTTLS" not in run.replies[2].lines  # not offered again: TLS is still on
    assert run.replies[3].text == "TLS already active"


@pytest.mark.parametrize("state_setup", [EHLO + MAIL, EHLO + MAIL + RCPT])
@pytest.mark.parametrize("command", [XCLIENT, XFORWARD])
@pytest.mark.parametrize("allowed", [True, False])
def test_inside_a_transaction_503(state_setup: bytes, command: bytes, allowed: bool) -> None:
    run = drive(state_setup + command + RCPT, xclient=allowed, xforward=allowed)
    assert run.replies[-2].code == 503
    assert run.replies[-2].enhanced == "5.5.1"
    assert run.replies[-2].text == "Mail transaction in progress"
    assert run.replies[-1].code == 250  # the transaction goes on
    assert run.machine.facts.xclient is None
    assert run.machine.envelope is not None
    assert run.machine.envelope.xforward is None


def test_after_the_transaction_xclient_again() -> None:
    run = trusted(EHLO + MAIL + RCPT + MESSAGE + XCLIENT)
    assert run.codes == [250, 250, 250, 354, 250, 220]
    assert outcomes(run) == [TransactionOutcome.ACCEPTED]


@pytest.mark.parametrize(
    "command",
    [
        b"XCLIENT\r\n",
        b"XCLIENT ADDR\r\n",
        b"XCLIENT ADDR=not-an-address\r\n",
        b"XCLIENT FROB=1\r\n",
        b"XCLIENT NAME=client.example HELO=a+20b\r\n",  # one bad attribute spoils the command
    ],
)
def test_malformed_xclient_is_501_and_nothing_changes(command: bytes) -> None:
    run = trusted(EHLO + command)
    assert last(run) == (501, "5.5.4")
    assert facts(run) == ("proxy.example", True, None, None)
    assert run.machine.state is State.READY
    assert run.of_type(CommandRejected)


def test_malformed_lines_count_as_errors() -> None:
    run = trusted(EHLO + b"XCLIENT FROB=1\r\n" * 3, max_errors=3)
    assert run.codes == [250, 501, 501, 421]
    assert isinstance(run.events[-1], Closed)


# ---- XCLIENT: how the decision may be answered ---------------------------------------------


def greeting_answer(reply: Reply) -> Policy:
    return refuse(XClient, reply=reply)


def test_a_554_refuses_the_new_client_and_only_quit_is_served() -> None:
    run = trusted(
        EHLO + XCLIENT + b"EHLO client.example\r\nQUIT\r\n",
        greeting_answer(Reply(554, "5.7.1", "Not you")),
    )
    assert run.codes == [250, 554, 503, 221]
    assert run.machine.state is State.CLOSED


@pytest.mark.parametrize("code", [421, 450])
def test_a_4xx_closes_with_421(code: int) -> None:
    run = trusted(EHLO + XCLIENT + EHLO, greeting_answer(Reply(code, None, "Later")))
    assert run.codes == [250, 421]
    closed = run.events[-1]
    assert isinstance(closed, Closed)
    assert closed.reason is CloseReason.REFUSED


def test_a_550_becomes_554() -> None:
    run = trusted(EHLO + XCLIENT, greeting_answer(Reply(550, None, "No")))
    assert run.codes == [250, 554]


def test_a_220_of_the_handlers_own() -> None:
    run = trusted(EHLO + XCLIENT, greeting_answer(Reply(220, None, "mx.example.org welcome")))
    assert run.output.endswith(b"220 mx.example.org welcome\r\n")


@pytest.mark.parametrize("code", [250, 354, 235])
def test_other_positive_answers_are_a_programming_error(code: int) -> None:
    run = new_run(xclient=True)
    run.machine.receive_data(XCLIENT)
    assert isinstance(run.machine.next_event(), XClient)
    with pytest.raises(ValueError, match="is not an answer to XCLIENT"):
        run.machine.respond(Reply(code, None, "x"))
    run.machine.respond(None)  # still pending, and can still be answered


@pytest.mark.parametrize(("timed_out", "enhanced"), [(False, "4.3.0"), (True, "4.4.5")])
def test_a_handler_that_could_not_decide_closes(timed_out: bool, enhanced: str) -> None:
    run = new_run(xclient=True)
    m = run.machine
    m.receive_data(XCLIENT)
    assert isinstance(m.next_event(), XClient)
    m.fail(timed_out=timed_out)
    run.output = m.data_to_send()
    assert last(run) == (421, enhanced)
    assert m.state is State.CLOSED


# ---- XFORWARD ------------------------------------------------------------------------------


def envelopes(run: Run) -> list[object]:
    return [e.envelope for e in run.events if isinstance(e, RcptTo | MessageReceived)]


def test_xforward_facts_go_on_the_next_transaction() -> None:
    run = trusted(EHLO + XFORWARD + b"XFORWARD HELO=up-helo SOURCE=remote\r\n" + MAIL + RCPT)
    assert run.codes == [250, 250, 250, 250, 250]
    assert run.replies[1].text == "OK"
    assert run.replies[1].enhanced == "2.0.0"
    want = XForwardInfo(
        name="up.example",
        addr="198.51.100.7",
        ident="4F2A",
        helo="up-helo",
        source="REMOTE",
        port=UNAVAILABLE,
        proto=UNAVAILABLE,
    )
    envelope = run.machine.envelope
    assert envelope is not None
    assert envelope.xforward == want
    [rcpt] = run.of_type(RcptTo)
    assert rcpt.envelope.xforward == want  # every envelope of the transaction carries it


def test_xforward_belongs_to_one_transaction() -> None:
    run = trusted(EHLO + XFORWARD + MAIL + RCPT + MESSAGE + MAIL + RCPT + MESSAGE)
    first, second = [e.envelope for e in run.of_type(MessageReceived)]
    assert first.xforward is not None
    assert first.xforward.ident == "4F2A"
    assert second.xforward is None
    ends = run.of_type(TransactionEnded)
    assert [end.envelope.xforward for end in ends] == [first.xforward, None]


def test_xforward_changes_nothing_about_the_session() -> None:
    plain = drive(EHLO)
    run = trusted(EHLO + XFORWARD)
    assert facts(run) == facts(plain)


@pytest.mark.parametrize(
    "reset",
    [
        b"RSET\r\n",
        b"EHLO proxy.example\r\n",
        b"HELO proxy.example\r\n",
        b"XCLIENT ADDR=192.0.2.7 HELO=h.example\r\n",
    ],
)
def test_xforward_is_forgotten_by_a_reset(reset: bytes) -> None:
    run = trusted(EHLO + XFORWARD + reset + MAIL)
    assert run.codes[-1] == 250
    envelope = run.machine.envelope
    assert envelope is not None
    assert envelope.xforward is None


def test_xforward_waits_for_an_accepted_mail() -> None:
    # The handler refuses the first MAIL: the facts wait for the client's next one.
    refused_once: list[DecisionEvent] = []

    def policy(event: DecisionEvent) -> Reply | None:
        if isinstance(event, MailFrom) and not refused_once:
            refused_once.append(event)
            return Reply(451, "4.7.1", "Try again")
        return None

    run = trusted(EHLO + XFORWARD + MAIL + MAIL, policy)
    assert run.codes == [250, 250, 451, 250]
    envelope = run.machine.envelope
    assert envelope is not None
    assert envelope.xforward is not None
    assert envelope.xforward.name == "up.example"


def test_malformed_xforward_is_501_and_keeps_what_was_said() -> None:
    run = trusted(EHLO + XFORWARD + b"XFORWARD SOURCE=SOMEWHERE\r\n" + MAIL)
    assert run.codes == [250, 250, 501, 250]
    assert run.replies[2].enhanced == "5.5.4"
    envelope = run.machine.envelope
    assert envelope is not None
    assert envelope.xforward is not None
    assert envelope.xforward.source is UNAVAILABLE
    assert envelope.xforward.ident == "4F2A"


def test_xforward_before_ehlo_is_dropped_by_it() -> None:
    # As in Postfix: EHLO resets the transaction state, XFORWARD facts included.
    run = trusted(XFORWARD + EHLO + MAIL)
    assert run.codes == [250, 250, 250]
    assert run.machine.envelope is not None
    assert run.machine.envelope.xforward is None


def test_sessions_that_never_forward_carry_nothing() -> None:
    run = drive(EHLO + MAIL + RCPT + MESSAGE)
    [message] = run.of_type(MessageReceived)
    assert message.envelope.xforward is None
