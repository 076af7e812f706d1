"""CHUNKING proven with a real client: Exim, which sends messages with BDAT whenever the server
offers CHUNKING, pipelining MAIL, every RCPT, ``BDAT <size> LAST`` with the message, and QUIT
in one write.

Exim is run as a one-shot client (``exim -C our.conf -odf``: deliver in the foreground, then
exit) with a private configuration and spool in a temporary directory and a manual route to
our server on 127.0.0.1; its verbose transcript and its log say what happened. Debian's Exim
(exim4-daemon-light) cannot be installed next to Postfix (both are the system's MTA), so the
test also runs an Exim binary extracted from the package without installing it, named by
``SMTPD_TRIO_EXIM`` (``.ci/run`` does that). Skipped, saying why, without root or without Exim.
"""

from __future__ import annotations

import functools
import os
import pwd
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from smtpd_trio import (
    Config,
    Envelope,
    Handler,
    Message,
    MessageStream,
    Reject,
    Reply,
    Session,
    TransactionOutcome,
    listener_port,
    serve_smtp,
)

from .conftest import find_program

pytestmark = pytest.mark.integration

Listeners = Sequence[trio.abc.Listener[trio.abc.Stream]]


def exim_program() -> str:
    """The Exim binary (``SMTPD_TRIO_EXIM``, else exim4 or exim on PATH), or skip."""
    named = os.environ.get("SMTPD_TRIO_EXIM")
    if named:
        if not os.access(named, os.X_OK):
            pytest.skip(f"SMTPD_TRIO_EXIM={named!r} is not an executable")
        return named
    for name in ("exim4", "exim"):
        found = find_program(name)
        if found:
            return found
    pytest.skip(
        "Exim is not installed (exim4-daemon-light cannot be installed beside Postfix; "
        ".ci/run extracts it without installing and sets SMTPD_TRIO_EXIM)"
    )


def closed_directory_above(program: str) -> Path | None:
    """The first directory above ``program`` that others cannot search, if any."""
    for parent in Path(program).resolve().parents:
        if not parent.stat().st_mode & 0o001:
            return parent
    return None


@attrs.frozen
class EximRun:
    returncode: int
    #: The -v transcript: every SMTP command and reply.
    transcript: str
    #: Exim's main log.
    mainlog: str


class Exim:
    """Exim as a one-shot client, delivering to 127.0.0.1:``port``."""

    def __init__(self, program: str, root: Path, port: int) -> None:
        self.program = program
        self.root = root
        self.conf = root / "exim.conf"
        self.conf.write_text(
            "\n".join(
                [
                    f"exim_path = {program}",
                    "primary_hostname = exim.test",
                    f"spool_directory = {root}/spool",
                    f"log_file_path = {root}/log/%slog",
                    "never_users =",
                    "trusted_users = root",
                    "keep_environment =",
                    "begin routers",
                    # Bounces (to the sender's domain) go nowhere.
                    "bounces:",
                    "  driver = redirect",
                    "  domains = sender.test",
                    "  data = :blackhole:",
                    "to_us:",
                    "  driver = manualroute",
                    f"  route_list = * 127.0.0.1::{port}",
                    "  transport = remote_smtp",
                    "  self = send",
                    "begin transports",
                    "remote_smtp:",
                    "  driver = smtp",
                    "  allow_localhost",
                    "  hosts_avoid_tls = *",
                    "begin retry",
                    "* * F,1h,1h",
                    "",
                ]
            )
        )

    async def prepare(self) -> None:
        """The spool and log directories, owned by Exim's own user (compiled in)."""
        done = await trio.run_process(
            [self.program, "-C", str(self.conf), "-bP", "exim_user"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        output = (done.stdout + done.stderr).decode("utf-8", "replace")
        if done.returncode != 0 or "exim_user = " not in output:
            pytest.skip(f"this Exim cannot run here: {output.strip()}")
        user = pwd.getpwnam(output.split("exim_user = ", 1)[1].split()[0])
        unsearchable = closed_directory_above(self.program)
        if unsearchable is not None:
            # Exim re-executes itself as that user to deliver (-Mc): a directory it cannot
            # search on the way to the binary fails every delivery with "Permission denied".
            pytest.fail(f"{unsearchable} is not searchable by {user.pw_name}: chmod o+x it")
        for name in ("spool", "log"):
            (self.root / name).mkdir(exist_ok=True)  # -bP may have made the spool already
            os.chown(self.root / name, user.pw_uid, user.pw_gid)

    async def send(self, sender: str, recipients: list[str], message: bytes) -> EximRun:
        """Submit ``message`` and deliver it at once (-odf); -oi: a lone dot is text."""
        options = ["-C", str(self.conf), "-odf", "-oi", "-v", "-f", sender]
        with trio.fail_after(30):
            done = await trio.run_process(
                [self.program, *options, "--", *recipients],
                stdin=message,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        mainlog = (self.root / "log" / "mainlog").read_text("utf-8", "replace")
        transcript = (done.stdout + done.stderr).decode("utf-8", "replace")
        return EximRun(done.returncode, transcript, mainlog)


@pytest.fixture
def exim() -> str:
    """The Exim binary, or skip saying why. A synchronous fixture: a skip raised inside a
    Trio test's nursery loses its reason."""
    if os.geteuid() != 0:
        pytest.skip("Exim with a private configuration and spool (-C) is run as root here")
    return exim_program()


@asynccontextmanager
async def exim_client(program: str, port: int) -> AsyncIterator[Exim]:
    with tempfile.TemporaryDirectory(prefix="exim-") as name:
        os.chmod(name, 0o755)
        exim = Exim(program, Path(name), port)
        await exim.prepare()
        yield exim


class Recorder(Handler):
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.ends: list[TransactionOutcome] = []

    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: object
    ) -> Reply | None:
        if address.startswith("nobody@"):
            raise Reject(550, "5.1.1", "No such user here")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.messages.append(message)
        return None

    async def on_transaction_end(
        self, session: Session, envelope: Envelope, outcome: TransactionOutcome
    ) -> None:
        self.ends.append(outcome)


async def start(nursery: trio.Nursery, handler: Handler) -> int:
    listeners: Listeners = await nursery.start(
        functools.partial(serve_smtp, handler, port=0, config=Config(hostname="mx.test"))
    )
    return listener_port(listeners[0])


#: A line holding only a dot, and lines starting with one: DATA would need them stuffed.
TEXT = b"From: a@sender.test\nSubject: chunked\n\nfirst line\n.\n..two dots\n.leading dot\nlast\n"


async def test_exim_sends_with_bdat_and_we_get_the_message_exactly(
    nursery: trio.Nursery, exim: str
) -> None:
    handler = Recorder()
    port = await start(nursery, handler)
    async with exim_client(exim, port) as client:
        run = await client.send("a@sender.test", ["b@example.org", "c@example.org"], TEXT)
    assert run.returncode == 0, run.transcript
    assert "250-CHUNKING" in run.transcript
    assert "will write message using CHUNKING" in run.transcript
    assert "BDAT " in run.transcript
    assert " LAST" in run.transcript
    assert "DATA" not in [
        line.split()[-1] for line in run.transcript.splitlines() if "SMTP" in line
    ]
    # Exim's log marks deliveries that used CHUNKING with "K".
    delivered = [line for line in run.mainlog.splitlines() if " => " in line or " -> " in line]
    assert len(delivered) == 2
    assert all(' K C="250 2.0.0 Message accepted"' in line for line in delivered), delivered
    (message,) = handler.messages
    assert message.envelope.rcpt_tos == ("b@example.org", "c@example.org")
    assert message.envelope.mail_from == "a@sender.test"
    # Sent as counted octets: the lone dot and the leading dots are there as they are.
    assert message.content.endswith(
        b"\r\n\r\nfirst line\r\n.\r\n..two dots\r\n.leading dot\r\nlast\r\n"
    )
    assert message.content.startswith(b"Received: from ")  # Exim's own trace header
    assert handler.ends == [TransactionOutcome.ACCEPTED]
    nursery.cancel_scope.cancel()


async def test_every_recipient_refused_the_pipelined_chunk_is_still_read(
    nursery: trio.Nursery, exim: str
) -> None:
    """Exim pipelines BDAT with the RCPTs: when every RCPT is refused the chunk is on its way
    already. It must be read and answered (554), not parsed as commands, for the conversation
    to stay in step (go-smtp #315)."""
    handler = Recorder()
    port = await start(nursery, handler)
    async with exim_client(exim, port) as client:
        text = b"Subject: doomed\n\nQUIT\nRSET\nMAIL FROM:<evil@x.test>\n"
        run = await client.send("a@sender.test", ["nobody@example.org"], text)
    assert "SMTP<< 550 5.1.1 No such user here" in run.transcript, run.transcript
    assert "SMTP<< 554 5.5.1 No valid recipients" in run.transcript, run.transcript
    assert "SMTP<< 221 2.0.0 Bye" in run.transcript, run.transcript  # its QUIT, after them
    assert "** nobody@example.org" in run.mainlog
    assert handler.messages == []
    assert handler.ends == [TransactionOutcome.ABORTED]  # MAIL accepted, nothing delivered
    nursery.cancel_scope.cancel()


class Streamer(Handler):
    def __init__(self) -> None:
        self.pieces: list[int] = []
        self.data = b""

    async def on_data_chunks(self, session: Session, message: MessageStream) -> Reply | None:
        async for chunk in message.chunks:
            self.pieces.append(len(chunk))
            self.data += chunk
        return None


async def test_a_large_message_streams_as_it_arrives(nursery: trio.Nursery, exim: str) -> None:
    handler = Streamer()
    port = await start(nursery, handler)
    body = b"".join(b"line %07d of a large message\n" % i for i in range(60_000))  # ~2 MB
    async with exim_client(exim, port) as client:
        run = await client.send("a@sender.test", ["b@example.org"], b"Subject: big\n\n" + body)
    assert run.returncode == 0, run.transcript
    assert "BDAT " in run.transcript
    assert handler.data.endswith(body.replace(b"\n", b"\r\n"))
    assert len(handler.pieces) > 10  # handed out as it arrived, not held whole
    assert max(handler.pieces) <= 65536
    nursery.cancel_scope.cancel()
