"""The XCLIENT/XFORWARD attribute parser and xtext (smtpd_trio._smtp.xclient): what is read, what
is refused with 501, and properties over generated input (xtext round trips, ``NAME=value``
pairs in any order and case, the length limits)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from smtpd_trio._smtp.commands import CommandSyntaxError
from smtpd_trio._smtp.xclient import (
    MAX_VALUE,
    TEMPUNAVAIL,
    UNAVAILABLE,
    XCLIENT_ATTRIBUTES,
    XFORWARD_ATTRIBUTES,
    XClientInfo,
    XForwardInfo,
    decode_xtext,
    encode_xtext,
    parse_xclient,
    parse_xforward,
)

#: What RFC 3461 §4 allows: xchar and upper-case hexchar (the encoder writes only these).
XTEXT_STRICT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")


def refusal(parse: Callable[[str | None], object], arg: str | None) -> str:
    """The 501 text a malformed argument gets (fails if it is accepted)."""
    with pytest.raises(CommandSyntaxError) as caught:
        parse(arg)
    reply = caught.value.reply
    assert (reply.code, reply.enhanced) == (501, "5.5.4")
    return reply.text


# ---- xtext ---------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_xtext_round_trips_any_octets(data: bytes) -> None:
    encoded = encode_xtext(data)
    assert XTEXT_STRICT.match(encoded)
    assert decode_xtext(encoded) == data


@given(st.text(max_size=100))
def test_xtext_of_text_is_its_utf8(text: str) -> None:
    assert decode_xtext(encode_xtext(text)) == text.encode("utf-8")


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=50))
def test_plain_xchars_decode_to_themselves(text: str) -> None:
    assume("+" not in text and "=" not in text)
    assert decode_xtext(text) == text.encode("ascii")


@given(st.text(max_size=60))
def test_decode_accepts_exactly_xtext(text: str) -> None:
    """Anything the decoder accepts is xtext (either case of hex digits), and it re-encodes
    to the same octets."""
    decoded = decode_xtext(text)
    lenient = re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*", text) is not None
    assert (decoded is not None) == lenient
    if decoded is not None:
        assert decode_xtext(encode_xtext(decoded)) == decoded


@pytest.mark.parametrize(
    ("text", "octets"),
    [
        ("", b""),
        ("abc", b"abc"),
        ("a+2Bb", b"a+b"),
        ("+3D", b"="),
        ("+c3+a9", b"\xc3\xa9"),  # lower-case hex is read too, as Postfix reads it
        ("+C3+A9", b"\xc3\xa9"),
        ("+00", b"\x00"),
    ],
)
def test_xtext_examples(text: str, octets: bytes) -> None:
    assert decode_xtext(text) == octets


@pytest.mark.parametrize("text", ["+", "+4", "+4G", "a=b", "a b", "a\tb", "\u00e9", "a+", "++41"])
def test_not_xtext(text: str) -> None:
    assert decode_xtext(text) is None


def test_encode_writes_upper_case_hexchars() -> None:
    assert encode_xtext(b"a+b=c d\xff") == "a+2Bb+3Dc+20d+FF"
    assert encode_xtext("al\u00efce") == "al+C3+AFce"


# ---- XCLIENT -------------------------------------------------------------------------------


def test_xclient_example_from_the_readme() -> None:
    assert parse_xclient("NAME=spike.porcupine.org ADDR=168.100.189.2") == {
        "name": "spike.porcupine.org",
        "addr": "168.100.189.2",
    }


def test_what_nginx_sends() -> None:
    # ngx_mail_proxy_module: "XCLIENT ADDR=<addr> [LOGIN=<xtext login>] NAME=<name>"
    assert parse_xclient("ADDR=127.0.0.2 LOGIN=alice+40example.org NAME=[UNAVAILABLE]") == {
        "addr": "127.0.0.2",
        "login": "alice@example.org",
        "name": UNAVAILABLE,
    }


def test_every_xclient_attribute() -> None:
    fields = parse_xclient(
        "NAME=mail.client.example ADDR=IPV6:2001:DB8::7 PORT=51234 PROTO=esmtp "
        "HELO=[192.0.2.7] LOGIN=alice DESTADDR=192.0.2.25 DESTPORT=25"
    )
    assert XClientInfo(**fields) == XClientInfo(
        name="mail.client.example",
        addr="2001:db8::7",
        port=51234,
        proto="ESMTP",
        helo="[192.0.2.7]",
        login="alice",
        destaddr="192.0.2.25",
        destport=25,
    )


@pytest.mark.parametrize(
    ("arg", "field", "value"),
    [
        ("name=[unavailable]", "name", UNAVAILABLE),
        ("NAME=[TempUnavail]", "name", TEMPUNAVAIL),
        ("ADDR=[UNAVAILABLE]", "addr", UNAVAILABLE),
        ("PORT=[UNAVAILABLE]", "port", UNAVAILABLE),
        ("HELO=[UNAVAILABLE]", "helo", UNAVAILABLE),
        ("LOGIN=[UNAVAILABLE]", "login", UNAVAILABLE),
        ("DESTADDR=[UNAVAILABLE]", "destaddr", UNAVAILABLE),
        ("DESTPORT=[UNAVAILABLE]", "destport", UNAVAILABLE),
        ("ADDR=::ffff:192.0.2.7", "addr", "192.0.2.7"),  # IPv4-mapped: as IPv4
        ("ADDR=ipv6:::ffff:192.0.2.7", "addr", "192.0.2.7"),
        ("ADDR=2001:db8:0:0:0:0:0:1", "addr", "2001:db8::1"),  # canonical text
        ("PORT=0", "port", 0),
        ("PORT=65535", "port", 65535),
        ("PORT=+32+35", "port", 25),  # xtext-encoded digits are digits
        ("PROTO=SMTP", "proto", "SMTP"),
        ("NAME=my_pc.example.", "name", "my_pc.example."),
        ("HELO=a;b(c)", "helo", "a;b(c)"),  # any printable name: the trace header copes
        ("LOGIN=J+C3+BCrgen+20M", "login", "J\u00fcrgen M"),  # a SASL identity: UTF-8
    ],
)
def test_xclient_values(arg: str, field: str, value: object) -> None:
    assert parse_xclient(arg) == {field: value}


@pytest.mark.parametrize(
    "arg",
    [
        "NAME=1.2.3.4",  # an address, not a name
        "NAME=-bad.example",
        "NAME=bad..example",
        "NAME=" + "a" * 64 + ".example",  # a label over 63
        "NAME=a+2Fb",  # "/"
        "ADDR=192.0.2.300",
        "ADDR=IPV6:192.0.2.7",
        "ADDR=[192.0.2.7]",
        "ADDR=fe80::1+25eth0",  # a zone id
        "ADDR=client.example",
        "PORT=65536",
        "PORT=-1",
        "PORT=123456",
        "PORT=2+205",  # "2 5"
        "PROTO=LMTP",
        "PROTO=[UNAVAILABLE]",
        "PORT=[TEMPUNAVAIL]",  # TEMPUNAVAIL is for NAME only
        "HELO=a+20b",  # white space
        "HELO=a+7Fb",  # DEL
        "HELO=caf+C3+A9",  # non-ASCII
        "LOGIN=a+0Ab",  # a line feed
        "LOGIN=a+C2+85b",  # NEL, a C1 control
        "LOGIN=+FF",  # not UTF-8
        "DESTPORT=x",
    ],
)
def test_bad_xclient_values(arg: str) -> None:
    name = arg.partition("=")[0]
    assert refusal(parse_xclient, arg).endswith(f"bad XCLIENT {name} value")


@pytest.mark.parametrize(
    ("arg", "text"),
    [
        (None, "XCLIENT needs attribute=value pairs"),
        ("   ", "XCLIENT needs attribute=value pairs"),
        ("ADDR", "XCLIENT needs attribute=value pairs"),
        ("ADDR=", "XCLIENT needs attribute=value pairs"),
        ("=192.0.2.7", "XCLIENT needs attribute=value pairs"),
        ("IDENT=x", "unknown XCLIENT attribute 'IDENT'"),  # XFORWARD's, not XCLIENT's
        ("ADDR=192.0.2.7 addr=192.0.2.8", "XCLIENT ADDR given twice"),
        ("HELO=a=b", "XCLIENT HELO value is not xtext"),
        ("HELO=a+4", "XCLIENT HELO value is not xtext"),
        ("HELO=caf\u00e9", "XCLIENT HELO value is not xtext"),
    ],
)
def test_malformed_xclient(arg: str | None, text: str) -> None:
    assert refusal(parse_xclient, arg) == f"Syntax error: {text}"


def test_unknown_names_are_quoted_briefly() -> None:
    text = refusal(parse_xclient, "X" * 100 + "=1")
    assert text == f"Syntax error: unknown XCLIENT attribute {'X' * 40!r}"


# ---- XFORWARD ------------------------------------------------------------------------------


def test_xforward_example_from_the_readme() -> None:
    assert parse_xforward("NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP") == {
        "name": "spike.porcupine.org",
        "addr": "168.100.189.2",
        "proto": "ESMTP",
    }
    assert parse_xforward("HELO=spike.porcupine.org") == {"helo": "spike.porcupine.org"}


def test_every_xforward_attribute() -> None:
    fields = parse_xforward(
        "NAME=up.example ADDR=192.0.2.7 PORT=25 PROTO=Sendmail-local HELO=up "
        "IDENT=4F2A1B3C source=local"
    )
    assert XForwardInfo(**fields) == XForwardInfo(
        name="up.example",
        addr="192.0.2.7",
        port=25,
        proto="Sendmail-local",  # any protocol name, not only SMTP
        helo="up",
        ident="4F2A1B3C",
        source="LOCAL",
    )


def test_an_xforward_record_starts_unavailable() -> None:
    info = XForwardInfo()
    assert all(getattr(info, field) is UNAVAILABLE for field in attribute_fields(XForwardInfo))


@pytest.mark.parametrize(
    "arg",
    [
        "NAME=[TEMPUNAVAIL]",  # XCLIENT only
        "SOURCE=ELSEWHERE",
        "PROTO=" + "P" * 65,
        "ADDR=nowhere",
        "IDENT=a+20b",
    ],
)
def test_bad_xforward_values(arg: str) -> None:
    name = arg.partition("=")[0]
    assert refusal(parse_xforward, arg).endswith(f"bad XFORWARD {name} value")


@pytest.mark.parametrize("arg", ["LOGIN=alice", "DESTADDR=192.0.2.1", "DESTPORT=25"])
def test_xforward_has_no_xclient_only_attributes(arg: str) -> None:
    assert "unknown XFORWARD attribute" in refusal(parse_xforward, arg)


def test_xforward_proto_up_to_64() -> None:
    assert parse_xforward("PROTO=" + "P" * 64) == {"proto": "P" * 64}


# ---- properties of NAME=value pairs --------------------------------------------------------


def attribute_fields(cls: type[Any]) -> list[str]:
    return [a.name for a in cls.__attrs_attrs__]


_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,8}[a-z0-9])?", fullmatch=True)
_HOST = (
    st.lists(_LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda name: not re.fullmatch(r"[0-9.]+", name))
)
_PRINTABLE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80
)
_IPV4 = st.ip_addresses(v=4).map(str)
_IPV6 = st.ip_addresses(v=6).map(str)
_ADDRESS = st.one_of(_IPV4, _IPV6, st.just("[UNAVAILABLE]"))
_PORT = st.one_of(st.integers(0, 65535).map(str), st.just("[UNAVAILABLE]"))

# Attribute -> valid values (as text before xtext encoding).
XCLIENT_VALUES: dict[str, st.SearchStrategy[str]] = {
    "NAME": st.one_of(_HOST, st.sampled_from(["[UNAVAILABLE]", "[TEMPUNAVAIL]"])),
    "ADDR": _ADDRESS,
    "PORT": _PORT,
    "PROTO": st.sampled_from(["SMTP", "ESMTP", "smtp", "Esmtp"]),
    "HELO": _PRINTABLE,
    "LOGIN": st.text(
        alphabet=st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"]),
        min_size=1,
        max_size=40,
    ).filter(lambda login: len(encode_xtext(login)) <= MAX_VALUE),
    "DESTADDR": _ADDRESS,
    "DESTPORT": _PORT,
}
XFORWARD_VALUES: dict[str, st.SearchStrategy[str]] = {
    "NAME": st.one_of(_HOST, st.just("[UNAVAILABLE]")),
    "ADDR": _ADDRESS,
    "PORT": _PORT,
    "PROTO": _PRINTABLE.filter(lambda proto: len(proto) <= 64),
    "HELO": _PRINTABLE,
    "IDENT": _PRINTABLE,
    "SOURCE": st.sampled_from(["LOCAL", "REMOTE", "local", "[unavailable]"]),
}


def expected(name: str, text: str) -> object:
    """What the parser should make of a valid value."""
    if text.upper() == "[UNAVAILABLE]":
        return UNAVAILABLE
    if text.upper() == "[TEMPUNAVAIL]":
        return TEMPUNAVAIL
    if name in ("ADDR", "DESTADDR"):
        ip = ipaddress.ip_address(text)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return str(mapped) if mapped is not None else ip.compressed
    if name in ("PORT", "DESTPORT"):
        return int(text)
    if name in ("PROTO", "SOURCE") and text.upper() in ("SMTP", "ESMTP", "LOCAL", "REMOTE"):
        return text.upper()
    return text


@st.composite
def commands(
    draw: st.DrawFn, values: dict[str, st.SearchStrategy[str]]
) -> tuple[str, dict[str, object]]:
    """An argument naming some attributes (any order, any case, any number of spaces), each
    value xtext-encoded (sometimes with every octet as a hexchar), and what it should give."""
    names = draw(st.lists(st.sampled_from(sorted(values)), min_size=1, unique=True))
    items: list[str] = []
    want: dict[str, object] = {}
    for name in names:
        text = draw(values[name])
        encoded = encode_xtext(text)
        if draw(st.booleans()) and len(text.encode()) * 3 <= MAX_VALUE:
            encoded = "".join(f"+{octet:02x}" for octet in text.encode())
        spelled = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in name)
        items.append(f"{spelled}={encoded}")
        want[name.lower()] = expected(name, text)
    separators = [" " * draw(st.integers(1, 3)) for _ in items]
    arg = "".join(sep + item for sep, item in zip(separators, items, strict=True))
    return arg, want


@settings(max_examples=300, deadline=None)
@given(commands(XCLIENT_VALUES))
def test_xclient_reads_every_valid_command(command: tuple[str, dict[str, object]]) -> None:
    arg, want = command
    assert parse_xclient(arg) == want
    assert XClientInfo(**parse_xclient(arg))  # every field is one of the record's


@settings(max_examples=300, deadline=None)
@given(commands(XFORWARD_VALUES))
def test_xforward_reads_every_valid_command(command: tuple[str, dict[str, object]]) -> None:
    arg, want = command
    assert parse_xforward(arg) == want
    assert XForwardInfo(**parse_xforward(arg))


@given(st.text(max_size=300))
def test_anything_else_is_a_501_never_a_crash(text: str) -> None:
    for parse in (parse_xclient, parse_xforward):
        reply = None
        try:
            parse(text)
        except CommandSyntaxError as exc:
            reply = exc.reply
        assert reply is None or (reply.code, reply.enhanced) == (501, "5.5.4")


@given(st.integers(1, 300), st.sampled_from(["HELO", "IDENT"]))
def test_raw_values_up_to_255(length: int, name: str) -> None:
    arg = f"{name}={'h' * length}"
    if length <= MAX_VALUE:
        assert parse_xforward(arg) == {name.lower(): "h" * length}
    else:
        assert refusal(parse_xforward, arg).endswith(f"XFORWARD {name} value too long")


@given(st.integers(1, 120))
def test_the_limit_is_on_the_encoded_value(octets: int) -> None:
    """85 hexchars (255 characters) decode to 85 octets; 86 are too long, whatever they
    decode to."""
    arg = "HELO=" + "+41" * octets
    if octets * 3 <= MAX_VALUE:
        assert parse_xclient(arg) == {"helo": "A" * octets}
    else:
        assert refusal(parse_xclient, arg).endswith("value too long")


def test_the_readme_attribute_lists() -> None:
    assert XCLIENT_ATTRIBUTES == (
        "NAME",
        "ADDR",
        "PORT",
        "PROTO",
        "HELO",
        "LOGIN",
        "DESTADDR",
        "DESTPORT",
    )
    assert XFORWARD_ATTRIBUTES == ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
    assert [f.upper() for f in attribute_fields(XClientInfo)] == list(XCLIENT_ATTRIBUTES)
    assert [f.upper() for f in attribute_fields(XForwardInfo)] == list(XFORWARD_ATTRIBUTES)
