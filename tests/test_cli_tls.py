"""``python -m smtpd_trio`` with --tls-cert, --tls-key, --implicit-tls, --require-tls,
--requiretls and --auth: bad files and combinations exit 2 with one line naming the option and
the file; a real run delivers over STARTTLS + AUTH, and one with REQUIRETLS."""

from __future__ import annotations

import email
import smtplib
import ssl
import sys
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from test_cli import assert_one_line_error, cli_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGTERM")

USER = "alice"
PASSWORD = "cli-Pa55word"


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
        "other_key": root / "other-key.pem",
        "encrypted_key": root / "encrypted-key.pem",
    }
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["combined"]))
    cert.cert_chain_pems[0].write_to_path(str(files["chain"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    files["junk"].write_text("this is not a certificate\n")
    ca.issue_cert("other.test").private_key_pem.write_to_path(str(files["other_key"]))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    files["encrypted_key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return files


def test_tls_key_without_cert(pem_files: dict[str, Path]) -> None:
    line = assert_one_line_error(["--tls-key", str(pem_files["key"])])
    assert line == "smtpd-trio: error: --tls-key needs --tls-cert"


def test_missing_cert_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    line = assert_one_line_error(["--tls-cert", str(path)])
    assert line == (
        f"smtpd-trio: error: argument --tls-cert: cannot read '{path}': No such file or directory"
    )


def test_missing_key_file(pem_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    line = assert_one_line_error(["--tls-cert", str(pem_files["chain"]), "--tls-key", str(path)])
    assert line == (
        f"smtpd-trio: error: argument --tls-key: cannot read '{path}': No such file or directory"
    )


def test_cert_path_that_cannot_be_read(tmp_path: Path) -> None:
    line = assert_one_line_error(["--tls-cert", str(tmp_path)])
    assert (
        line == f"smtpd-trio: error: argument --tls-cert: cannot read '{tmp_path}': Is a directory"
    )


def test_cert_that_is_not_a_certificate(pem_files: dict[str, Path]) -> None:
    junk = pem_files["junk"]
    line = assert_one_line_error(["--tls-cert", str(junk)])
    assert line == (
        f"smtpd-trio: error: argument --tls-cert: no PEM certificate in '{junk}' "
        "(no -----BEGIN CERTIFICATE----- line)"
    )


def test_cert_without_its_key(pem_files: dict[str, Path]) -> None:
    chain = pem_files["chain"]
    line = assert_one_line_error(["--tls-cert", str(chain)])
    assert line == (
        f"smtpd-trio: error: argument --tls-cert: no private key in '{chain}': "
        "add it to the file or give --tls-key"
    )


def test_key_that_is_not_a_key(pem_files: dict[str, Path]) -> None:
    junk = pem_files["junk"]
    line = assert_one_line_error(["--tls-cert", str(pem_files["chain"]), "--tls-key", str(junk)])
    assert line == (
        f"smtpd-trio: error: argument --tls-key: no PEM private key in '{junk}' "
        "(no -----BEGIN PRIVATE KEY----- line)"
    )


def test_key_of_another_certificate(pem_files: dict[str, Path]) -> None:
    chain, other = pem_files["chain"], pem_files["other_key"]
    line = assert_one_line_error(["--tls-cert", str(chain), "--tls-key", str(other)])
    assert line == (
        f"smtpd-trio: error: argument --tls-key: the private key in '{other}' does not match "
        f"the certificate in '{chain}'"
    )


def test_encrypted_key_is_refused_without_a_prompt(pem_files: dict[str, Path]) -> None:
    # stdin is not a terminal here, but OpenSSL would try /dev/tty: the CLI never lets it ask.
    encrypted = pem_files["encrypted_key"]
    line = assert_one_line_error(
        ["--tls-cert", str(pem_files["chain"]), "--tls-key", str(encrypted)]
    )
    assert line == (
        f"smtpd-trio: error: argument --tls-key: the private key in '{encrypted}' is "
        "encrypted: give an unencrypted key"
    )


@pytest.mark.parametrize("entry", ["nopassword", "alice:", ":secret"])
def test_auth_needs_user_and_password(entry: str) -> None:
    line = assert_one_line_error(["--auth", entry], "--auth needs USER:PASSWORD")
    assert "secret" not in line


def test_auth_needs_tls() -> None:
    # AUTH is only offered under TLS: a server that would never offer it is refused at start.
    line = assert_one_line_error(["--auth", "alice:secret"], "--auth needs --tls-cert")
    assert "secret" not in line


@pytest.mark.parametrize("flag", ["--implicit-tls", "--require-tls", "--requiretls"])
def test_tls_policies_need_a_cert(flag: str) -> None:
    assert assert_one_line_error([flag]) == f"smtpd-trio: error: {flag} needs --tls-cert"


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


def test_real_run_requiretls_after_starttls(
    pem_files: dict[str, Path], client_ctx: ssl.SSLContext, tmp_path: Path
) -> None:
    maildir = tmp_path / "box"
    args = ["--tls-cert", str(pem_files["combined"]), "--requiretls"]
    with cli_server(*args, "--handler", f"maildir:{maildir}") as server:
        with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=10) as s:
            s.ehlo()
            assert not s.has_extn("requiretls")
            assert s.mail("roger@example.org", ["REQUIRETLS"])[0] == 530
            s.starttls(context=client_ctx)
            s.ehlo()
            assert s.has_extn("requiretls")
            message = b"Subject: REQUIRETLS\r\n\r\nx\r\n"
            refused = s.sendmail(
                "roger@example.org", ["editor@example.net"], message, mail_options=["REQUIRETLS"]
            )
            assert refused == {}
        server.wait_for("accepted")
        assert server.stop() == 0
    (stored,) = list((maildir / "new").iterdir())
    assert stored.read_bytes().endswith(message)
