"""STARTTLS, implicit TLS and AUTH with real clients over loopback sockets: Python's smtplib
(run in a thread, as it blocks) and swaks. Certificates come from trustme; swaks verifies
them against the test CA written to a file.
"""

from __future__ import annotations

import email
import pathlib
import smtplib
import ssl
import subprocess
from functools import partial

import pytest
import trio
import trustme

from smtpd_trio import Config
from smtpd_trio.auth import StaticAuthenticator

from .conftest import CLIENT_DEADLINE, Recorder, run_client, start_server

pytestmark = pytest.mark.integration

USER = "alice@example.org"
PASSWORD = "s3cret-Pa55"
SENDER = "alice@example.org"
RECIPIENT = "b@example.org"
MESSAGE = b"From: alice@example.org\r\nSubject: over TLS\r\n\r\nHello.\r\n"


@pytest.fixture
def swaks_tls(swaks: str) -> str:
    """swaks, if it can speak TLS (it needs Perl's Net::SSLeay and IO::Socket::SSL)."""
    probe = subprocess.run(
        ["perl", "-MNet::SSLeay", "-MIO::Socket::SSL", "-e", "1"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("swaks has no TLS: install libnet-ssleay-perl and libio-socket-ssl-perl")
    return swaks


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def submission_config(server_ctx: ssl.SSLContext, *, implicit: bool = False) -> Config:
    return Config(
        hostname="mx.test",
        tls_context=server_ctx,
        implicit_tls=implicit,
        authenticator=StaticAuthenticator({USER: PASSWORD}),
        auth_required=True,
    )


def assert_one_delivery(handler: Recorder, protocol: str) -> None:
    [delivery] = handler.deliveries
    assert delivery.mail_from == SENDER
    assert delivery.rcpt_tos == (RECIPIENT,)
    assert f" with {protocol} id " in delivery.received_header


# ---- smtplib -----------------------------------------------------------------------------------


def smtplib_starttls(port: int, context: ssl.SSLContext) -> tuple[int, int]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=5) as smtp:
        smtp.starttls(context=context)
        login_code, _ = smtp.login(USER, PASSWORD)
        assert smtp.sendmail(SENDER, [RECIPIENT], MESSAGE) == {}
        quit_code, _ = smtp.quit()
    return login_code, quit_code


async def test_smtplib_starttls_login_sendmail(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler, submission_config(server_ctx))
    with trio.fail_after(CLIENT_DEADLINE):
        codes = await trio.to_thread.run_sync(smtplib_starttls, port, client_ctx)
    assert codes == (235, 221)
    assert_one_delivery(handler, "ESMTPSA")
    parsed = email.message_from_bytes(handler.deliveries[0].content)
    assert parsed["Subject"] == "over TLS"


def smtplib_implicit(port: int, context: ssl.SSLContext) -> int:
    with smtplib.SMTP_SSL(
        "127.0.0.1", port, local_hostname="client.test", timeout=5, context=context
    ) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        assert "PLAIN" in smtp.esmtp_features["auth"].split()
        login_code, _ = smtp.login(USER, PASSWORD)
        assert smtp.sendmail(SENDER, [RECIPIENT], MESSAGE) == {}
    return login_code


async def test_smtplib_smtp_ssl_implicit_tls_login(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler, submission_config(server_ctx, implicit=True))
    with trio.fail_after(CLIENT_DEADLINE):
        login_code = await trio.to_thread.run_sync(smtplib_implicit, port, client_ctx)
    assert login_code == 235
    assert_one_delivery(handler, "ESMTPSA")


def smtplib_without_login(port: int, context: ssl.SSLContext) -> smtplib.SMTPSenderRefused:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=5) as smtp:
        smtp.starttls(context=context)
        try:
            smtp.sendmail(SENDER, [RECIPIENT], MESSAGE)
        except smtplib.SMTPSenderRefused as exc:
            return exc
    raise AssertionError("MAIL was accepted without AUTH")


async def test_smtplib_without_login_is_refused(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler, submission_config(server_ctx))
    with trio.fail_after(CLIENT_DEADLINE):
        refused = await trio.to_thread.run_sync(smtplib_without_login, port, client_ctx)
    assert refused.smtp_code == 530
    assert refused.smtp_error.startswith(b"5.7.0 ")
    assert handler.deliveries == []


# ---- swaks --------------------------------------------------------------------------------------


def swaks_argv(swaks: str, port: int, ca_file: str, *extra: str) -> list[str]:
    return [
        swaks,
        "--server",
        f"127.0.0.1:{port}",
        "--helo",
        "client.test",
        "--from",
        SENDER,
        "--to",
        RECIPIENT,
        "--timeout",
        "8",
        "--tls-verify",
        "--tls-ca-path",
        ca_file,
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        *extra,
    ]


async def test_swaks_starttls_auth_plain(
    nursery: trio.Nursery, swaks_tls: str, server_ctx: ssl.SSLContext, ca_file: str
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler, submission_config(server_ctx))
    run = await run_client(
        swaks_argv(swaks_tls, port, ca_file, "--tls", "--auth-password", PASSWORD), deadline=10
    )
    assert run.returncode == 0, run.output
    assert "<-  220 2.0.0 Ready to start TLS" in run.output
    assert "=== TLS started with cipher TLSv1.3" in run.output
    assert "~> AUTH PLAIN" in run.output
    assert "<~  235 2.7.0 Authentication successful" in run.output
    assert "<~  250 2.0.0 Message accepted" in run.output
    assert_one_delivery(handler, "ESMTPSA")


async def test_swaks_implicit_tls_auth_plain(
    nursery: trio.Nursery, swaks_tls: str, server_ctx: ssl.SSLContext, ca_file: str
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler, submission_config(server_ctx, implicit=True))
    run = await run_client(
        swaks_argv(swaks_tls, port, ca_file, "--tlsc", "--auth-password", PASSWORD), deadline=10
    )
    assert run.returncode == 0, run.output
    assert "STARTTLS" not in run.output
    assert "<~  220 mx.test ESMTP smtpd-trio ready" in run.output
    assert "<~  235 2.7.0 Authentication successful" in run.output
    assert_one_delivery(handler, "ESMTPSA")


async def test_swaks_wrong_password_is_535(
    nursery: trio.Nursery, swaks_tls: str, server_ctx: ssl.SSLContext, ca_file: str
) -> None:
    handler = Recorder()
    port = await start_server(nursery, handler, submission_config(server_ctx))
    run = await run_client(
        swaks_argv(swaks_tls, port, ca_file, "--tls", "--auth-password", "not-" + PASSWORD),
        deadline=10,
    )
    assert run.returncode != 0, run.output
    assert "<~* 535 5.7.8 Authentication credentials invalid" in run.output
    assert handler.deliveries == []


async def test_swaks_plaintext_client_cannot_auth(
    nursery: trio.Nursery, swaks: str, server_ctx: ssl.SSLContext, ca_file: str
) -> None:
    """A client that skips STARTTLS is not offered AUTH, so swaks gives up before MAIL."""
    handler = Recorder()
    port = await start_server(nursery, handler, submission_config(server_ctx))
    run = await run_client(swaks_argv(swaks, port, ca_file, "--auth-password", PASSWORD))
    assert run.returncode != 0, run.output
    assert "250-STARTTLS" in run.output
    assert "AUTH PLAIN LOGIN" not in run.output
    assert handler.deliveries == []


async def test_two_servers_share_one_context(
    nursery: trio.Nursery, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """587 and 465 style listeners on one SSLContext: both work, the SNI wrapper is shared."""
    handler = Recorder()
    starttls_port = await start_server(nursery, handler, submission_config(server_ctx))
    implicit_port = await start_server(
        nursery, handler, submission_config(server_ctx, implicit=True)
    )
    with trio.fail_after(CLIENT_DEADLINE):
        await trio.to_thread.run_sync(partial(smtplib_starttls, starttls_port, client_ctx))
        await trio.to_thread.run_sync(partial(smtplib_implicit, implicit_port, client_ctx))
    assert len(handler.deliveries) == 2
