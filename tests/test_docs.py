"""The documentation runs: every Python example in README.md and docs/ (see tests/doc_runner.py
for how), and what the examples claim is checked here, page by page."""

from __future__ import annotations

import ast
import base64
import json
import logging
import re
import shlex
import socket
import ssl
import tomllib
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import trio
import trio.testing
import trustme
from doc_runner import (
    MESSAGE,
    RECIPIENT,
    ROOT,
    SENDER,
    Page,
    ProgramRun,
    blocks_of,
    markdown_pages,
    page_name,
)
from server_log import kept_records

from smtpd_trio import Config, Endpoint, Handler, Message, Session
from smtpd_trio.auth import BearerCredentials, Login, LoginCredentials, Plain
from smtpd_trio.cli import JSONFormatter, _check_combinations, build_parser
from smtpd_trio.metrics import NO_OBSERVER
from smtpd_trio.proxy import ProxyProtocolError
from smtpd_trio.testing import dot_stuff, open_test_session, tls_contexts

PAGES: dict[Path, Page] = {}


def page(name: str | Path) -> Page:
    path = ROOT / name
    if path not in PAGES:
        PAGES[path] = Page(path)
    return PAGES[path]


EXAMPLES = [
    pytest.param(path, index, id=block.where)
    for path in markdown_pages()
    for index, block in enumerate(page(path).blocks)
]


@pytest.mark.parametrize(("path", "index"), EXAMPLES)
def test_example(path: Path, index: int) -> None:
    page(path).run_through(index)


def executed(name: str) -> Callable[[], Page]:
    """A fixture: the page, every example run (in a sync fixture: examples call trio.run)."""

    def fixture() -> Page:
        return page(name).run_all()

    return pytest.fixture(name=name.removeprefix("docs/").removesuffix(".md").replace("-", "_"))(
        fixture
    )


readme = executed("README.md")  # the fixture README
getting_started = executed("docs/getting-started.md")
handler_api = executed("docs/handler-api.md")
tls_and_auth = executed("docs/tls-and-auth.md")
load_balancers = executed("docs/load-balancers.md")
proxy_api = executed("docs/proxy-api.md")
cli = executed("docs/cli.md")
testing = executed("docs/testing.md")


def only_program(run: Any) -> ProgramRun:
    assert len(run.programs) == 1, run.programs
    return run.programs[0]  # type: ignore[no-any-return]


#: Handler classes that need constructor arguments, driven by the tests below.
DRIVEN_HERE = {
    ("docs/handler-api.md", "Spool"),
    ("docs/handler-api.md", "Mailboxes"),
    ("docs/testing.md", "Held"),
}


def test_every_handler_in_the_docs_is_driven() -> None:
    """Through the generic conversation, a program's server, or a test of this module."""
    left_out = []
    for path in markdown_pages():
        current = page(path).run_all()
        served = {
            type(visit.server.handler)
            for run in current.runs
            for program in run.programs
            for visit in program.visits
        }
        driven = {name for run in current.runs for name in run.driven}
        for name, cls in current.handler_classes().items():
            if name in driven or cls in served or (current.name, name) in DRIVEN_HERE:
                continue
            left_out.append(f"{current.name}: {name}")
    assert not left_out, f"handlers no test drives: {left_out}"


# ---- what is not Python ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(block, id=block.where)
        for path in markdown_pages()
        for block in blocks_of(path, frozenset({"json", "toml"}))
    ],
)
def test_data_blocks_parse(block: Any) -> None:
    if block.language == "toml":
        tomllib.loads(block.text)
    else:
        for line in block.text.splitlines():  # one JSON document per line (JSON Lines)
            assert isinstance(json.loads(line), dict)


# ---- README.md -------------------------------------------------------------------------------


def test_readme_server_serves_its_handler(README: Page) -> None:
    run = README.run_containing("smtpd_trio.run(Inbox())")
    program = only_program(run)
    assert program.ended == "signal"  # SIGTERM: a graceful shutdown, and run() returned
    [visit] = program.visits
    assert visit.requested == [(8025, "127.0.0.1")]  # the defaults: loopback, port 8025
    assert visit.conversation.reply("message").code == 250
    assert f"{SENDER} ('{RECIPIENT}',) {len(MESSAGE)}\n" in run.output


async def test_readme_inbox_refuses_strangers(README: Page) -> None:
    await check_inbox(README["Inbox"])


async def check_inbox(inbox: type[Handler[Any]]) -> None:
    async with open_test_session(inbox()) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        reply = await client.command("RCPT TO:<someone@elsewhere.test>")
        assert (reply.code, reply.text) == (550, "5.1.1 No such user here")
        assert (await client.command("RCPT TO:<Someone@Example.ORG>")).code == 250


# ---- docs/getting-started.md -----------------------------------------------------------------


async def test_first_handler(getting_started: Page) -> None:
    await check_inbox(getting_started["Inbox"])
    run = getting_started.run_containing("class Inbox(Handler)")
    assert only_program(run).visits[0].requested == [(8025, "127.0.0.1")]
    # It prints a summary, then the message with its Received header.
    summary = f"{SENDER} -> ('{RECIPIENT}',): {len(MESSAGE)} octets\n"
    assert summary in run.output
    after = run.output.split(summary, 1)[1]
    assert after.startswith("Received: from client.test ([127.0.0.1])\r\n")
    assert MESSAGE.decode() in after


def test_port_zero_is_read_back(getting_started: Page) -> None:
    program = only_program(getting_started.run_containing('print("serving on port"'))
    [visit] = program.visits
    assert visit.requested == [(0, "127.0.0.1")]
    assert f"serving on port {visit.port}\n" in getting_started.output()


def test_embedded_server_hands_messages_to_the_worker(getting_started: Page) -> None:
    run = getting_started.run_containing("class ToQueue(Handler)")
    [visit] = only_program(run).visits
    assert visit.requested == [(2525, ["127.0.0.1", "::1"])]
    assert visit.conversation.reply("message").code == 250
    assert re.fullmatch(r"processing \d+ octets\n", run.output)


def test_sigterm_shuts_down_gracefully(getting_started: Page) -> None:
    program = only_program(getting_started.run_containing("signal.SIGTERM"))
    assert program.ended == "signal"  # main() returned by itself after SIGTERM


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading``."""
    lines = text.split(f"\n{heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def test_config_table_lists_every_field_with_its_default() -> None:
    """docs/getting-started.md: one row per Config field, in order, each default as it is."""
    text = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    rows = table_rows(text, "### Configuration")
    fields = [f for f in attrs.fields(Config) if f.init]
    assert [row[0].strip("`") for row in rows] == [f.name for f in fields]
    default = Config()
    names = {"socket": socket, "Plain": Plain, "Login": Login, "NO_OBSERVER": NO_OBSERVER}
    for (_, shown, _), field in zip(rows, fields, strict=True):
        actual = getattr(default, field.name)
        m = re.fullmatch(r"`([^`]+)`", shown)
        if m is None:
            assert shown == "empty", field.name
            assert not actual, field.name
            continue
        try:
            value: object = ast.literal_eval(m.group(1))
        except ValueError:
            value = eval(m.group(1), names)  # socket.gethostname(), (Plain(), Login())
        if field.name == "observer":
            assert value is actual  # the one that does nothing
            continue
        if field.name == "auth_mechanisms":
            assert [type(m) for m in value] == [type(m) for m in actual]  # type: ignore[attr-defined]
            continue
        actual = getattr(actual, "value", actual)  # enums are shown by their value
        assert (value, type(value)) == (actual, type(actual)), field.name


# ---- docs/handler-api.md ---------------------------------------------------------------------


async def test_greylist(handler_api: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_seen(ip: str, sender: str, recipient: str) -> bool:
        return False

    async with open_test_session(handler_api["Greylist"]()) as client:
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        assert (await client.command("RCPT TO:<b@example.org>")).code == 250
        reply = await client.command("RCPT TO:<noreply@example.org>")
        assert (reply.code, reply.enhanced) == (550, "5.1.1")
        monkeypatch.setitem(handler_api.namespace, "seen_before", never_seen)
        reply = await client.command("RCPT TO:<c@example.org>")
        assert reply.text == "4.2.0 Greylisted, please try again later"
        assert (await client.command("RCPT TO:<Abuse@example.org>")).code == 250


async def test_typed_state(handler_api: Page) -> None:
    async with open_test_session(handler_api["Counting"]()) as client:
        assert client.session.state.recipients == 0
        await client.ehlo()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.org>")
        await client.command("RCPT TO:<c@example.org>")
        assert client.session.state.recipients == 2


async def test_spool_streams_to_its_directory(handler_api: Page, tmp_path: Path) -> None:
    spool = handler_api["Spool"](str(tmp_path))
    async with open_test_session(spool) as client:
        await client.ehlo()
        assert (await client.sendmail(SENDER, [RECIPIENT], MESSAGE)).code == 250
        envelope_id = f"{client.session.id}-1"
    spooled = trio.Path(tmp_path) / f"{envelope_id}.eml"
    stored = await spooled.read_bytes()
    assert stored.startswith(b"Received: from client.test ([192.0.2.1])\r\n")
    assert stored.endswith(b"\r\n" + MESSAGE)
    # A message refused on the way leaves nothing behind.
    await spooled.unlink()
    config = Config(hostname="mx.test", max_message_size=100)
    async with open_test_session(spool, config=config) as client:
        await client.ehlo()
        reply = await client.sendmail(SENDER, [RECIPIENT], b"x" * 200 + b"\r\n")
        assert (reply.code, reply.enhanced) == (552, "5.3.4")
    assert list(await trio.Path(tmp_path).iterdir()) == []


async def test_lmtp_mailboxes_answer_per_recipient(handler_api: Page) -> None:
    users = {"ann@example.org", "bob@example.org"}
    mailboxes = handler_api["Mailboxes"](users, full={"bob@example.org"})
    config = Config(hostname="lmtp.test", lmtp=True)
    async with open_test_session(mailboxes, config=config) as client:
        assert (await client.lhlo()).code == 250
        await client.command(f"MAIL FROM:<{SENDER}>")
        for user in ("ann", "bob", "eve"):
            assert (await client.command(f"RCPT TO:<{user}@example.org>")).code == 250
        assert (await client.command("DATA")).code == 354
        await client.send(dot_stuff(MESSAGE))
        replies = [str(await client.read_reply()) for _ in range(3)]
    assert replies == [
        "250 2.0.0 <ann@example.org> Message accepted",
        "452 4.2.2 <bob@example.org> Mailbox full",
        "550 5.1.1 <eve@example.org> No such user here",
    ]
    assert len(mailboxes.boxes["ann@example.org"]) == 1
    assert mailboxes.boxes["bob@example.org"] == []


async def test_internal_directory(handler_api: Page) -> None:
    async def authenticator(session: Session, credentials: object) -> str | None:
        return "alice"

    config = Config(hostname="mx.test", authenticator=authenticator, auth_over_plaintext=True)
    async with open_test_session(handler_api["InternalDirectory"](), config=config) as client:
        await client.ehlo()
        assert (await client.command("VRFY bob")).code == 252
        reply = await client.command("EXPN staff")
        assert (reply.code, reply.enhanced) == (550, "5.7.1")
        assert (await client.auth_plain("alice", "secret")).code == 235
        reply = await client.command("VRFY Bob")
        assert reply.lines == ("2.1.5 Bob Smith <bob@example.org>",)
        reply = await client.command("VRFY carol")
        assert (reply.code, reply.enhanced) == (550, "5.1.1")
        reply = await client.command("EXPN Staff")
        assert reply.lines == (
            "2.0.0 Alice <alice@example.org>",
            "2.0.0 Bob Smith <bob@example.org>",
        )


# ---- docs/tls-and-auth.md --------------------------------------------------------------------


def test_certificate_files_are_the_ones_named(tls_and_auth: Page) -> None:
    run = tls_and_auth.run_containing("implicit_tls=True")
    assert run.replaced_files == ["/etc/ssl/mail/fullchain.pem", "/etc/ssl/mail/privkey.pem"]
    assert tls_and_auth["implicit"].implicit_tls
    assert tls_and_auth["starttls"].tls_context is not None


async def test_certificate_relay(tls_and_auth: Page) -> None:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    config = Config(hostname="mx.test", tls_context=server)

    def client_with(name: str) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        ca.issue_cert(name).configure_cert(context)
        return context

    for name, code in [("relay1.example.org", 250), ("laptop.example.net", 530)]:
        async with open_test_session(tls_and_auth["CertificateRelay"](), config=config) as client:
            await client.ehlo()
            assert (await client.starttls(client_with(name))).code == 220
            await client.ehlo()
            assert (await client.command("MAIL FROM:<a@example.org>")).code == code, name


@pytest.fixture
def alice(tls_and_auth: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    """alice:secret in the example's user table, hashed as the example checks it."""
    salt = b"0123456789abcdef"
    digest = __import__("hashlib").scrypt(b"secret", salt=salt, n=2**14, r=8, p=1, dklen=32)
    monkeypatch.setitem(tls_and_auth["USERS"], "alice", (salt, digest))


@pytest.mark.usefixtures("alice")
async def test_password_authenticator(tls_and_auth: Page) -> None:
    tls = tls_contexts()
    config = Config(
        hostname="mx.test",
        tls_context=tls.server,
        authenticator=tls_and_auth["authenticate"],
        auth_required=True,
        max_auth_failures=10,
    )
    async with open_test_session(Handler(), config=config) as client:
        await client.ehlo()
        await client.starttls(tls.client)
        await client.ehlo()
        assert (await client.auth_plain("alice", "wrong")).code == 535
        assert (await client.auth_plain("mallory", "secret")).code == 535
        assert (await client.auth_plain("alice", "secret", authzid="bob")).code == 535
        assert (await client.auth_login("alice", "secret")).code == 235
        assert client.session.authenticated_as == "alice"


@pytest.mark.usefixtures("alice")
async def test_anonymous_mechanism(tls_and_auth: Page) -> None:
    tls = tls_contexts()
    mechanisms = (Plain(), Login(), tls_and_auth["Anonymous"]())
    config = Config(
        hostname="mx.test",
        tls_context=tls.server,
        authenticator=tls_and_auth["my_authenticator"],
        auth_mechanisms=mechanisms,
    )
    async with open_test_session(Handler(), config=config) as client:
        await client.ehlo()
        await client.starttls(tls.client)
        assert "AUTH PLAIN LOGIN ANONYMOUS" in (await client.ehlo()).lines
        not_utf8 = base64.b64encode(b"\xff").decode()
        reply = await client.command(f"AUTH ANONYMOUS {not_utf8}")
        assert (reply.code, reply.enhanced) == (501, "5.5.2")  # not UTF-8
        assert (await client.command("AUTH ANONYMOUS")).lines == ("",)  # 334 and no challenge
        reply = await client.command(base64.b64encode(b"probe@example.org").decode())
        assert reply.code == 235
        assert client.session.authenticated_as == "anonymous"
    async with open_test_session(Handler(), config=config) as client:  # PLAIN still works
        await client.ehlo()
        await client.starttls(tls.client)
        await client.ehlo()
        assert (await client.auth_plain("alice", "secret")).code == 235


@pytest.mark.usefixtures("alice")
async def test_bearer_authenticator(tls_and_auth: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = tls_and_auth["SCOPE"]

    def introspect(token: str) -> dict[str, object]:  # instead of the HTTPS call
        if token == "good":
            return {"active": True, "username": "bob", "scope": scope}
        if token == "other-scope":
            return {"active": True, "username": "bob", "scope": "https://else.example/"}
        return {"active": False}

    monkeypatch.setitem(tls_and_auth.namespace, "introspect", introspect)
    authenticate = tls_and_auth["authenticate_bearer"]
    session = Session(
        id="s", client=Endpoint("192.0.2.1", 1), peer=Endpoint("192.0.2.1", 1), hostname="mx"
    )
    assert await authenticate(session, BearerCredentials("bob", "good")) == "bob"
    assert await authenticate(session, BearerCredentials(None, "good")) == "bob"
    assert await authenticate(session, BearerCredentials("eve", "good")) is None
    assert await authenticate(session, BearerCredentials("bob", "other-scope")) is None
    assert await authenticate(session, BearerCredentials("bob", "expired")) is None
    # Passwords still go through the scrypt authenticator of the page.
    assert await authenticate(session, LoginCredentials("alice", "secret")) == "alice"


# ---- docs/load-balancers.md ------------------------------------------------------------------


def test_quick_start_refuses_untrusted_peers(load_balancers: Page) -> None:
    program = only_program(load_balancers.run_containing('host="0.0.0.0"'))
    [visit] = program.visits
    assert visit.requested == [(2525, "0.0.0.0")]
    assert visit.conversation.refused_silently  # 127.0.0.1 is not in 10.0.1.0/24


def proxy_v2(*tlvs: tuple[int, bytes], local: bool = False) -> bytes:
    """A PROXY v2 header from 198.51.100.7:51234 to 203.0.113.25:25 with these TLVs."""
    body = bytes([198, 51, 100, 7, 203, 0, 113, 25]) + (51234).to_bytes(2) + (25).to_bytes(2)
    for kind, value in tlvs:
        body += bytes([kind]) + len(value).to_bytes(2) + value
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([0x20 if local else 0x21, 0x11])
        + len(body).to_bytes(2)
        + body
    )


async def test_intake_decides_per_header(load_balancers: Page) -> None:
    config = Config(hostname="mx.test", proxy_protocol=True, trusted_proxies=["192.0.2.0/24"])
    aws = 0xEA
    tls_13 = b"\x01" + bytes(4) + b"\x21" + len(b"TLSv1.3").to_bytes(2) + b"TLSv1.3"
    cases: list[tuple[bytes, bool, object]] = [
        (b"PROXY TCP4 198.51.100.7 203.0.113.25 51234 25\r\n", True, None),
        (proxy_v2(local=True), True, "unset"),  # a health check
        (proxy_v2((aws, b"\x01vpce-0123456789abcdef0"), (0x20, tls_13)), True, "TLSv1.3"),
        (proxy_v2((aws, b"\x01vpce-ffffffffffffffff0")), False, "unset"),
    ]
    for header, served, client_tls in cases:
        async with open_test_session(
            load_balancers["Intake"](), config=config, read_greeting=False
        ) as client:
            await client.send(header)
            if served:
                assert (await client.read_reply()).code == 220
                assert client.session.state.get("client_tls", "unset") == client_tls
            else:
                assert await client.at_eof()
                assert client.transcript == b""  # closed before any banner


# ---- docs/proxy-api.md -----------------------------------------------------------------------


async def test_read_proxy_header(proxy_api: Page, autojump_clock: trio.abc.Clock) -> None:
    read_proxy_header = proxy_api["read_proxy_header"]
    header = b"PROXY TCP4 198.51.100.7 203.0.113.25 51234 25\r\n"
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(header + b"EHLO client.example\r\n")
    info, trailing = await read_proxy_header(server, "10.0.0.7")
    assert (info.source_address, info.source_port) == (IPv4Address("198.51.100.7"), 51234)
    assert trailing == b"EHLO client.example\r\n"
    assert await read_proxy_header(server, "192.0.2.1") is None  # not trusted
    start = trio.current_time()
    assert await read_proxy_header(server, "10.0.0.7") is None  # nothing within 5 s
    assert trio.current_time() - start == 5.0
    await client.send_all(b"EHLO too early\r\n")
    with pytest.raises(ProxyProtocolError):
        await read_proxy_header(server, "10.0.0.7")


# ---- docs/testing.md -------------------------------------------------------------------------

#: The reason given for the examples of the pytest plugin, which only pytest can run.
RUN_BY_PYTEST = "run with pytest itself, by tests/test_docs.py (it needs the plugin's fixtures)"


def test_held_is_driven_by_the_examples_own_test(testing: Page) -> None:
    run = testing.run_containing("class Held(Collector)")
    assert run.tests_run == ["test_no_250_before_the_message_is_stored"]


def test_server_thread_example_ran(testing: Page) -> None:
    run = testing.run_containing("def test_welcome_mail()")
    assert run.tests_run == ["test_welcome_mail"]


def test_plugin_examples_pass_under_pytest(pytester: pytest.Pytester) -> None:
    """The examples that use the plugin's fixtures, each a test module, in a pytest run of
    their own (with pytest-trio in Trio mode, as the page's setup says)."""
    blocks = [
        block
        for block in blocks_of(ROOT / "docs" / "testing.md", frozenset({"python"}))
        if block.directive == ("skip", RUN_BY_PYTEST)
    ]
    assert len(blocks) == 2
    for number, block in enumerate(blocks):
        pytester.makepyfile(**{f"test_example_{number}": block.text})
    pytester.makeini("[pytest]\ntrio_mode = true\naddopts = --strict-markers\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


# ---- docs/cli.md -----------------------------------------------------------------------------


@pytest.fixture
def session_records() -> Iterator[list[logging.LogRecord]]:
    with kept_records("smtpd_trio.session", logging.INFO) as records:
        yield records


async def test_structured_fields_are_the_servers(
    cli: Page, session_records: list[logging.LogRecord]
) -> None:
    """The example logs exactly what the server logs, and the JSON shown is what comes out."""
    seen: list[tuple[Session, Message]] = []

    class Keep(Handler):
        async def on_data(self, session: Session, message: Message) -> None:
            seen.append((session, message))

    async with open_test_session(Keep()) as client:
        await client.ehlo()
        await client.sendmail("a@example.com", ["b@example.org"], MESSAGE)
    [server_record] = [r for r in session_records if " accepted: " in r.getMessage()]
    [(session, message)] = seen
    cli["log_accepted"](session, message.envelope, len(message.content))
    example_record = session_records[-1]
    assert example_record.getMessage() == server_record.getMessage()
    assert example_record.__dict__["smtpd"] == server_record.__dict__["smtpd"]

    formatted = json.loads(JSONFormatter().format(server_record))
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    shown = json.loads(text.split("after `logger`:\n\n```json\n", 1)[1].split("\n```", 1)[0])
    assert list(formatted) == list(shown)
    assert {k: type(v) for k, v in formatted.items()} == {k: type(v) for k, v in shown.items()}
    documented = {row[0].strip("`") for row in table_rows(text, "### Structured fields")}
    assert set(server_record.__dict__["smtpd"]) <= documented


# ---- command lines ---------------------------------------------------------------------------

_COMMAND: Final = re.compile(
    r"(?:^|&&\s*)(?:smtpd-trio|python3? -m smtpd_trio)(?=\s|$)(?P<args>.*)"
)


def command_lines() -> list[Any]:
    """Every ``smtpd-trio ...`` (or ``python -m smtpd_trio ...``) in a shell block."""
    found = []
    for path in markdown_pages():
        for block in blocks_of(path, frozenset({"sh", "shell", "bash", "console"})):
            text = re.sub(r"\\\n\s*", " ", block.text)  # continuation lines
            for number, line in enumerate(text.splitlines()):
                m = _COMMAND.search(line.split(" #", 1)[0].strip())
                if m:
                    argv = shlex.split(m.group("args"))
                    found.append(pytest.param(argv, id=f"{page_name(path)}:{block.line + number}"))
    return found


@pytest.mark.parametrize("argv", command_lines())
def test_command_lines_are_accepted(argv: list[str]) -> None:
    """The options exist, their values parse, and they make sense together."""
    args = build_parser().parse_args(argv)
    _check_combinations(args)
