"""Relay: a pass-through handler that forwards each transaction to an upstream SMTP server
in step with the client, so that the upstream's answers are the client's answers.

- ``on_mail`` opens a connection to the upstream (or reuses the one this session already has),
  says EHLO, upgrades with STARTTLS when the upstream offers it, and sends MAIL;
- ``on_rcpt`` sends RCPT: every recipient is accepted or refused by the upstream itself;
- ``on_data`` sends DATA and the message with our ``Received:`` header on top, and relays the
  upstream's final reply (a message the client sent with BDAT goes on with DATA too, so
  ``BODY=BINARYMIME`` is refused at MAIL: DATA cannot carry binary MIME);
- ``on_transaction_end`` sends RSET if the upstream still has the transaction open (the client
  said RSET, or the message was refused before it reached the upstream); ``on_close`` says QUIT
  and closes.

Nothing is acknowledged that the upstream did not accept: a 250 goes to the client only for a
2xx from the upstream. Upstream replies are passed on with their code, enhanced status code and
text (cleaned of control characters, cut to a sane length), except that a ``421`` (the upstream
closing its channel) is sent as ``451``, since this server is not closing the client's; the
upstream connection is then closed. If the upstream cannot be reached, does not answer within
the timeout, drops the connection, fails TLS or breaks the protocol, the client gets ``451 4.4.1
Upstream server unavailable, try again later``: a temporary failure, so it keeps the message
and tries again. The reason is logged, never sent.

STARTTLS is used whenever the upstream offers it, with the certificate verified against the
system's trusted CAs and the upstream's host name, by default; a failed handshake or
verification is a 451, never a fall back to plain text. For a private relay with a self-signed
certificate pass ``verify_tls=False`` (or a ``tls_context`` that trusts its CA).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping
from typing import Final, final

import attrs
import trio

from smtpd_trio._smtp.events import Envelope, TransactionOutcome
from smtpd_trio._smtp.replies import Reply
from smtpd_trio.handler import Handler, Message, Session

from ._upstream import UpstreamConnection, UpstreamError, UpstreamReply, UpstreamTimeout

__all__ = ["CONNECT_TIMEOUT", "TIMEOUT", "UNAVAILABLE", "Relay", "RelayState"]

log = logging.getLogger("smtpd_trio.handlers.relay")

#: Seconds for each step of opening the upstream connection (TCP, greeting, EHLO, TLS).
CONNECT_TIMEOUT: Final = 30.0
#: Seconds for each later read or write on it (Postfix's smtpd_proxy_timeout is 100 s too).
TIMEOUT: Final = 100.0
#: How long QUIT may take when the session ends (``on_close`` has one second in all).
QUIT_TIMEOUT: Final = 0.5

#: The answer whenever the upstream cannot be used.
UNAVAILABLE: Final = Reply(451, "4.4.1", "Upstream server unavailable, try again later")
_NEEDS_SMTPUTF8: Final = Reply(553, "5.6.7", "Upstream server does not support SMTPUTF8 addresses")
_NEEDS_8BITMIME: Final = Reply(554, "5.6.3", "Upstream server does not accept 8-bit message text")
#: The message is passed on with DATA, which cannot carry binary MIME (RFC 3030 §3).
_NO_BINARYMIME: Final = Reply(
    555, "5.6.3", "BODY=BINARYMIME cannot be relayed here: send 8BITMIME or 7BIT"
)
_BAD_SENDER: Final = Reply(501, "5.1.7", "Address not usable for relaying")
_BAD_RECIPIENT: Final = Reply(501, "5.1.3", "Address not usable for relaying")

#: Relayed texts: at most this many lines of at most this many characters.
_MAX_LINES: Final = 8
_MAX_TEXT: Final = 300
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")


@attrs.define
class RelayState:
    """Per connection: the upstream connection, if one is open, and whether the upstream has
    a transaction open (MAIL accepted, no final reply to the message and no RSET since)."""

    upstream: UpstreamConnection | None = None
    in_transaction: bool = False


def _clean(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()[:_MAX_TEXT]


def relayed(reply: UpstreamReply, positive: tuple[int, ...]) -> Reply:
    """The upstream's 2xx, 4xx or 5xx ``reply`` as our answer to a command whose positive
    codes are ``positive`` (the first stands for any other 2xx); 421 becomes 451."""
    code = reply.code
    if 200 <= code < 300:
        code = code if code in positive else positive[0]
        fallback = "OK"
    elif 400 <= code < 600:
        code = 451 if code == 421 else code
        fallback = "Refused by the upstream server"
    else:
        raise ValueError(f"not a reply to relay: {reply}")
    texts = [_clean(text) for text in reply.texts[:_MAX_LINES]]
    first = texts[0] if texts and texts[0] else fallback
    return Reply(code, reply.enhanced, first, tuple(t or "-" for t in texts[1:]))


def _has_controls(text: str) -> bool:
    return _CONTROL.search(text) is not None


@final
class Relay(Handler[RelayState]):
    """Forwards every transaction to the SMTP server at ``host``:``port``, in step."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        verify_tls: bool = True,
        tls_context: ssl.SSLContext | None = None,
        starttls: bool = True,
        helo_name: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = TIMEOUT,
    ) -> None:
        """``verify_tls=False`` accepts any certificate (a private relay's self-signed one);
        ``tls_context`` replaces the default client context (to trust a private CA, or to
        present a client certificate); ``starttls=False`` never upgrades. ``helo_name`` is
        what we say in EHLO (default: the session's ``hostname``). ``connect_timeout`` bounds
        each step of connecting; ``timeout`` each later read and write."""
        if not 0 < port < 65536:
            raise ValueError(f"port must be within 1-65535, not {port}")
        if tls_context is not None and not verify_tls:
            raise ValueError("give verify_tls=False or a tls_context, not both")
        if not (connect_timeout > 0 and timeout > 0):
            raise ValueError("timeouts must be positive numbers of seconds")
        self.host = host
        self.port = port
        self.helo_name = helo_name
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        if not starttls:
            self.tls_context: ssl.SSLContext | None = None
        elif tls_context is not None:
            self.tls_context = tls_context
        else:
            self.tls_context = ssl.create_default_context()
            if not verify_tls:
                self.tls_context.check_hostname = False
                self.tls_context.verify_mode = ssl.CERT_NONE

    @property
    def _name(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"<Relay to {self._name}>"

    def new_state(self, session: Session[RelayState]) -> RelayState:
        return RelayState()

    # ---- the upstream connection -------------------------------------------------------------

    async def _open(self, session: Session[RelayState]) -> UpstreamConnection:
        upstream = await UpstreamConnection.open(
            self.host,
            self.port,
            helo_name=self.helo_name or session.hostname,
            tls_context=self.tls_context,
            connect_timeout=self.connect_timeout,
            io_timeout=self.timeout,
        )
        log.debug(
            "[%s] relay: connected to %s%s",
            session.id,
            upstream.name,
            f" ({upstream.tls_version})" if upstream.tls_version else "",
        )
        return upstream

    async def _drop(self, session: Session[RelayState]) -> None:
        """Forget the upstream connection and close it (also when cancelled)."""
        state = session.state
        upstream, state.upstream, state.in_transaction = state.upstream, None, False
        if upstream is not None:
            await upstream.aclose()

    async def _failed(self, session: Session[RelayState], exc: UpstreamError) -> Reply:
        log.warning("[%s] relay to %s: %s; answering %s", session.id, self._name, exc, UNAVAILABLE)
        await self._drop(session)
        return UNAVAILABLE

    async def _answer(
        self, session: Session[RelayState], reply: UpstreamReply, positive: tuple[int, ...]
    ) -> Reply:
        if not (200 <= reply.code < 300 or 400 <= reply.code < 600):
            return await self._failed(session, UpstreamError(f"unexpected reply {reply}"))
        answer = relayed(reply, positive)
        if reply.code == 421:
            await self._drop(session)  # the upstream is closing its end
        return answer

    # ---- callbacks ---------------------------------------------------------------------------

    async def on_mail(
        self, session: Session[RelayState], address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if _has_controls(address):  # the server never lets one through: this is a last guard
            return _BAD_SENDER
        body = params.get("BODY")
        if body is not None and body.upper() == "BINARYMIME":
            return _NO_BINARYMIME
        state = session.state
        try:
            if state.in_transaction:  # not expected: the server ends a transaction first
                await self._reset(session)
            reply: UpstreamReply | Reply | None = None
            if state.upstream is not None:
                # A kept connection may have been closed by the upstream since (an idle
                # timeout): then try once more on a new one.
                try:
                    reply = await self._mail(session, state.upstream, address, params)
                except UpstreamTimeout:
                    raise  # not a closed connection: the upstream is slow, do not wait twice
                except UpstreamError as exc:
                    log.debug(
                        "[%s] relay: kept connection unusable (%s); reconnecting", session.id, exc
                    )
                    await self._drop(session)
                if reply is not None and reply.code == 421:
                    await self._drop(session)
                    reply = None
            if reply is None:
                state.upstream = await self._open(session)
                reply = await self._mail(session, state.upstream, address, params)
        except UpstreamError as exc:
            return await self._failed(session, exc)
        except BaseException:
            await self._drop(session)  # cancelled, or a bug: the conversation is in doubt
            raise
        if isinstance(reply, Reply):
            return reply  # our own refusal: the upstream cannot take this transaction
        assert reply is not None
        answer = await self._answer(session, reply, (250,))
        state.in_transaction = answer.code == 250
        return answer

    async def _mail(
        self,
        session: Session[RelayState],
        upstream: UpstreamConnection,
        address: str,
        params: Mapping[str, str | None],
    ) -> UpstreamReply | Reply:
        """MAIL with the parameters the upstream understands, or our refusal if it cannot take
        this transaction."""
        extensions = upstream.extensions
        command = f"MAIL FROM:<{address}>"
        size = params.get("SIZE")
        if size is not None and "SIZE" in extensions:
            command += f" SIZE={size}"
        body = params.get("BODY")
        if body is not None and "8BITMIME" in extensions:
            command += f" BODY={body.upper()}"
        if "SMTPUTF8" in params:
            if "SMTPUTF8" in extensions:
                command += " SMTPUTF8"
            elif not address.isascii():
                return _NEEDS_SMTPUTF8
        return await upstream.command(command)

    async def on_rcpt(
        self,
        session: Session[RelayState],
        envelope: Envelope,
        address: str,
        params: Mapping[str, str | None],
    ) -> Reply | None:
        state = session.state
        upstream = state.upstream
        if upstream is None or not state.in_transaction:
            return UNAVAILABLE  # the upstream connection was lost in this transaction
        if _has_controls(address):
            return _BAD_RECIPIENT
        if not address.isascii() and "SMTPUTF8" not in upstream.extensions:
            return _NEEDS_SMTPUTF8
        try:
            reply = await upstream.command(f"RCPT TO:<{address}>")
        except UpstreamError as exc:
            return await self._failed(session, exc)
        except BaseException:
            await self._drop(session)
            raise
        return await self._answer(session, reply, (250, 251))

    async def on_data(self, session: Session[RelayState], message: Message) -> Reply | None:
        state = session.state
        upstream = state.upstream
        if upstream is None or not state.in_transaction:
            return UNAVAILABLE
        content = message.content
        if not content.isascii() and not {"8BITMIME", "SMTPUTF8"} & upstream.extensions.keys():
            return _NEEDS_8BITMIME
        try:
            reply = await upstream.command("DATA")
            if reply.code == 354:
                reply = await upstream.send_message(message.received_header.encode(), content)
                state.in_transaction = False
            elif reply.code < 400:
                raise UpstreamError(f"unexpected reply to DATA: {reply}")
        except UpstreamError as exc:
            return await self._failed(session, exc)
        except BaseException:
            await self._drop(session)
            raise
        return await self._answer(session, reply, (250,))

    async def _reset(self, session: Session[RelayState]) -> None:
        upstream = session.state.upstream
        if upstream is None:
            return
        try:
            reply = await upstream.command("RSET")
        except UpstreamError as exc:
            log.debug("[%s] relay: RSET failed (%s); closing", session.id, exc)
            reply = None
        except BaseException:
            await self._drop(session)
            raise
        if reply is None or reply.code != 250:
            await self._drop(session)
        else:
            session.state.in_transaction = False

    async def on_transaction_end(
        self, session: Session[RelayState], envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        if outcome is TransactionOutcome.ABORTED:
            return  # the connection is ending: on_close closes the upstream one
        if session.state.in_transaction:
            await self._reset(session)

    async def on_close(self, session: Session[RelayState]) -> None:
        upstream = session.state.upstream
        if upstream is None:
            return
        try:
            with trio.move_on_after(QUIT_TIMEOUT):
                await upstream.quit()
        finally:
            await self._drop(session)
