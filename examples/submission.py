"""A mail submission server (RFC 6409, RFC 8314): port 587 with STARTTLS and port 465 with
implicit TLS, both requiring AUTH, served at once by one handler.

Users and their scrypt password hashes come from a file, one ``name:hash`` per line; make a
line with ``--hash-password``. Authenticated users may only send as themselves (MAIL FROM must
be their own address); accepted messages go into a Maildir::

    python examples/submission.py --hash-password alice@example.org > users.txt  # asks twice
    python examples/submission.py --cert cert.pem --key key.pem --users users.txt \\
        --maildir /tmp/outgoing --submission-port 5870 --submissions-port 4650
    swaks --server 127.0.0.1:5870 --tls --auth PLAIN --auth-user alice@example.org \\
        --from alice@example.org --to bob@example.net
    swaks --server 127.0.0.1:4650 --tlsc --auth PLAIN --auth-user alice@example.org \\
        --from alice@example.org --to bob@example.net

Ports 587 and 465 are privileged: as a normal user, pick others (or grant the capability).
Each option can also come from the environment: TLS_CERT, TLS_KEY, SUBMISSION_USERS,
MAILDIR, SUBMISSION_PORT, SUBMISSIONS_PORT, SMTP_HOST.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import hashlib
import hmac
import os
import secrets
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path

import attrs
import trio

from smtpd_trio import (
    Config,
    Handler,
    Message,
    Reject,
    Reply,
    Session,
    SMTPServer,
    listener_port,
    open_smtp_listeners,
)
from smtpd_trio.auth import LoginCredentials
from smtpd_trio.handlers import Maildir

# scrypt cost: about 50 ms and 16 MiB per check on a current machine.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$<salt>$<hash>`` (both base64), the form the users file holds."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password: str, stored: str) -> bool:
    """True if ``password`` matches a :func:`hash_password` result. Slow on purpose."""
    scheme, _, rest = stored.partition("$")
    salt_b64, _, digest_b64 = rest.partition("$")
    if scheme != "scrypt" or not salt_b64 or not digest_b64:
        return False
    expected = base64.b64decode(digest_b64)
    given = hashlib.scrypt(
        password.encode("utf-8"),
        salt=base64.b64decode(salt_b64),
        n=_SCRYPT_N,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=len(expected),
    )
    return hmac.compare_digest(given, expected)


# Checked for unknown users too, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_hex(8))


class ScryptAuthenticator:
    """An authenticator over a table of user name → :func:`hash_password` result. scrypt runs
    in a worker thread, so a slow check never stalls other sessions."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ScryptAuthenticator:
        users: dict[str, str] = {}
        for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, stored = line.rpartition(":")
            if not sep or not name or not stored.startswith("scrypt$"):
                raise ValueError(f"{path}:{number}: expected name:scrypt$...")
            users[name] = stored
        return cls(users)

    async def __call__(self, session: Session, credentials: object) -> str | None:
        if not isinstance(credentials, LoginCredentials):
            return None
        if credentials.authzid not in (None, credentials.username):
            return None  # no acting on behalf of someone else
        stored = self.users.get(credentials.username)
        ok = await trio.to_thread.run_sync(
            check_password, credentials.password, stored or _DUMMY_HASH
        )
        return credentials.username if ok and stored is not None else None


class Submission(Handler):
    """Takes mail from authenticated users, who may only send as themselves, into a Maildir
    (a relay would queue it for delivery instead)."""

    def __init__(self, maildir: str | os.PathLike[str]) -> None:
        self.store = Maildir(maildir)

    async def on_mail(
        self, session: Session, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        # auth_required already refused MAIL before AUTH (530 5.7.0); this is the sender policy.
        user = session.authenticated_as
        if user is None or address.lower() != user.lower():
            raise Reject(553, "5.7.1", f"You may only send as {user}")
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        return await self.store.on_data(session, message)


def tls_context(cert: str | os.PathLike[str], key: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """A server context with the certificate chain and key loaded (TLS 1.2 at least)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def configs(
    context: ssl.SSLContext, authenticator: ScryptAuthenticator, hostname: str | None = None
) -> tuple[Config, Config]:
    """The configurations of port 587 (STARTTLS first, then AUTH) and 465 (implicit TLS)."""
    base = Config(tls_context=context, authenticator=authenticator, auth_required=True)
    if hostname is not None:
        base = attrs.evolve(base, hostname=hostname)
    return attrs.evolve(base, require_tls=True), attrs.evolve(base, implicit_tls=True)


async def serve(
    handler: Submission,
    submission: Config,
    submissions: Config,
    *,
    host: str = "127.0.0.1",
    submission_port: int = 587,
    submissions_port: int = 465,
    stop_on_signals: bool = False,
    task_status: trio.TaskStatus[tuple[int, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve both ports until cancelled; ``task_status`` gets the two ports actually bound.

    With ``stop_on_signals`` (main thread only), the first SIGINT or SIGTERM shuts both
    servers down gracefully (idle clients are told 421 at once, a message being sent may
    finish) and this returns; a second one stops at once."""
    servers = [SMTPServer(handler, config=submission), SMTPServer(handler, config=submissions)]
    with contextlib.ExitStack() as stack:
        async with trio.open_nursery() as watcher:
            if stop_on_signals:
                signals = stack.enter_context(
                    trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
                )
                watcher.start_soon(_stop_on_signals, signals, servers, watcher.cancel_scope)
            async with trio.open_nursery() as nursery:
                ports: list[int] = []
                for server, port in zip(servers, (submission_port, submissions_port), strict=True):
                    listeners = await open_smtp_listeners(port, host=host)
                    await nursery.start(server.serve, listeners)
                    ports.append(listener_port(listeners[0]))
                task_status.started((ports[0], ports[1]))
            watcher.cancel_scope.cancel()  # both servers are done: stop watching


async def _stop_on_signals(
    signals: AsyncIterator[int], servers: list[SMTPServer], everything: trio.CancelScope
) -> None:
    async for signum in signals:
        if servers[0].shutting_down:
            print(f"second {signal.Signals(signum).name}: stopping now", file=sys.stderr)
            everything.cancel()
            return
        print(f"{signal.Signals(signum).name}: shutting down", file=sys.stderr)
        for server in servers:
            server.shutdown()


def main() -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hash-password", metavar="USER", help="print a users-file line, exit")
    parser.add_argument("--cert", default=env.get("TLS_CERT"), help="certificate chain (PEM)")
    parser.add_argument("--key", default=env.get("TLS_KEY"), help="private key (PEM)")
    parser.add_argument("--users", default=env.get("SUBMISSION_USERS"), help="name:hash lines")
    parser.add_argument("--maildir", type=Path, default=Path(env.get("MAILDIR", "outgoing")))
    parser.add_argument("--host", default=env.get("SMTP_HOST", "127.0.0.1"))
    parser.add_argument(
        "--submission-port", type=int, default=int(env.get("SUBMISSION_PORT", "587"))
    )
    parser.add_argument(
        "--submissions-port", type=int, default=int(env.get("SUBMISSIONS_PORT", "465"))
    )
    parser.add_argument("--hostname", default=None, help="name in the banner and Received")
    args = parser.parse_args()

    if args.hash_password:
        password = getpass.getpass(f"Password for {args.hash_password}: ")
        if password != getpass.getpass("Again: "):
            sys.exit("the passwords differ")
        print(f"{args.hash_password}:{hash_password(password)}")
        return
    if not args.cert or not args.users:
        parser.error("--cert and --users are required (or TLS_CERT and SUBMISSION_USERS)")
    try:
        context = tls_context(args.cert, args.key)
        authenticator = ScryptAuthenticator.from_file(args.users)
    except (OSError, ssl.SSLError, ValueError) as exc:
        parser.error(str(exc))
    submission, submissions = configs(context, authenticator, args.hostname)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(
                partial(
                    serve,
                    Submission(args.maildir),
                    submission,
                    submissions,
                    host=args.host,
                    submission_port=args.submission_port,
                    submissions_port=args.submissions_port,
                    stop_on_signals=True,
                )
            )
            print(
                f"Submission on {args.host}:{ports[0]} (STARTTLS) and "
                f"{args.host}:{ports[1]} (implicit TLS), into {args.maildir}",
                flush=True,
            )

    trio.run(run)


if __name__ == "__main__":
    main()
