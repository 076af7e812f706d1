"""examples/submission.py: its handler, authenticator and two configurations, driven through the
test harness (and once over real loopback sockets, both ports at once)."""

from __future__ import annotations

import base64
import email
import re
import signal
import smtplib
import ssl
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trustme
from test_examples import load_example

from smtpd_trio import Config
from smtpd_trio.testing import ClientReply, TestClient, open_test_session

USER = "alice@example.org"
PASSWORD = "Submission-Pa55"
PLAIN = base64.b64encode(f"\x00{USER}\x00{PASSWORD}".encode()).decode()
MESSAGE = b"From: alice@example.org\r\nSubject: submitted\r\n\r\nHi Bob.\r\n"


@pytest.fixture(scope="module")
def submission() -> ModuleType:
    return load_example("submission")


@pytest.fixture(scope="module")
def pem(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("submission-pem")
    cert = ca.issue_cert("mx.test", "127.0.0.1")
    chain, key = root / "chain.pem", root / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    return chain, key


@pytest.fixture(scope="module")
def users_file(submission: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("submission-users") / "users.txt"
    path.write_text(f"# users\n\n{USER}:{submission.hash_password(PASSWORD)}\n")
    return path


@pytest.fixture
def configs(submission: Any, pem: tuple[Path, Path], users_file: Path) -> tuple[Config, Config]:
    context = submission.tls_context(*pem)
    authenticator = submission.ScryptAuthenticator.from_file(users_file)
    result: tuple[Config, Config] = submission.configs(context, authenticator, "mx.test")
    return result


async def start_tls(client: TestClient, context: ssl.SSLContext) -> None:
    tls = trio.SSLStream(client.stream, context, server_hostname="mx.test")
    await tls.do_handshake()
    client.stream = tls


def code(reply: ClientReply) -> tuple[int, str | None]:
    return reply.code, reply.enhanced


def test_password_hashing(submission: Any) -> None:
    stored = submission.hash_password(PASSWORD)
    assert stored.startswith("scrypt$")
    assert PASSWORD not in stored
    assert submission.hash_password(PASSWORD) != stored  # salted
    assert submission.check_password(PASSWORD, stored)
    assert not submission.check_password(PASSWORD + "x", stored)
    assert not submission.check_password(PASSWORD, "md5$abc$def")


def test_users_file_errors_name_the_line(submission: Any, tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("# ok\nalice@example.org plain-text-password\n")
    with pytest.raises(ValueError, match=r"users\.txt:2: "):
        submission.ScryptAuthenticator.from_file(path)


async def test_port_587_needs_starttls_then_auth(
    submission: Any,
    configs: tuple[Config, Config],
    client_ctx: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    maildir = tmp_path / "outgoing"
    config_587, _ = configs
    async with open_test_session(submission.Submission(maildir), config=config_587) as client:
        ehlo = await client.command("EHLO client.test")
        assert "STARTTLS" in ehlo.lines
        assert not [line for line in ehlo.lines if line.startswith("AUTH")]
        assert code(await client.command(f"MAIL FROM:<{USER}>")) == (530, "5.7.0")
        assert code(await client.command(f"AUTH PLAIN {PLAIN}")) == (538, "5.7.11")
        assert (await client.command("STARTTLS")).code == 220
        await start_tls(client, client_ctx)
        assert "AUTH PLAIN LOGIN" in (await client.command("EHLO client.test")).lines
        reply = await client.command(f"MAIL FROM:<{USER}>")
        assert code(reply) == (530, "5.7.0")
        assert "Authentication required" in reply.text
        assert code(await client.command(f"AUTH PLAIN {PLAIN}")) == (235, "2.7.0")
        assert code(await client.command("MAIL FROM:<mallory@example.org>")) == (553, "5.7.1")
        reply = await client.sendmail(USER, ["bob@example.net"], MESSAGE)
        assert code(reply) == (250, "2.0.0")
    (stored,) = list((maildir / "new").iterdir())
    received = email.message_from_bytes(stored.read_bytes())["Received"]
    assert " with ESMTPSA id " in received


async def test_port_465_is_implicit_tls_and_needs_auth(
    submission: Any, configs: tuple[Config, Config], client_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    _, config_465 = configs
    handler = submission.Submission(tmp_path / "outgoing")
    async with open_test_session(handler, config=config_465, read_greeting=False) as client:
        await start_tls(client, client_ctx)
        assert (await client.read_reply()).code == 220
        ehlo = await client.command("EHLO client.test")
        assert "STARTTLS" not in ehlo.lines
        assert "AUTH PLAIN LOGIN" in ehlo.lines
        assert code(await client.command(f"MAIL FROM:<{USER}>")) == (530, "5.7.0")
        wrong = base64.b64encode(f"\x00{USER}\x00nope".encode()).decode()
        assert code(await client.command(f"AUTH PLAIN {wrong}")) == (535, "5.7.8")
        unknown = base64.b64encode(f"\x00eve@example.org\x00{PASSWORD}".encode()).decode()
        assert code(await client.command(f"AUTH PLAIN {unknown}")) == (535, "5.7.8")
        assert code(await client.command(f"AUTH PLAIN {PLAIN}")) == (235, "2.7.0")
        assert code(await client.command(f"MAIL FROM:<{USER}>")) == (250, "2.1.0")


def submit(port: int, context: ssl.SSLContext, implicit: bool) -> None:
    smtp: smtplib.SMTP
    if implicit:
        smtp = smtplib.SMTP_SSL("127.0.0.1", port, timeout=5, context=context)
    else:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=5)
        smtp.starttls(context=context)
    with smtp:
        smtp.login(USER, PASSWORD)
        assert smtp.sendmail(USER, ["bob@example.net"], MESSAGE) == {}


async def test_both_ports_served_at_once(
    submission: Any,
    configs: tuple[Config, Config],
    client_ctx: ssl.SSLContext,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    maildir = tmp_path / "outgoing"
    port_587, port_465 = await nursery.start(
        partial(
            submission.serve,
            submission.Submission(maildir),
            *configs,
            submission_port=0,
            submissions_port=0,
        )
    )
    assert port_587 != port_465
    with trio.fail_after(20):
        await trio.to_thread.run_sync(submit, port_587, client_ctx, False)
        await trio.to_thread.run_sync(submit, port_465, client_ctx, True)
    assert len(list((maildir / "new").iterdir())) == 2


def test_the_script_stops_gracefully_on_ctrl_c(pem: tuple[Path, Path], users_file: Path) -> None:
    # The real program, as the docstring runs it: Ctrl-C (SIGINT) tells a connected idle client
    # 421 and exits 0, without a traceback.
    script = Path(__file__).resolve().parent.parent / "examples" / "submission.py"
    args = ["--cert", str(pem[0]), "--key", str(pem[1]), "--users", str(users_file)]
    args += ["--submission-port", "0", "--submissions-port", "0", "--maildir", str(pem[0].parent)]
    with subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            found = re.search(r"127\.0\.0\.1:(\d+) \(STARTTLS\)", banner)
            assert found, banner
            with smtplib.SMTP("127.0.0.1", int(found.group(1)), timeout=10) as smtp:
                assert smtp.ehlo("client.test")[0] == 250
                process.send_signal(signal.SIGINT)
                assert smtp.getreply()[0] == 421
            _, stderr = process.communicate(timeout=20)
        finally:
            process.kill()  # a no-op once it has exited
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "SIGINT: shutting down" in stderr
