"""Fixtures for the integration tests: a real server on a loopback port, real client programs.

The server runs in the test's own Trio run (``serve_smtp`` started in the ``nursery`` fixture),
so a test can look straight into what its handler received. Client programs are run with
:func:`trio.run_process` under a deadline; a missing program skips the test, saying which.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Mapping, Sequence

import attrs
import pytest
import trio

from smtpd_trio import Config, Envelope, Handler, Message, Reject, Reply, Session, serve_smtp

#: How long one client program may run before the test fails.
CLIENT_DEADLINE = 20.0


def find_program(name: str) -> str | None:
    """The path of ``name`` on PATH, or in /usr/sbin and /sbin (Postfix installs there)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_program(name: str, packages: str) -> str:
    """The program's path, or skip the test naming the Debian packages that provide it."""
    path = find_program(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian packages: {packages}; .ci/run installs them)")
    return path


@pytest.fixture
def swaks() -> str:
    return require_program("swaks", "swaks")


@pytest.fixture
def smtp_source() -> str:
    return require_program("smtp-source", "postfix")


@attrs.frozen
class Delivery:
    """One message as the handler received it."""

    session_id: str
    client_host: str
    helo_name: str | None
    mail_from: str | None
    mail_params: Mapping[str, str | None]
    rcpt_tos: tuple[str, ...]
    content: bytes
    received_header: str


class Recorder(Handler):
    """Accepts mail for every recipient except ``reject_local_parts``; records every message."""

    def __init__(self, reject_local_parts: Sequence[str] = ("nobody",)) -> None:
        self.reject_local_parts = frozenset(reject_local_parts)
        self.deliveries: list[Delivery] = []
        self.sessions: set[str] = set()

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if address.partition("@")[0] in self.reject_local_parts:
            raise Reject(550, "5.1.1", "No such user here")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        envelope = message.envelope
        self.sessions.add(session.id)
        self.deliveries.append(
            Delivery(
                session_id=session.id,
                client_host=session.client.host,
                helo_name=session.helo_name,
                mail_from=envelope.mail_from,
                mail_params=dict(envelope.mail_params),
                rcpt_tos=envelope.rcpt_tos,
                content=message.content,
                received_header=message.received_header,
            )
        )
        return None


async def start_server(
    nursery: trio.Nursery, handler: Handler, config: Config | None = None
) -> int:
    """Serve ``handler`` on 127.0.0.1 at a free port, in ``nursery``; return the port."""
    config = config or Config(hostname="mx.test")
    listeners = await nursery.start(
        functools.partial(serve_smtp, handler, port=0, host="127.0.0.1", config=config)
    )
    port: int = listeners[0].socket.getsockname()[1]
    return port


@attrs.frozen
class ClientRun:
    """What a client program did: exit status and its output as text."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def run_client(argv: Sequence[str], *, deadline: float = CLIENT_DEADLINE) -> ClientRun:
    """Run a client program to its end (killed and failed at ``deadline`` seconds)."""
    with trio.fail_after(deadline):
        done = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False
        )
    return ClientRun(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
