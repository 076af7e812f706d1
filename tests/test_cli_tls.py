"""``python -m smtpd_trio`` with --tls-cert, --tls-key, --implicit-tls, --require-tls and --auth:
bad combinations exit 2 with one line; a real run delivers over STARTTLS + AUTH."""

from __future__ import annotations

import email
import smtplib
import ssl
import sys
from pathlib import Path

import pytest
import trustme
from test_cli import cli_server, run_cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGTERM")

USER = "alice"
PASSWORD = "cli-Pa55word"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pem_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A combined key+chain PEM, the chain and the key apart, and something that is no PEM."""
    root = tmp_path_factory.mktemp("pem")
    cert = ca.issue_cert("127.0.0.1", "localhost", "mx.test")
    files = {
        "combined": root / "combined.pem",
        "chain": root / "chain.pem",
        "key": root / "key.pem",
        "junk": root / "junk.pem",
    }
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["combined"]))
    cert.cert_chain_pems[0].write_to_path(str(files["chain"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    files["junk"].write_text("this is not a certificate\n")
    return files


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def assert_one_line_error(args: list[str], words: str) -> str:
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smtpd-trio: error: ")
    assert words in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_tls_key_without_cert(pem_files: dict[str, Path]) -> None:
    assert_one_line_error(["--tls-key", str(pem_files["key"])], "--tls-key needs --tls-cert")


def test_missing_cert_file(tmp_path: Path) -> None:
    assert_one_line_error(["--tls-cert", str(tmp_path / "absent.pem")], "cannot load --tls-cert")


def test_cert_path_that_cannot_be_read(tmp_path: Path) -> None:
    assert_one_line_error(["--tls-cert", str(tmp_path)], "cannot load --tls-cert")


def test_cert_that_is_not_a_certificate(pem_files: dict[str, Path]) -> None:
    assert_one_line_error(["--tls-cert", str(pem_files["junk"])], "cannot load --tls-cert")


def test_cert_without_its_key(pem_files: dict[str, Path]) -> None:
    assert_one_line_error(["--tls-cert", str(pem_files["chain"])], "cannot load --tls-cert")


@pytest.mark.parametrize("entry", ["nopassword", "alice:", ":secret"])
def test_auth_needs_user_and_password(entry: str) -> None:
    line = assert_one_line_error(["--auth", entry], "--auth needs USER:PASSWORD")
    assert "secret" not in line


def test_auth_needs_tls() -> None:
    # AUTH is only offered under TLS: a server that would never offer it is refused at start.
    line = assert_one_line_error(["--auth", "alice:secret"], "--auth needs --tls-cert")
    assert "secret" not in line


@pytest.mark.parametrize("flag", ["--implicit-tls", "--require-tls"])
def test_tls_policies_need_a_cert(flag: str) -> None:
    assert_one_line_error([flag], "need a tls_context")


def test_real_run_starttls_auth_delivers(
    pem_files: dict[str, Path], client_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    maildir = tmp_path / "box"
    message = b"From: alice@example.org\r\nSubject: via STARTTLS\r\n\r\nHello.\r\n"
    args = ["--tls-cert", str(pem_files["combined"]), "--auth", f"{USER}:{PASSWORD}"]
    with cli_server(*args, "--handler", f"maildir:{maildir}", "--hostname", "mx.test") as server:
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10) as s:
            s.ehlo()
            assert s.has_extn("starttls")
            assert not s.has_extn("auth")
            s.starttls(context=client_ctx)
            s.ehlo()
            assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
            assert s.login(USER, PASSWORD)[0] == 235
            assert s.sendmail("alice@example.org", ["b@example.org"], message) == {}
        server.wait_for("accepted")
        status = server.stop()
    assert status == 0
    log = "\n".join(server.lines)
    assert "TLS started: TLSv1.3" in log
    assert f"authenticated as {USER}" in log
    assert PASSWORD not in log
    assert "Traceback" not in log
    (stored,) = list((maildir / "new").iterdir())
    data = stored.read_bytes()
    assert data.endswith(message)
    received = email.message_from_bytes(data)["Received"]
    assert "from client.test ([127.0.0.1])" in received
    assert "by mx.test (smtpd-trio) with ESMTPSA id " in received


def test_real_run_implicit_tls(
    pem_files: dict[str, Path], client_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    maildir = tmp_path / "box"
    args = [
        "--tls-cert",
        str(pem_files["chain"]),
        "--tls-key",
        str(pem_files["key"]),
        "--implicit-tls",
        "--auth",
        f"{USER}:{PASSWORD}",
    ]
    with cli_server(*args, "--handler", f"maildir:{maildir}") as server:
        with smtplib.SMTP_SSL(
            "127.0.0.1", server.port, local_hostname="client.test", timeout=10, context=client_ctx
        ) as s:
            assert s.login(USER, PASSWORD)[0] == 235
            message = b"Subject: 465\r\n\r\nx\r\n"
            assert s.sendmail("alice@example.org", ["b@example.org"], message) == {}
        server.wait_for("accepted")
        assert server.stop() == 0
    (stored,) = list((maildir / "new").iterdir())
    received = email.message_from_bytes(stored.read_bytes())["Received"]
    assert " with ESMTPSA id " in received
