"""smtpd-trio: an SMTP server framework for Trio.

Write a handler with a few async methods, then ``smtpd_trio.run(handler)`` (serves until
Ctrl-C or SIGTERM, then shuts down gracefully), ``await serve_smtp(handler)`` in a Trio
program, or ``with ServerThread(handler) as server:`` from synchronous code; serve one session
on any Trio stream with :func:`run_session`; or test a handler with no sockets at all using
:mod:`smtpd_trio.testing`. See docs/ for the guides.
"""

from ._smtp.body import BareLineEndings, NulOctets
from ._smtp.dsn import DSNRequest, DSNReturn, Notify, OriginalRecipient, Recipient
from ._smtp.replies import Reply
from .config import Config
from .errors import ConfigError, SMTPDTrioError
from .handler import (
    Endpoint,
    Envelope,
    Handler,
    Message,
    MessageAborted,
    MessageStream,
    Reject,
    Session,
    TLSInfo,
    TransactionOutcome,
    Unavailable,
    XClientInfo,
    XForwardInfo,
)
from .handlers.message import MessageHandler
from .runner import run
from .server import (
    LMTP_PORT,
    SMTPServer,
    UnixSocketListener,
    listener_port,
    open_smtp_listeners,
    open_unix_listener,
    serve_lmtp,
    serve_smtp,
)
from .session import run_session
from .thread import ServerThread
from .trace import received_header

__version__ = "0.1.0.dev0"

__all__ = [
    "LMTP_PORT",
    "BareLineEndings",
    "Config",
    "ConfigError",
    "DSNRequest",
    "DSNReturn",
    "Endpoint",
    "Envelope",
    "Handler",
    "Message",
    "MessageAborted",
    "MessageHandler",
    "MessageStream",
    "Notify",
    "NulOctets",
    "OriginalRecipient",
    "Recipient",
    "Reject",
    "Reply",
    "SMTPDTrioError",
    "SMTPServer",
    "ServerThread",
    "Session",
    "TLSInfo",
    "TransactionOutcome",
    "Unavailable",
    "UnixSocketListener",
    "XClientInfo",
    "XForwardInfo",
    "__version__",
    "listener_port",
    "open_smtp_listeners",
    "open_unix_listener",
    "received_header",
    "run",
    "run_session",
    "serve_lmtp",
    "serve_smtp",
]
