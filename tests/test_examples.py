"""The examples in examples/ work as their docstrings say, driven through the test harness."""

from __future__ import annotations

import importlib.util
import io
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from smtpd_trio import Config
from smtpd_trio.testing import open_test_session

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path (examples/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def my_domain_only() -> ModuleType:
    return load_example("my_domain_only")


def maildir_messages(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((root / "new").iterdir())]


async def test_minimal_prints_each_message() -> None:
    minimal = load_example("minimal")
    out = io.StringIO()
    with redirect_stdout(out):
        async with open_test_session(minimal.PrintingHandler()) as client:
            assert (await client.command("EHLO client.test")).code == 250
            reply = await client.sendmail(
                "a@example.com", ["b@example.org"], b"Subject: hi\r\n\r\nHello!\r\n"
            )
            assert (reply.code, reply.enhanced) == (250, "2.0.0")
    printed = out.getvalue()
    assert "From <a@example.com> to b@example.org" in printed
    assert "Received: from client.test ([192.0.2.1])" in printed
    assert "Subject: hi\n\nHello!\n" in printed


async def test_my_domain_only_accepts_and_stores(my_domain_only: Any, tmp_path: Path) -> None:
    handler = my_domain_only.MyDomainOnly("example.org", tmp_path / "Maildir")
    message = b"Subject: for us\r\n\r\nkeep me\r\n"
    async with open_test_session(handler) as client:
        assert (await client.command("EHLO client.test")).code == 250
        reply = await client.sendmail("a@example.com", ["user@Example.ORG"], message)
        assert (reply.code, reply.enhanced) == (250, "2.0.0")
    [stored] = maildir_messages(tmp_path / "Maildir")
    head, _, rest = stored.partition(b"\r\n\tby mx.test (smtpd-trio) with ESMTP id ")
    assert head == b"Received: from client.test ([192.0.2.1])"
    assert rest.endswith(b"\r\n" + message)
    assert b"\tfor <user@Example.ORG>;\r\n" in rest
    assert list((tmp_path / "Maildir" / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "address",
    ["user@example.net", "user@sub.example.org", "user@example.org.evil.test", "postmaster"],
)
async def test_my_domain_only_rejects_outside(
    my_domain_only: Any, tmp_path: Path, address: str
) -> None:
    handler = my_domain_only.MyDomainOnly("example.org", tmp_path / "Maildir")
    async with open_test_session(handler) as client:
        assert (await client.command("EHLO client.test")).code == 250
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
        reply = await client.command(f"RCPT TO:<{address}>")
        assert (reply.code, reply.enhanced) == (550, "5.1.1")
        assert reply.text == "5.1.1 We only accept mail for example.org"
        # No recipient was accepted, so there is nothing to send.
        assert (await client.command("DATA")).code == 554
    assert maildir_messages(tmp_path / "Maildir") == []


async def test_my_domain_only_mixed_recipients(my_domain_only: Any, tmp_path: Path) -> None:
    handler = my_domain_only.MyDomainOnly("example.org", tmp_path / "Maildir", subdomains=True)
    async with open_test_session(handler, config=Config(hostname="mx.example.org")) as client:
        assert (await client.command("EHLO client.test")).code == 250
        assert (await client.command("MAIL FROM:<>")).code == 250
        assert (await client.command("RCPT TO:<a@example.com>")).code == 550
        assert (await client.command("RCPT TO:<b@lists.example.org>")).code == 250
        assert (await client.command("RCPT TO:<c@example.org>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: two of three\r\n\r\nhi\r\n.\r\n")
        assert (await client.read_reply()).code == 250
    [stored] = maildir_messages(tmp_path / "Maildir")
    # Two recipients: the Received header names neither (see smtpd_trio.trace).
    assert b"\tfor <" not in stored
    assert stored.endswith(b"Subject: two of three\r\n\r\nhi\r\n")
