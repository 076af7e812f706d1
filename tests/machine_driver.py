"""Drive an :class:`SMTPMachine` with bytes, the way the I/O layer does, and record everything.

``drive(chunks, policy=...)`` greets, feeds each chunk, drains events (answering each decision
with ``policy(event)``) and returns a :class:`Run` holding the events and the reply bytes. The
banner is kept apart so tests can assert on the replies to their own commands only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

import attrs

from smtpd_trio._smtp.body import MemoryBudget
from smtpd_trio._smtp.events import (
    NEED_DATA,
    Authenticate,
    Closed,
    Connect,
    DecisionEvent,
    Event,
    Hello,
    MailFrom,
    MessageReceived,
    RcptTo,
    TransactionEnded,
    TransactionOutcome,
)
from smtpd_trio._smtp.machine import SMTPMachine
from smtpd_trio._smtp.replies import Reply
from smtpd_trio._smtp.settings import SMTPSettings

Policy = Callable[[DecisionEvent], Reply | None]
_LINE: Final = re.compile(rb"(\d{3})([ -])(.*)\Z", re.DOTALL)
_ENHANCED: Final = re.compile(r"([245]\.\d{1,3}\.\d{1,3}) ")


def accept_all(event: DecisionEvent) -> Reply | None:
    """The default policy: every decision gets the machine's standard positive reply."""
    return None


@attrs.frozen
class ParsedReply:
    """One complete (possibly multi-line) reply, as read from the wire."""

    code: int
    #: The enhanced status code of the last line, or None.
    enhanced: str | None
    #: The text of each line, the enhanced code removed.
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return self.lines[-1]


def parse_replies(data: bytes) -> list[ParsedReply]:
    """Split reply bytes into replies; asserts every line is ``ddd[ -]text CRLF``."""
    assert data == b"" or data.endswith(b"\r\n"), data[-40:]
    out: list[ParsedReply] = []
    lines: list[str] = []
    code: int | None = None
    for raw in data.split(b"\r\n")[:-1]:
        m = _LINE.match(raw)
        assert m is not None, raw
        assert b"\r" not in raw, raw
        assert b"\n" not in raw, raw
        line_code = int(m.group(1))
        assert code is None or code == line_code, (code, raw)
        code = line_code
        lines.append(m.group(3).decode("utf-8"))
        if m.group(2) == b" ":
            enhanced = None
            em = _ENHANCED.match(lines[-1])
            if em is not None:
                enhanced = em.group(1)
            texts = tuple(
                line[len(enhanced) + 1 :] if enhanced and line.startswith(enhanced) else line
                for line in lines
            )
            out.append(ParsedReply(code, enhanced, texts))
            lines, code = [], None
    assert not lines, "a multi-line reply was not finished"
    return out


@attrs.define
class Run:
    """What a machine did with some input."""

    machine: SMTPMachine
    banner: bytes
    events: list[Event] = attrs.field(factory=list)
    output: bytes = b""

    @property
    def replies(self) -> list[ParsedReply]:
        return parse_replies(self.output)

    @property
    def codes(self) -> list[int]:
        return [r.code for r in self.replies]

    @property
    def enhanced(self) -> list[str | None]:
        return [r.enhanced for r in self.replies]

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def feed(self, data: bytes, policy: Policy = accept_all) -> None:
        """Feed one chunk (``b""`` closes the peer side) and drain every event it yields.

        Decisions are answered with ``policy(event)``; an :class:`Authenticate` is answered
        with ``auth_result``: the user name of LoginCredentials whose password is "right",
        else None (unless the policy gives a refusal)."""
        m = self.machine
        m.receive_data(data)
        while True:
            event = m.next_event()
            if event is NEED_DATA:
                break
            self.events.append(event)
            if isinstance(event, Authenticate):
                reply = policy(event)
                if reply is not None:
                    m.respond(reply)
                else:
                    m.auth_result(authenticate(event))
            elif isinstance(event, DecisionEvent):
                m.respond(policy(event))
            elif isinstance(event, Closed):
                break
        self.output += m.data_to_send()


def authenticate(event: Authenticate) -> str | None:
    """The test authenticator: any user whose password is ``right``."""
    credentials = event.credentials
    password = getattr(credentials, "password", None)
    return getattr(credentials, "username", None) if password == "right" else None


def smtp_settings(**options: Any) -> SMTPSettings:
    options.setdefault("hostname", "mx.example.org")
    return SMTPSettings(**options)


def new_run(
    *,
    stream_body: bool = False,
    budget: MemoryBudget | None = None,
    xclient: bool = False,
    xforward: bool = False,
    expn: bool = False,
    auto_accept: Collection[type[Hello | MailFrom | RcptTo]] = (),
    **options: Any,
) -> Run:
    """A machine greeted with the default 220 (the banner is kept apart from the output);
    ``budget``: the memory budget for message text; ``xclient``/``xforward``: the client may
    send XCLIENT/XFORWARD; ``expn``: the handler answers EXPN; ``auto_accept``: the decisions
    the machine accepts itself."""
    m = SMTPMachine(
        smtp_settings(**options),
        session_id="t",
        stream_body=stream_body,
        budget=budget,
        xclient=xclient,
        xforward=xforward,
        expn=expn,
        auto_accept=auto_accept,
    )
    event = m.next_event()
    assert isinstance(event, Connect), event
    m.respond(None)
    return Run(machine=m, banner=m.data_to_send())


def drive(
    data: bytes | Iterable[bytes],
    policy: Policy = accept_all,
    *,
    close: bool = False,
    **machine_options: Any,
) -> Run:
    """Feed ``data`` (one chunk, or an iterable of chunks) to a fresh greeted machine."""
    run = new_run(**machine_options)
    chunks = [data] if isinstance(data, bytes) else data
    for chunk in chunks:
        if chunk:
            run.feed(chunk, policy)
    if close:
        run.feed(b"", policy)
    return run


def bytewise(data: bytes) -> list[bytes]:
    """``data`` one byte at a time."""
    return [data[i : i + 1] for i in range(len(data))]


def refuse(*kinds: type[Any], reply: Reply | None = None) -> Policy:
    """A policy refusing decisions of the given types (with 550 5.7.1 unless told)."""
    answer = reply or Reply(550, "5.7.1", "Refused by policy")

    def policy(event: DecisionEvent) -> Reply | None:
        return answer if isinstance(event, kinds) else None

    return policy


def contents(run: Run) -> list[bytes]:
    """The text of every message the machine handed out whole, in order."""
    return [e.content for e in run.events if isinstance(e, MessageReceived)]


def ended(run: Run) -> list[TransactionEnded]:
    return [e for e in run.events if isinstance(e, TransactionEnded)]


def outcomes(run: Run) -> list[TransactionOutcome]:
    """How each transaction ended, in order."""
    return [e.outcome for e in ended(run)]
