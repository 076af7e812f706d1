"""OAUTHBEARER (RFC 7628) and XOAUTH2 with real clients over loopback, under STARTTLS: msmtp
(``auth oauthbearer`` / ``auth xoauth2``) and curl (``--oauth2-bearer``). Both also run the
failure path: the server's JSON error challenge, the client's last word, 535.

What the clients answer to the error challenge (seen with msmtp 1.8.23 and curl 7.88.1):
msmtp sends an empty line for both mechanisms; curl sends ``AQ==`` (^A, RFC 7628 §3.2.3) for
OAUTHBEARER and, for XOAUTH2, closes the connection without answering. The server takes any
answer as the end of the attempt, and a client that leaves as the end of the session.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import ssl

import pytest
import trio
import trustme

from smtpd_trio import Config, Message, Reply, Session
from smtpd_trio._smtp.oauth import parse_oauthbearer
from smtpd_trio.auth import BearerCredentials, Login, Mechanism, OAuthBearer, Plain, XOAuth2

from .conftest import CLIENT_DEADLINE, Recorder, require_program, start_server

pytestmark = pytest.mark.integration

USER = "alice@example.org"
TOKEN = "ya29.a0AfB_byC-good.token~1"
EXPIRED = "ya29.a0AfB_byC-expired"
RECIPIENT = "b@example.org"
MESSAGE = b"From: alice@example.org\r\nSubject: with a token\r\n\r\nHello.\r\n"
SCOPE = "https://mail.example.org/"
ERROR = {"status": "invalid_token", "schemes": "bearer", "scope": SCOPE}
ALL = (Plain(), Login(), OAuthBearer(scope=SCOPE), XOAuth2(scope=SCOPE))


async def validator(session: Session, credentials: object) -> str | None:
    if not isinstance(credentials, BearerCredentials) or credentials.token != TOKEN:
        return None
    return USER if credentials.user in (None, USER) else None


class Identities(Recorder):
    """Records the authenticated identity of each message's session too."""

    def __init__(self) -> None:
        super().__init__()
        self.identities: list[str | None] = []

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.identities.append(session.authenticated_as)
        return await super().on_data(session, message)


async def serve(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, mechanisms: tuple[Mechanism, ...] = ALL
) -> tuple[int, Identities]:
    handler = Identities()
    config = Config(
        hostname="mx.test",
        tls_context=server_ctx,
        authenticator=validator,
        auth_mechanisms=mechanisms,
        auth_required=True,
    )
    return await start_server(nursery, handler, config), handler


async def run_with_stdin(argv: list[str]) -> tuple[int, str]:
    with trio.fail_after(CLIENT_DEADLINE):
        done = await trio.run_process(
            argv, stdin=MESSAGE, capture_stdout=True, capture_stderr=True, check=False
        )
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def dialogue(transcript: str, sent: str, received: str) -> list[str]:
    """The SMTP lines of a client's debug output, each as ``C: line`` or ``S: line``."""
    lines = []
    for line in transcript.splitlines():
        if line.startswith(sent):
            lines.append(("C: " + line[len(sent) :]).rstrip())
        elif line.startswith(received):
            lines.append(("S: " + line[len(received) :]).rstrip())
    return lines


def after_the_token(lines: list[str]) -> list[str]:
    """What follows the client's token: the server's error challenge decoded, then the rest."""
    at = next(i for i, line in enumerate(lines) if line.startswith("S: 334 ey"))
    error = json.loads(base64.b64decode(lines[at][len("S: 334 ") :], validate=True))
    assert error == ERROR
    return ["S: 334 <error>", *lines[at + 1 :]]


def assert_delivered(handler: Identities) -> None:
    [delivery] = handler.deliveries
    assert delivery.rcpt_tos == (RECIPIENT,)
    assert " with ESMTPSA id " in delivery.received_header
    assert handler.identities == [USER]


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


# ---- msmtp ---------------------------------------------------------------------------------------


def msmtp_argv(
    msmtp: str, tmp_path: pathlib.Path, port: int, ca_file: str, mechanism: str, token: str
) -> list[str]:
    """msmtp with a configuration file of its own (the token in it, so mode 0600)."""
    config = tmp_path / "msmtprc"
    config.write_text(
        "\n".join(
            [
                "account default",
                "host 127.0.0.1",
                f"port {port}",
                "tls on",
                "tls_starttls on",
                f"tls_trust_file {ca_file}",
                f"auth {mechanism}",
                f"user {USER}",
                f"password {token}",
                f"from {USER}",
                "",
            ]
        )
    )
    config.chmod(0o600)
    return [msmtp, f"--file={config}", "--debug", RECIPIENT]


@pytest.mark.parametrize("mechanism", ["oauthbearer", "xoauth2"])
async def test_msmtp_authenticates_with_a_token(
    nursery: trio.Nursery,
    server_ctx: ssl.SSLContext,
    ca_file: str,
    tmp_path: pathlib.Path,
    mechanism: str,
) -> None:
    msmtp = require_program("msmtp", "msmtp")
    port, handler = await serve(nursery, server_ctx)
    code, transcript = await run_with_stdin(
        msmtp_argv(msmtp, tmp_path, port, ca_file, mechanism, TOKEN)
    )
    assert code == 0, transcript
    assert "<-- 250-AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2" in transcript
    assert "<-- 235 2.7.0 Authentication successful" in transcript
    assert_delivered(handler)
    if mechanism == "oauthbearer":
        # What msmtp sends passes the strict GS2 parser, host and port included.
        [sent] = re.findall(r"^--> AUTH OAUTHBEARER (\S+)", transcript, re.MULTILINE)
        assert parse_oauthbearer(base64.b64decode(sent)) == BearerCredentials(
            USER, TOKEN, "127.0.0.1", port
        )


@pytest.mark.parametrize("mechanism", ["oauthbearer", "xoauth2"])
async def test_msmtp_refused_token_gets_the_error_challenge_then_535(
    nursery: trio.Nursery,
    server_ctx: ssl.SSLContext,
    ca_file: str,
    tmp_path: pathlib.Path,
    mechanism: str,
) -> None:
    msmtp = require_program("msmtp", "msmtp")
    port, handler = await serve(nursery, server_ctx)
    code, transcript = await run_with_stdin(
        msmtp_argv(msmtp, tmp_path, port, ca_file, mechanism, EXPIRED)
    )
    assert code != 0, transcript
    # msmtp answers the challenge with an empty line and reads the final reply.
    assert after_the_token(dialogue(transcript, "--> ", "<-- ")) == [
        "S: 334 <error>",
        "C:",
        "S: 535 5.7.8 Authentication credentials invalid",
    ]
    assert "authentication failed" in transcript
    assert handler.deliveries == []


# ---- curl ----------------------------------------------------------------------------------------


def curl_argv(curl: str, port: int, ca_file: str, token: str, *extra: str) -> list[str]:
    return [
        curl,
        "--verbose",
        "--silent",
        "--ssl-reqd",  # STARTTLS, or give up
        "--cacert",
        ca_file,
        f"smtp://127.0.0.1:{port}/client.test",
        "--mail-from",
        USER,
        "--mail-rcpt",
        RECIPIENT,
        "--user",
        USER,
        "--oauth2-bearer",
        token,
        "--upload-file",
        "-",
        *extra,
    ]


@pytest.mark.parametrize(
    ("mechanisms", "name"), [(ALL, "OAUTHBEARER"), ((XOAuth2(scope=SCOPE),), "XOAUTH2")]
)
@pytest.mark.parametrize("initial_response", [False, True])
async def test_curl_authenticates_with_a_token(
    nursery: trio.Nursery,
    server_ctx: ssl.SSLContext,
    ca_file: str,
    mechanisms: tuple[Mechanism, ...],
    name: str,
    initial_response: bool,
) -> None:
    curl = require_program("curl", "curl")
    port, handler = await serve(nursery, server_ctx, mechanisms)
    extra = ["--sasl-ir"] if initial_response else []
    code, transcript = await run_with_stdin(curl_argv(curl, port, ca_file, TOKEN, *extra))
    assert code == 0, transcript
    assert re.search(rf"^> AUTH {name}\b", transcript, re.MULTILINE), transcript
    assert "< 235 2.7.0 Authentication successful" in transcript
    assert_delivered(handler)


async def test_curl_oauthbearer_refused_token_sends_the_dummy_response(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, ca_file: str
) -> None:
    curl = require_program("curl", "curl")
    port, handler = await serve(nursery, server_ctx)
    code, transcript = await run_with_stdin(curl_argv(curl, port, ca_file, EXPIRED, "--sasl-ir"))
    assert code == 67, transcript  # CURLE_LOGIN_DENIED
    assert after_the_token(dialogue(transcript, "> ", "< ")) == [
        "S: 334 <error>",
        "C: AQ==",
        "S: 535 5.7.8 Authentication credentials invalid",
    ]
    assert handler.deliveries == []


async def test_curl_xoauth2_refused_token(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, ca_file: str
) -> None:
    curl = require_program("curl", "curl")
    port, handler = await serve(nursery, server_ctx, (XOAuth2(scope=SCOPE),))
    code, transcript = await run_with_stdin(curl_argv(curl, port, ca_file, EXPIRED, "--sasl-ir"))
    assert code == 67, transcript  # CURLE_LOGIN_DENIED, seen in the error challenge itself
    # curl hangs up without answering; the server just sees the connection end.
    assert after_the_token(dialogue(transcript, "> ", "< ")) == ["S: 334 <error>"]
    assert handler.deliveries == []
