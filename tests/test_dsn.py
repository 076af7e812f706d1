"""DSN (RFC 3461, RFC 6533): xtext, the parameter parsers, the machine's replies, the Envelope's
typed values, and the example transcript of RFC 3461.

Every reply asserts its exact code and enhanced status code.
"""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from machine_driver import Run, drive

from smtpd_trio import Config, Envelope, Handler, Message, Session
from smtpd_trio._smtp.commands import parse_mailbox
from smtpd_trio._smtp.events import MailFrom, MessageReceived, RcptTo
from smtpd_trio.dsn import (
    MAX_ENVID,
    MAX_ORCPT,
    DSNRequest,
    DSNReturn,
    DSNSyntaxError,
    Notify,
    OriginalRecipient,
    Recipient,
    decode_utf8_address,
    encode_utf8_address,
    parse_envid,
    parse_notify,
    parse_orcpt,
    parse_ret,
    xtext_decode,
    xtext_encode,
)
from smtpd_trio.testing import open_test_session

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<alice@example.com>\r\n"
MAIL_UTF8 = b"MAIL FROM:<alice@example.com> SMTPUTF8\r\n"

#: RFC 3461 §4: xtext, written from the ABNF (not from our code).
XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")


def dsn_run(data: bytes, **options: Any) -> Run:
    options.setdefault("dsn", True)
    return drive(data, **options)


def last(run: Run) -> tuple[int, str | None]:
    reply = run.replies[-1]
    return reply.code, reply.enhanced


# ---- xtext -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_xtext_round_trip(data: bytes) -> None:
    encoded = xtext_encode(data)
    assert XTEXT.match(encoded)
    assert xtext_decode(encoded) == data


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_xtext_encodes_text_as_utf8(text: str) -> None:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate is not text that can be sent
        return
    assert xtext_decode(xtext_encode(text)) == raw


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=string.printable + "é+=", max_size=20))
@example("+2b")  # lower-case hex
@example("+2")
@example("+")
@example("a=b")
@example("a b")
def test_xtext_decode_accepts_exactly_the_grammar(text: str) -> None:
    if XTEXT.match(text):
        decoded = xtext_decode(text)
        # Decoding then encoding gives the canonical form: every hexchar that stands for an
        # xchar becomes the character itself.
        canonical = re.sub(
            r"\+([0-9A-F]{2})",
            lambda m: (
                chr(int(m.group(1), 16))
                if 0x21 <= int(m.group(1), 16) <= 0x7E and m.group(1) not in ("2B", "3D")
                else m.group(0)
            ),
            text,
        )
        assert xtext_encode(decoded) == canonical
    else:
        with pytest.raises(DSNSyntaxError):
            xtext_decode(text)


def test_xtext_examples() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode("QQ314159") == b"QQ314159"
    assert xtext_decode("a+2Bb+3D") == b"a+b="
    assert xtext_encode(b"\x00\xff") == "+00+FF"


# ---- utf-8 addresses (RFC 6533) ----------------------------------------------------------------

U_ADDRESSES = st.builds(
    "{}@{}.{}".format,
    st.text(alphabet="abcxyz0123.+=\\-\u00e9\u00fc\u4e00\u0436", min_size=1, max_size=10),
    st.text(alphabet="abc\u00fc\u0436", min_size=1, max_size=8),
    st.sampled_from(["example", "xn--bcher-kva", "\u00fc"]),
)


@settings(max_examples=300, deadline=None)
@given(address=U_ADDRESSES, unitext=st.booleans())
@example(address="J\u00f6rg@b\u00fccher.example", unitext=False)
def test_utf8_address_round_trip(address: str, unitext: bool) -> None:
    encoded = encode_utf8_address(address, unitext=unitext)
    assert not set(encoded) & {"+", "=", " "}
    if not unitext:
        assert encoded.isascii()
    assert decode_utf8_address(encoded, unitext=True) == address
    if encoded.isascii():
        assert decode_utf8_address(encoded, unitext=False) == address


@pytest.mark.parametrize(
    "text",
    [
        "a\\x{41}b@example.org",  # "A" is no character to escape: it is a QCHAR
        "a\\x{0041}b@example.org",  # a superfluous leading zero
        "a\\x{0A}@example.org",  # LF: not one of HEXPOINT's forms
        "a\\x{D800}@example.org",  # a surrogate
        "a\\x{110000}@example.org",  # past the last code point
        "a\\x{}@example.org",
        "a\\x41@example.org",
        "a\\b@example.org",  # a lone backslash
        "a+b@example.org",
        "a=b@example.org",
        "",
    ],
)
def test_utf8_address_decode_refuses(text: str) -> None:
    with pytest.raises(DSNSyntaxError):
        decode_utf8_address(text, unitext=True)


def test_utf8_address_xtext_form_is_ascii_only() -> None:
    with pytest.raises(DSNSyntaxError):
        decode_utf8_address("j\u00f6rg@example.org", unitext=False)
    assert decode_utf8_address("j\\x{F6}rg@example.org", unitext=False) == "j\u00f6rg@example.org"
    assert decode_utf8_address("j\\x{f6}rg@example.org", unitext=False) == "j\u00f6rg@example.org"


def test_utf8_address_encode_refuses_what_cannot_be_carried() -> None:
    for bad in ("a\nb@example.org", "a\x00@example.org", "\udc80@example.org"):
        with pytest.raises(ValueError, match="cannot encode"):
            encode_utf8_address(bad)
    assert encode_utf8_address("a\tb@example.org") == "a\\x{09}b@example.org"


# ---- NOTIFY ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    conditions=st.lists(st.sampled_from(list(Notify)), min_size=1, max_size=3, unique=True),
    cases=st.lists(st.sampled_from([str.upper, str.lower, str.title]), min_size=3, max_size=3),
)
def test_notify_lists_in_any_order_and_case(conditions: list[Notify], cases: list[Any]) -> None:
    value = ",".join(case(c.value) for case, c in zip(cases, conditions, strict=False))
    assert parse_notify(value) == frozenset(conditions)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["SUCCESS", "FAILURE", "DELAY", "NEVER", "", "success", "X", " DELAY"]),
        min_size=1,
        max_size=5,
    )
)
def test_notify_accepts_exactly_never_alone_or_distinct_conditions(names: list[str]) -> None:
    value = ",".join(names)
    upper = [name.upper() for name in names]
    if upper == ["NEVER"]:
        assert parse_notify(value) == frozenset()
    elif set(upper) <= {"SUCCESS", "FAILURE", "DELAY"} and len(set(upper)) == len(upper):
        assert parse_notify(value) == {Notify(name) for name in upper}
    else:
        with pytest.raises(DSNSyntaxError):
            parse_notify(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("NEVER,SUCCESS", "NOTIFY=NEVER cannot be combined with another condition"),
        ("SUCCESS,SUCCESS", "NOTIFY names a condition twice"),
        ("SUCCESS,", "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
        ("SUCC\u0130SS", "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
        (None, "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
    ],
)
def test_notify_refusals(value: str | None, text: str) -> None:
    with pytest.raises(DSNSyntaxError, match=f"^{re.escape(text)}$"):
        parse_notify(value)


# ---- ORCPT -------------------------------------------------------------------------------------

RFC822_ADDRESSES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(address=RFC822_ADDRESSES, kind=st.sampled_from(["rfc822", "RFC822", "Rfc822"]))
def test_orcpt_rfc822_round_trip(address: str, kind: str) -> None:
    value = f"{kind};{xtext_encode(address)}"
    orcpt = parse_orcpt(value, utf8=False)
    assert orcpt == OriginalRecipient("rfc822", address)
    assert parse_orcpt(orcpt.to_param(), utf8=False) == orcpt


@settings(max_examples=300, deadline=None)
@given(address=U_ADDRESSES, unitext=st.booleans())
def test_orcpt_utf8_round_trip_when_a_mailbox(address: str, unitext: bool) -> None:
    value = "utf-8;" + encode_utf8_address(address, unitext=unitext)
    if parse_mailbox(address, utf8=True) is None:
        with pytest.raises(DSNSyntaxError, match="not a valid mailbox"):
            parse_orcpt(value, utf8=True)
        return
    orcpt = parse_orcpt(value, utf8=True)
    assert orcpt == OriginalRecipient("utf-8", address)
    assert orcpt.to_param().isascii()
    assert parse_orcpt(orcpt.to_param(), utf8=True) == orcpt
    with pytest.raises(DSNSyntaxError, match="utf-8 needs an SMTPUTF8 transaction"):
        parse_orcpt(value, utf8=False)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="rfc822utf-8;+2B3Dab@.\\x{}\u00e9 ", max_size=30))
def test_orcpt_never_decodes_to_control_characters(value: str) -> None:
    for utf8 in (False, True):
        try:
            orcpt = parse_orcpt(value, utf8=utf8)
        except DSNSyntaxError:
            continue
        assert orcpt.type in ("rfc822", "utf-8")
        assert orcpt.address
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", orcpt.address)
        assert value.lower().startswith(orcpt.type + ";")


@pytest.mark.parametrize(
    ("value", "utf8", "text"),
    [
        ("x400;c=US", True, "ORCPT address type must be rfc822 or utf-8"),
        ("unknown;bob@example.org", False, "ORCPT address type must be rfc822 (utf-8 needs"),
        ("bob@example.org", False, "ORCPT must be addr-type;address"),
        ("rfc 822;bob@example.org", False, "ORCPT must be addr-type;address"),
        ("rfc822;", False, "ORCPT rfc822 address must decode to printable ASCII"),
        ("rfc822;bob+0D+0A@example.org", False, "ORCPT rfc822 address must decode to"),
        ("rfc822;b+C3+B6b@example.org", False, "ORCPT rfc822 address must decode to"),
        ("rfc822;bob+2b@example.org", False, "ORCPT address is not valid xtext"),
        ("utf-8;not a mailbox", True, "not a valid utf-8 address encoding"),
        ("utf-8;bob", True, "ORCPT utf-8 address is not a valid mailbox"),
        ("utf-8;b\\x{85}b@example.org", True, "ORCPT utf-8 address is not a valid mailbox"),
        ("rfc822;" + "a" * (MAX_ORCPT - 6), False, "of at most 500 characters"),
        (None, False, "of at most 500 characters"),
    ],
)
def test_orcpt_refusals(value: str | None, utf8: bool, text: str) -> None:
    with pytest.raises(DSNSyntaxError, match=re.escape(text)):
        parse_orcpt(value, utf8=utf8)


def test_orcpt_at_the_length_limit() -> None:
    value = "rfc822;" + "a" * (MAX_ORCPT - len("rfc822;") - len("@b")) + "@b"
    assert len(value) == MAX_ORCPT
    assert parse_orcpt(value, utf8=False).address.endswith("@b")


# ---- RET and ENVID -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ret"),
    [("FULL", DSNReturn.FULL), ("hdrs", DSNReturn.HEADERS), ("Hdrs", DSNReturn.HEADERS)],
)
def test_ret(value: str, ret: DSNReturn) -> None:
    assert parse_ret(value) is ret


@pytest.mark.parametrize("value", [None, "HEADERS", "FULL,HDRS", "\u0130"])
def test_ret_refusals(value: str | None) -> None:
    with pytest.raises(DSNSyntaxError, match=r"^RET must be FULL or HDRS$"):
        parse_ret(value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
def test_envid_round_trip(envid: str) -> None:
    encoded = xtext_encode(envid)
    if len(encoded) <= MAX_ENVID and encoded:
        assert parse_envid(encoded) == envid
    else:
        with pytest.raises(DSNSyntaxError):
            parse_envid(encoded)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a" * (MAX_ENVID + 1), "ENVID must be xtext of 1 to 100 characters"),
        (None, "ENVID must be xtext of 1 to 100 characters"),
        ("a+0Ab", "ENVID must decode to printable ASCII"),
        ("a+ffb", "ENVID is not valid xtext"),
    ],
)
def test_envid_refusals(value: str | None, text: str) -> None:
    with pytest.raises(DSNSyntaxError, match=f"^{re.escape(text)}$"):
        parse_envid(value)


def test_envid_at_the_length_limit() -> None:
    assert parse_envid("x" * MAX_ENVID) == "x" * MAX_ENVID


# ---- the machine -------------------------------------------------------------------------------


def test_dsn_is_not_offered_by_default() -> None:
    run = drive(EHLO)
    assert "DSN" not in run.replies[0].lines
    for line in (
        b"MAIL FROM:<a@example.com> RET=FULL\r\n",
        b"MAIL FROM:<a@example.com> ENVID=x\r\n",
    ):
        assert last(drive(EHLO + line)) == (555, "5.5.4")
    for line in (
        b"RCPT TO:<b@example.org> NOTIFY=NEVER\r\n",
        b"RCPT TO:<b@example.org> ORCPT=rfc822;b@x\r\n",
    ):
        assert last(drive(EHLO + MAIL + line)) == (555, "5.5.4")


def test_dsn_is_advertised_when_offered() -> None:
    run = dsn_run(EHLO)
    assert run.replies[0].lines[1:] == (
        "SIZE 10240000",
        "8BITMIME",
        "SMTPUTF8",
        "PIPELINING",
        "CHUNKING",
        "BINARYMIME",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "LIMITS RCPTMAX=1000 MAILMAX=10000",
        "HELP",
    )


def test_mail_parameters_reach_the_handler_and_the_envelope() -> None:
    run = dsn_run(EHLO + b"MAIL FROM:<a@example.com> RET=hdrs ENVID=QQ+2B314159\r\n")
    assert run.codes == [250, 250]
    event = run.events[-1]
    assert isinstance(event, MailFrom)
    assert event.params == {"RET": "hdrs", "ENVID": "QQ+2B314159"}
    envelope = run.machine.envelope
    assert envelope is not None
    assert envelope.dsn == DSNRequest(DSNReturn.HEADERS, "QQ+314159")


def test_rcpt_parameters_reach_the_handler_and_the_envelope() -> None:
    run = dsn_run(
        EHLO
        + MAIL
        + b"RCPT TO:<b@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;B+2Bx@Example.ORG\r\n"
        + b"RCPT TO:<c@example.org> NOTIFY=never\r\n"
        + b"RCPT TO:<d@example.org>\r\n"
    )
    assert run.codes == [250, 250, 250, 250, 250]
    rcpt = run.of_type(RcptTo)[0]
    assert rcpt.params == {"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;B+2Bx@Example.ORG"}
    envelope = run.machine.envelope
    assert envelope is not None
    assert envelope.rcpt_params[0] == rcpt.params  # the raw values, as before
    b, c, d = envelope.recipients
    assert b == Recipient(
        "b@example.org",
        rcpt.params,
        frozenset({Notify.SUCCESS, Notify.DELAY}),
        OriginalRecipient("rfc822", "B+x@Example.ORG"),
    )
    assert not b.never_notify
    assert c.notify == frozenset()
    assert c.never_notify
    assert c.orcpt is None
    assert d == Recipient("d@example.org", {})
    assert envelope.dsn == DSNRequest()


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"MAIL FROM:<a@example.com> RET=PART\r\n", "RET must be FULL or HDRS"),
        (b"MAIL FROM:<a@example.com> RET\r\n", "RET must be FULL or HDRS"),
        (b"MAIL FROM:<a@example.com> ENVID\r\n", "ENVID must be xtext of 1 to 100 characters"),
        (b"MAIL FROM:<a@example.com> ENVID=a+4\r\n", "ENVID is not valid xtext"),
        (b"MAIL FROM:<a@example.com> ENVID=a+0D+0A\r\n", "ENVID must decode to printable ASCII"),
        (
            b"MAIL FROM:<a@example.com> ENVID=" + b"x" * 101 + b"\r\n",
            "ENVID must be xtext of 1 to 100 characters",
        ),
        (b"MAIL FROM:<a@example.com> RET=FULL RET=HDRS\r\n", "duplicate parameter RET"),
        (b"MAIL FROM:<a@example.com> ENVID=a envid=b\r\n", "duplicate parameter ENVID"),
    ],
)
def test_malformed_mail_parameters_are_501(line: bytes, text: str) -> None:
    run = dsn_run(EHLO + line)
    assert last(run) == (501, "5.5.4")
    assert run.replies[-1].text == f"Syntax error: {text}"
    assert run.machine.envelope is None


@pytest.mark.parametrize(
    ("params", "text"),
    [
        (b"NOTIFY=NEVER,FAILURE", "NOTIFY=NEVER cannot be combined with another condition"),
        (b"NOTIFY=SUCCESS,success", "NOTIFY names a condition twice"),
        (b"NOTIFY=SOMETIMES", "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
        (b"NOTIFY", "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
        (b"ORCPT=x400;c=US", "malformed parameter 'ORCPT=x400;c=US'"),
        (
            b"ORCPT=x400;c+3DUS",
            "ORCPT address type must be rfc822 (utf-8 needs an SMTPUTF8 transaction)",
        ),
        (b"ORCPT=rfc822;b+0Ab@example.org", "ORCPT rfc822 address must decode to printable ASCII"),
        (
            b"ORCPT=utf-8;b@example.org",
            "ORCPT address type must be rfc822 (utf-8 needs an SMTPUTF8 transaction)",
        ),
        (b"NOTIFY=NEVER NOTIFY=NEVER", "duplicate parameter NOTIFY"),
        (b"ORCPT=rfc822;a@b ORCPT=rfc822;a@b", "duplicate parameter ORCPT"),
    ],
)
def test_malformed_rcpt_parameters_are_501(params: bytes, text: str) -> None:
    run = dsn_run(EHLO + MAIL + b"RCPT TO:<b@example.org> " + params + b"\r\n")
    assert last(run) == (501, "5.5.4")
    assert run.replies[-1].text == f"Syntax error: {text}"
    assert not run.of_type(RcptTo)


def test_other_parameters_are_still_555_with_dsn() -> None:
    run = dsn_run(EHLO + MAIL + b"RCPT TO:<b@example.org> NOTIFY=NEVER FOO=1\r\n")
    assert last(run) == (555, "5.5.4")
    run = dsn_run(EHLO + b"MAIL FROM:<a@example.com> RET=FULL MT-PRIORITY=3\r\n")
    assert last(run) == (555, "5.5.4")


def test_utf8_orcpt_in_an_smtputf8_transaction() -> None:
    line = "RCPT TO:<j\u00f6rg@b\u00fccher.example> ORCPT=utf-8;J\u00f6rg@B\u00fccher.example\r\n"
    run = dsn_run(
        EHLO
        + MAIL_UTF8
        + line.encode()
        + b"RCPT TO:<x@example.org> ORCPT=UTF-8;J\\x{F6}rg@example.org\r\n"
    )
    assert run.codes == [250, 250, 250, 250]
    envelope = run.machine.envelope
    assert envelope is not None
    first, second = envelope.recipients
    assert first.orcpt == OriginalRecipient("utf-8", "J\u00f6rg@B\u00fccher.example")
    assert second.orcpt == OriginalRecipient("utf-8", "J\u00f6rg@example.org")
    # Without SMTPUTF8 a raw UTF-8 value is refused as any other: syntax.
    run = dsn_run(
        EHLO + MAIL + "RCPT TO:<x@example.org> ORCPT=utf-8;J\u00f6rg@example.org\r\n".encode()
    )
    assert last(run) == (501, "5.5.4")


def test_dsn_parameters_fit_the_command_line() -> None:
    """RFC 3461 lengths: the longest path with a 500-character ORCPT and every NOTIFY
    condition fits the line DSN makes room for, where it would not fit without DSN."""
    orcpt = "rfc822;" + "o" * (MAX_ORCPT - len("rfc822;"))
    path = "l" * 64 + "@" + ".".join(["d" * 63, "d" * 63, "d" * 61])
    assert len(path) == 254
    line = f"RCPT TO:<{path}> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}\r\n".encode()
    limit = Config(hostname="mx.test", dsn=True).smtp.max_command_line
    default = Config(hostname="mx.test").smtp.max_command_line
    assert default < len(line) <= limit
    run = drive(EHLO + MAIL + line, max_command_line=limit, dsn=True)
    assert run.codes == [250, 250, 250]
    assert last(drive(EHLO + MAIL + line, max_command_line=default, dsn=True)) == (500, "5.5.2")


# ---- RFC 3461: the client side of its example transaction, word for word ---------------------

RFC3461_EXAMPLE = [
    (b"EHLO Example.ORG", 250),
    (b"MAIL FROM:<Alice@Example.ORG> RET=HDRS ENVID=QQ314159", 250),
    (b"RCPT TO:<Bob@Example.COM> NOTIFY=SUCCESS ORCPT=rfc822;Bob@Example.COM", 250),
    (b"RCPT TO:<Carol@Ivory.EDU> NOTIFY=FAILURE ORCPT=rfc822;Carol@Ivory.EDU", 250),
    (b"RCPT TO:<Dana@Ivory.EDU> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Dana@Ivory.EDU", 250),
    (b"RCPT TO:<Eric@Bombs.AF.MIL> NOTIFY=FAILURE ORCPT=rfc822;Eric@Bombs.AF.MIL", 250),
    (b"RCPT TO:<Fred@Bombs.AF.MIL> NOTIFY=NEVER", 250),
    (b"RCPT TO:<George@Tax-ME.GOV> NOTIFY=FAILURE ORCPT=rfc822;George@Tax-ME.GOV", 250),
    (b"DATA", 354),
    (b"Subject: (message goes here)\r\n\r\nHello\r\n.", 250),
    (b"QUIT", 221),
]


def test_rfc3461_example_transaction() -> None:
    script = b"".join(line + b"\r\n" for line, _ in RFC3461_EXAMPLE)
    run = dsn_run(script)
    assert run.codes == [code for _, code in RFC3461_EXAMPLE]
    message = run.of_type(MessageReceived)[0]
    envelope = message.envelope
    assert envelope.mail_from == "Alice@Example.ORG"
    assert envelope.dsn == DSNRequest(DSNReturn.HEADERS, "QQ314159")
    S, F = Notify.SUCCESS, Notify.FAILURE
    assert [(r.address, r.notify, r.orcpt) for r in envelope.recipients] == [
        ("Bob@Example.COM", {S}, OriginalRecipient("rfc822", "Bob@Example.COM")),
        ("Carol@Ivory.EDU", {F}, OriginalRecipient("rfc822", "Carol@Ivory.EDU")),
        ("Dana@Ivory.EDU", {S, F}, OriginalRecipient("rfc822", "Dana@Ivory.EDU")),
        ("Eric@Bombs.AF.MIL", {F}, OriginalRecipient("rfc822", "Eric@Bombs.AF.MIL")),
        ("Fred@Bombs.AF.MIL", frozenset(), None),
        ("George@Tax-ME.GOV", {F}, OriginalRecipient("rfc822", "George@Tax-ME.GOV")),
    ]


async def test_rfc3461_example_through_a_session() -> None:
    """The same transaction through the real pipeline: the handler sees the typed values."""
    seen: list[Envelope] = []

    class Reports(Handler):
        async def on_data(self, session: Session, message: Message) -> None:
            seen.append(message.envelope)

    async with open_test_session(Reports(), config=Config(hostname="mx.test", dsn=True)) as client:
        assert "DSN" in (await client.ehlo("Example.ORG")).lines
        for line, code in RFC3461_EXAMPLE[1:-3]:
            assert (await client.command(line)).code == code
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: hi\r\n\r\nHello\r\n.\r\n")
        assert (await client.read_reply()).code == 250
    (envelope,) = seen
    assert envelope.dsn.envid == "QQ314159"
    assert [r.never_notify for r in envelope.recipients] == [False] * 4 + [True, False]


def test_hand_built_envelopes() -> None:
    """An Envelope built by hand (tests, tools) gets the same typed values; one with fewer
    parameter sets than recipients has the rest without parameters."""
    envelope = Envelope(
        "x-1", "a@example.com", {"RET": "FULL"}, ("b@example.org", "c@x"), ({"NOTIFY": "DELAY"},)
    )
    assert envelope.dsn == DSNRequest(DSNReturn.FULL, None)
    assert [r.notify for r in envelope.recipients] == [{Notify.DELAY}, None]
    with pytest.raises(DSNSyntaxError):
        _ = Envelope("x-1", "", {"RET": "ALL"}).dsn
