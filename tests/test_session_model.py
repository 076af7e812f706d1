"""A stateful model test of whole sessions: hypothesis drives a client over memory streams,
step by step, against a small model of what the server must do, and checks after every step
that exactly the messages the model says were accepted are stored, each as sent (with DATA or
in BDAT chunks), and that every transaction ended exactly once.

The server runs in a real Trio run in a background thread (the test harness is async; the
stateful machine is not); each rule is one round trip through ``trio.from_thread``.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    Reject,
    Reply,
    Session,
    TransactionOutcome,
)
from smtpd_trio.testing import ClientReply, TestClient, dot_stuff, open_test_session

T = TypeVar("T")

SENDERS = st.sampled_from(["a@example.com", "", "b.c@example.org"])
#: Recipients at refused.test are refused by the handler (550 5.1.1).
RECIPIENTS = st.sampled_from(["x@example.org", "y@example.org", "nobody@refused.test"])
BODIES = st.one_of(
    st.sampled_from(
        [b"", b"Subject: s\r\n\r\nbody\r\n", b".leading dot\r\n..two\r\n", b"x" * 300 + b"\r\n"]
    ),
    st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
)
MAX_SIZE = 250


@attrs.frozen
class Stored:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


class Store(Handler):
    def __init__(self) -> None:
        self.stored: list[Stored] = []
        self.ends: list[TransactionOutcome] = []

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.endswith("@refused.test"):
            raise Reject(550, "5.1.1", "No such user")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        e = message.envelope
        self.stored.append(Stored(e.mail_from, e.rcpt_tos, message.content))
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.ends.append(outcome)


class TrioThread:
    """A Trio run in a thread, serving one test session; ``call`` runs a coroutine function in
    it and returns its result."""

    def __init__(self, handler: Handler, config: Config) -> None:
        self._ready: queue.Queue[tuple[trio.lowlevel.TrioToken, TestClient]] = queue.Queue()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(handler, config), daemon=True)
        self._thread.start()
        self.token, self.client = self._ready.get(timeout=10)

    def _run(self, handler: Handler, config: Config) -> None:
        async def main() -> None:
            async with open_test_session(handler, config=config) as client:
                done = trio.Event()
                self._done = done
                self._ready.put((trio.lowlevel.current_trio_token(), client))
                await done.wait()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        async def bounded() -> T:
            with trio.fail_after(5):
                return await fn()

        return trio.from_thread.run(bounded, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._done.set, trio_token=self.token)
        self._thread.join(10)
        assert not self._thread.is_alive()
        if self._error is not None:
            raise self._error


class SessionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.handler = Store()
        config = Config(hostname="mx.test", max_message_size=MAX_SIZE, max_errors=1000)
        self.trio = TrioThread(self.handler, config)
        self.client = self.trio.client
        # The model.
        self.helo = False
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.expected: list[Stored] = []
        self.started = 0  # transactions opened (accepted MAIL)
        self.closed = False

    def send(self, line: str | bytes) -> ClientReply:
        return self.trio.call(lambda: self.client.command(line))

    def end_transaction(self) -> None:
        self.mail_from = None
        self.rcpts = []

    @rule(extended=st.booleans())
    def hello(self, extended: bool) -> None:
        reply = self.send(("EHLO" if extended else "HELO") + " client.test")
        assert reply.code == 250
        self.helo = True
        self.end_transaction()

    @rule(sender=SENDERS)
    def mail(self, sender: str) -> None:
        reply = self.send(f"MAIL FROM:<{sender}>")
        if not self.helo or self.mail_from is not None:
            assert (reply.code, reply.enhanced) == (503, "5.5.1")
            return
        assert (reply.code, reply.enhanced) == (250, "2.1.0")
        self.mail_from = sender
        self.started += 1

    @rule(address=RECIPIENTS)
    def rcpt(self, address: str) -> None:
        reply = self.send(f"RCPT TO:<{address}>")
        if self.mail_from is None:
            assert (reply.code, reply.enhanced) == (503, "5.5.1")
        elif address.endswith("@refused.test"):
            assert (reply.code, reply.enhanced) == (550, "5.1.1")
        else:
            assert (reply.code, reply.enhanced) == (250, "2.1.5")
            self.rcpts.append(address)

    @rule(body=BODIES)
    def data(self, body: bytes) -> None:
        reply = self.send("DATA")
        if self.mail_from is None:
            assert (reply.code, reply.enhanced) == (503, "5.5.1")
            return
        if not self.rcpts:
            assert (reply.code, reply.enhanced) == (554, "5.5.1")
            return
        assert reply.code == 354
        wire = dot_stuff(body)
        self.trio.call(lambda: self.client.send(wire))
        final = self.trio.call(self.client.read_reply)
        content = wire[:-3].replace(b"\r\n..", b"\r\n.")
        if content.startswith(b".."):
            content = content[1:]
        if len(content) > MAX_SIZE:
            assert (final.code, final.enhanced) == (552, "5.3.4")
        elif b"\x00" in content:
            assert (final.code, final.enhanced) == (550, "5.6.0")
        else:
            assert (final.code, final.enhanced) == (250, "2.0.0")
            assert self.mail_from is not None
            self.expected.append(Stored(self.mail_from, tuple(self.rcpts), content))
        self.end_transaction()

    @rule(body=BODIES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=2))
    def bdat(self, body: bytes, cuts: list[int]) -> None:
        """The message in BDAT chunks (cut at ``cuts``), the last one LAST."""
        points = sorted({cut % (len(body) + 1) for cut in cuts})
        parts = [body[i:j] for i, j in zip([0, *points], [*points, len(body)], strict=True)]
        received = 0
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            reply = self.trio.call(functools.partial(self.client.bdat, part, last=last))
            if self.mail_from is None:
                assert (reply.code, reply.enhanced) == (503, "5.5.1")
                continue
            if not self.rcpts:
                assert (reply.code, reply.enhanced) == (554, "5.5.1")
                continue
            received += len(part)
            if received > MAX_SIZE:  # known from the BDAT line, before any octet
                assert (reply.code, reply.enhanced) == (552, "5.3.4")
                self.end_transaction()
            elif b"\x00" in part:
                assert (reply.code, reply.enhanced) == (550, "5.6.0")
                self.end_transaction()
            elif not last:
                assert (reply.code, reply.text) == (250, f"2.0.0 {len(part)} octets received")
            else:
                assert (reply.code, reply.enhanced) == (250, "2.0.0")
                self.expected.append(Stored(self.mail_from, tuple(self.rcpts), body))
                self.end_transaction()

    @rule()
    def rset(self) -> None:
        assert self.send("RSET").code == 250
        self.end_transaction()

    @rule(line=st.sampled_from(["NOOP", "VRFY x", "HELP", "FROB", "MAIL FROM:<bad", "DATA x"]))
    def other(self, line: str) -> None:
        reply = self.send(line)
        assert reply.code in (250, 252, 214, 500, 501, 503, 554)

    @precondition(lambda self: not self.closed)
    @invariant()
    def stored_exactly_what_was_accepted(self) -> None:
        assert self.handler.stored == self.expected

    def teardown(self) -> None:
        reply = self.send("QUIT")
        assert reply.code == 221
        self.trio.close()
        # Every transaction ended once: the open one (if any) as aborted by QUIT.
        assert len(self.handler.ends) == self.started
        accepted = self.handler.ends.count(TransactionOutcome.ACCEPTED)
        assert accepted == len(self.expected)
        if self.mail_from is not None:
            assert self.handler.ends[-1] is TransactionOutcome.ABORTED


TestSessionModel = SessionModel.TestCase
TestSessionModel.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_model_can_fail() -> None:
    # The model is not vacuous: a server that forgets recipients is caught.
    model: Any = SessionModel()
    try:
        model.hello(True)
        model.mail("a@example.com")
        model.rcpt("x@example.org")
        model.rcpts.append("ghost@example.org")  # what a broken server would have accepted
        model.data(b"hi\r\n")
        try:
            model.stored_exactly_what_was_accepted()
        except AssertionError:
            return
        raise AssertionError("the invariant did not notice a wrong recipient list")
    finally:
        model.teardown()
