"""OAUTHBEARER (RFC 7628) and XOAUTH2: the client-response parsers, the mechanisms' exchanges
and what the authenticator sees. The whole exchange in the machine and in a session is in
test_sasl_oauth_exchange.py.
"""

from __future__ import annotations

import base64
import json

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpd_trio._smtp.oauth import (
    oauthbearer_response,
    parse_oauthbearer,
    parse_xoauth2,
    xoauth2_response,
)
from smtpd_trio.auth import (
    BearerCredentials,
    Challenge,
    LoginCredentials,
    OAuthBearer,
    SASLError,
    StaticAuthenticator,
    XOAuth2,
)

TOKEN = "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="

# ---- RFC 7628's and Gmail's own examples ---------------------------------------------------


def test_rfc7628_smtp_example_of_a_successful_exchange() -> None:
    # §4.1, the SMTP variant: the initial client response, base64 as on the wire.
    wire = (
        "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9NTg3AWF1dGg9QmVhcmVy"
        "IHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
    )
    credentials = parse_oauthbearer(base64.b64decode(wire))
    assert credentials == BearerCredentials("user@example.com", TOKEN, "server.example.com", 587)
    # Our client side (used by the test helpers) sends exactly the RFC's bytes.
    assert base64.b64encode(
        oauthbearer_response("user@example.com", TOKEN, host="server.example.com", port=587)
    ) == wire.encode("ascii")


def test_rfc7628_smtp_example_of_a_failure_has_no_valid_gs2_header() -> None:
    # §4.4's initial response starts "n,user=someuser@example.com,": the authzid of a GS2
    # header is "a=" (§3.1, RFC 5801 §4), so a strict server calls it malformed.
    wire = (
        "bix1c2VyPXNvbWV1c2VyQGV4YW1wbGUuY29tLAFhdXRoPUJlYXJlciB2RjlkZnQ0cW1UYzJOdmIzUmxja0JoZEhS"
        "aGRtbHpkR0V1WTI5dENnPT0BAQ=="
    )
    with pytest.raises(SASLError, match="a=saslname"):
        parse_oauthbearer(base64.b64decode(wire))


def test_gmail_xoauth2_example() -> None:
    # The initial client response of Gmail's XOAUTH2 documentation, base64 as on the wire.
    wire = (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhk"
        "SFJoZG1semRHRXVZMjl0Q2cBAQ=="
    )
    token = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    assert parse_xoauth2(base64.b64decode(wire)) == BearerCredentials("someuser@example.com", token)
    assert base64.b64encode(xoauth2_response("someuser@example.com", token)) == wire.encode()


# ---- OAUTHBEARER: what is accepted, what is malformed ----------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (b"n,,\x01auth=Bearer abc\x01\x01", BearerCredentials(None, "abc")),
        # "y": the client could bind to the channel but thinks we cannot (RFC 5801 §4).
        (b"y,a=bob,\x01auth=Bearer abc\x01\x01", BearerCredentials("bob", "abc")),
        # The scheme is case-insensitive (RFC 7628 §4), and 1*SP separates it (RFC 6750 §2.1).
        (
            b"n,,\x01auth=bEaReR   a-b.c_d~e+f/g==\x01\x01",
            BearerCredentials(None, "a-b.c_d~e+f/g=="),
        ),
        # Unknown keys are ignored (§3.1), reserved ones (§3.1.1) too; any order.
        (
            b"n,a=u,\x01qs=\x01auth=Bearer t\x01port=25\x01xyz=a b\tc\x01host=mx.test\x01\x01",
            BearerCredentials("u", "t", "mx.test", 25),
        ),
        # saslname escapes: =2C is a comma, =3D an equals sign; UTF-8 is fine.
        (
            "n,a=a=2Cb=3Dc=3D2C\u00e9,\x01auth=Bearer t\x01\x01".encode(),
            BearerCredentials("a,b=c=2C\u00e9", "t"),
        ),
        (b"n,,\x01port=65535\x01auth=Bearer t\x01\x01", BearerCredentials(None, "t", port=65535)),
    ],
)
def test_oauthbearer_accepts(response: bytes, expected: BearerCredentials) -> None:
    assert parse_oauthbearer(response) == expected


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (b"", "GS2 header"),
        (b"\x01", "lone"),  # the dummy response is no way to start
        (b"auth=Bearer t\x01\x01", "GS2 header"),  # no GS2 header at all
        (b"p=tls-unique,,\x01auth=Bearer t\x01\x01", "channel binding"),
        (b"p=tls-exporter,a=u,\x01auth=Bearer t\x01\x01", "channel binding"),
        (b"F,n,,\x01auth=Bearer t\x01\x01", "flag"),  # GS2's non-standard flag
        (b"x,,\x01auth=Bearer t\x01\x01", "flag"),
        (b"N,,\x01auth=Bearer t\x01\x01", "flag"),
        (b"n,a=,\x01auth=Bearer t\x01\x01", "a=saslname"),
        (b"n,a=b=2c,\x01auth=Bearer t\x01\x01", "a=saslname"),  # escapes are upper case
        (b"n,a=b=c,\x01auth=Bearer t\x01\x01", "a=saslname"),
        (b"n,b=u,\x01auth=Bearer t\x01\x01", "a=saslname"),
        (b"n,a=\xff,\x01auth=Bearer t\x01\x01", "UTF-8"),
        (b"n,a=\x02u,\x01auth=Bearer t\x01\x01", "control"),
        (b"n,,auth=Bearer t\x01\x01", "between"),  # no kvsep after the header
        (b"n,,\x01auth=Bearer t\x01", "between"),  # no final kvsep
        (b"n,,\x01auth=Bearer t", "between"),
        (b"n,,\x01\x01", "between"),  # no pairs: no auth
        (b"n,,\x01host=mx.test\x01\x01", "missing"),
        (b"n,,\x01\x01auth=Bearer t\x01\x01", "key=value"),  # an empty pair
        (b"n,,\x01auth\x01\x01", "key=value"),
        (b"n,,\x01=x\x01auth=Bearer t\x01\x01", "key=value"),
        (b"n,,\x01k3y=x\x01auth=Bearer t\x01\x01", "key=value"),  # keys are letters
        (b"n,,\x01auth=Bearer t\x00\x01\x01", "key=value"),  # values are printable
        ("n,,\x01auth=Bearer t\x01note=\u00e9\x01\x01".encode(), "key=value"),
        (b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", "twice"),
        (b"n,,\x01auth=\x01\x01", "Bearer"),  # RFC 7628 §4.3's scope query: not served
        (b"n,,\x01auth=Bearer\x01\x01", "Bearer"),
        (b"n,,\x01auth=Bearer \x01\x01", "Bearer"),
        (b"n,,\x01auth=Bearer t u\x01\x01", "Bearer"),
        (b"n,,\x01auth=Bearer t=u\x01\x01", "Bearer"),  # "=" only as padding
        (b"n,,\x01auth=Bearertoken\x01\x01", "Bearer"),
        (b"n,,\x01auth=MAC t\x01\x01", "Bearer"),
        (b'n,,\x01auth=OAuth realm="Example"\x01\x01', "Bearer"),  # OAUTH10A's, not ours
        (b"n,,\x01host=\x01auth=Bearer t\x01\x01", "host"),
        (b"n,,\x01host=a b\x01auth=Bearer t\x01\x01", "host"),
        (b"n,,\x01port=0\x01auth=Bearer t\x01\x01", "port"),
        (b"n,,\x01port=025\x01auth=Bearer t\x01\x01", "port"),
        (b"n,,\x01port=65536\x01auth=Bearer t\x01\x01", "port"),
        (b"n,,\x01port=-1\x01auth=Bearer t\x01\x01", "port"),
        (b"n,,\x01port=\x01auth=Bearer t\x01\x01", "port"),
    ],
)
def test_oauthbearer_refuses(response: bytes, why: str) -> None:
    with pytest.raises(SASLError, match=why):
        parse_oauthbearer(response)


# ---- XOAUTH2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        b"",
        b"user=u\x01auth=Bearer t\x01",  # one ^A short
        b"user=u\x01auth=Bearer t\x01\x01\x01",
        b"auth=Bearer t\x01user=u\x01\x01",  # the order is fixed
        b"user=\x01auth=Bearer t\x01\x01",
        b"User=u\x01auth=Bearer t\x01\x01",
        b"user=u\x01auth=Basic dTpw\x01\x01",
        b"user=u\x01auth=Bearer\x01\x01",
        b"user=u\x01auth=Bearer t\x01host=x\x01\x01",
        b"user=\xc3\x01auth=Bearer t\x01\x01",
        b"user=u\r\nRCPT TO:<x>\x01auth=Bearer t\x01\x01",
        b"n,a=u,\x01auth=Bearer t\x01\x01",  # an OAUTHBEARER response
    ],
)
def test_xoauth2_refuses(response: bytes) -> None:
    with pytest.raises(SASLError):
        parse_xoauth2(response)


def test_xoauth2_accepts_utf8_users_and_any_scheme_case() -> None:
    response = "user=j\u00f6rg@example.org\x01auth=BEARER eyJ0.eyJz.c2ln\x01\x01".encode()
    assert parse_xoauth2(response) == BearerCredentials("j\u00f6rg@example.org", "eyJ0.eyJz.c2ln")


# ---- properties ------------------------------------------------------------------------------

# What a client may put in each part of a well-formed response.
_b64token = st.from_regex(r"\A[A-Za-z0-9._~+/-]{1,40}={0,2}\Z")
# Names lean on what GS2 escapes ("," and "=") and on what an escape looks like ("2C", "3D").
_name = st.lists(
    st.sampled_from([",", "=", "2C", "3D"])
    | st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
    min_size=1,
    max_size=12,
).map("".join)
_host = st.from_regex(r"\A[\x21-\x7e]{1,30}\Z")
_port = st.integers(1, 65535)
_other_key = st.from_regex(r"\A[A-Za-z]{1,8}\Z").filter(lambda k: k not in ("auth", "host", "port"))
_other_value = st.from_regex(r"\A[\x21-\x7e \t\r\n]{0,20}\Z")


def _saslname(name: str) -> bytes:
    return name.replace("=", "=3D").replace(",", "=2C").encode("utf-8")


@st.composite
def oauthbearer_inputs(draw: st.DrawFn) -> tuple[bytes, BearerCredentials]:
    """A well-formed OAUTHBEARER client response, in any of the forms the grammar allows, and
    the credentials it carries."""
    user = draw(st.none() | _name)
    token = draw(_b64token)
    host = draw(st.none() | _host)
    port = draw(st.none() | _port)
    flag = draw(st.sampled_from([b"n", b"y"]))
    header = flag + b"," + (b"" if user is None else b"a=" + _saslname(user)) + b","
    scheme = draw(st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"bEaReR"]))
    spaces = b" " * draw(st.integers(1, 3))
    pairs = [b"auth=" + scheme + spaces + token.encode()]
    if host is not None:
        pairs.append(b"host=" + host.encode())
    if port is not None:
        pairs.append(b"port=%d" % port)
    others = draw(st.dictionaries(_other_key, _other_value, max_size=3))
    pairs += [k.encode() + b"=" + v.encode() for k, v in others.items()]
    pairs = draw(st.permutations(pairs))
    response = header + b"\x01" + b"".join(p + b"\x01" for p in pairs) + b"\x01"
    return response, BearerCredentials(user, token, host, port)


@settings(max_examples=200)
@given(oauthbearer_inputs())
def test_oauthbearer_well_formed_inputs_give_their_credentials(
    case: tuple[bytes, BearerCredentials],
) -> None:
    response, expected = case
    assert parse_oauthbearer(response) == expected


@settings(max_examples=300)
@given(st.none() | _name, _b64token, st.none() | _host, st.none() | _port)
def test_oauthbearer_round_trip(
    user: str | None, token: str, host: str | None, port: int | None
) -> None:
    credentials = BearerCredentials(user, token, host, port)
    assert parse_oauthbearer(oauthbearer_response(user, token, host=host, port=port)) == credentials


@settings(max_examples=300)
@given(_name, _b64token)
def test_xoauth2_round_trip(user: str, token: str) -> None:
    assert parse_xoauth2(xoauth2_response(user, token)) == BearerCredentials(user, token)


def _result_or_sasl_error(parse: object, data: bytes) -> None:
    assert callable(parse)
    try:
        result = parse(data)
    except SASLError:
        return
    assert type(result) is BearerCredentials
    assert isinstance(result.token, str)
    assert result.token
    assert result.user is None or (isinstance(result.user, str) and result.user)


@settings(max_examples=1000)
@given(st.binary(max_size=200))
@example(b"n,,\x01auth=Bearer t\x01\x01")
@example(b"y,a=x,\x01port=99999999999999999999999\x01auth=Bearer t\x01\x01")
@example(b"n,a=\xed\xa0\x80,\x01auth=Bearer t\x01\x01")  # a UTF-8-encoded surrogate
def test_oauthbearer_any_bytes_give_credentials_or_sasl_error(data: bytes) -> None:
    _result_or_sasl_error(parse_oauthbearer, data)


@settings(max_examples=1000)
@given(st.binary(max_size=200))
@example(b"user=u\x01auth=Bearer t\x01\x01")
def test_xoauth2_any_bytes_give_credentials_or_sasl_error(data: bytes) -> None:
    _result_or_sasl_error(parse_xoauth2, data)


@settings(max_examples=200)
@given(oauthbearer_inputs(), st.data())
def test_oauthbearer_damaged_inputs_give_credentials_or_sasl_error(
    case: tuple[bytes, BearerCredentials], data: st.DataObject
) -> None:
    """Near misses: a well-formed response with one byte changed, dropped or added."""
    response = bytearray(case[0])
    at = data.draw(st.integers(0, len(response) - 1))
    how = data.draw(st.sampled_from(["change", "drop", "add"]))
    if how == "drop":
        del response[at]
    else:
        byte = data.draw(st.sampled_from([0, 1, ord(","), ord("="), ord(" "), 0x80, 0xFF]))
        if how == "change":
            response[at] = byte
        else:
            response.insert(at, byte)
    _result_or_sasl_error(parse_oauthbearer, bytes(response))


# ---- the mechanisms --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [
        (OAuthBearer(), oauthbearer_response("u", "t0k3n")),
        (XOAuth2(), xoauth2_response("u", "t0k3n")),
    ],
)
def test_exchange_asks_once_then_parses(mechanism: OAuthBearer | XOAuth2, response: bytes) -> None:
    exchange = mechanism.start()
    assert exchange.step(None) == Challenge(b"")  # "334 ": no initial response yet
    with pytest.raises(SASLError):
        exchange.step(None)
    assert exchange.step(response) == BearerCredentials("u", "t0k3n")
    assert mechanism.start().step(response) == BearerCredentials("u", "t0k3n")


def error_of(mechanism: OAuthBearer | XOAuth2) -> object:
    refused = getattr(mechanism.start(), "refused", None)
    assert refused is not None
    challenge = refused()
    assert isinstance(challenge, Challenge)
    return json.loads(challenge.data)


def test_the_error_challenge_is_rfc7628_json() -> None:
    # §3.2.2: status is required; scope and openid-configuration when there is one.
    assert error_of(OAuthBearer()) == {"status": "invalid_token", "schemes": "bearer"}
    assert error_of(XOAuth2()) == {"status": "invalid_token", "schemes": "bearer"}
    assert error_of(
        OAuthBearer(
            scope="https://mail.example.org/",
            openid_configuration="https://example.org/.well-known/openid-configuration",
        )
    ) == {
        "status": "invalid_token",
        "schemes": "bearer",
        "scope": "https://mail.example.org/",
        "openid-configuration": "https://example.org/.well-known/openid-configuration",
    }
    assert error_of(XOAuth2(scope='a "quoted" scope')) == {
        "status": "invalid_token",
        "schemes": "bearer",
        "scope": 'a "quoted" scope',
    }


def test_names() -> None:
    assert (OAuthBearer().name, XOAuth2().name) == ("OAUTHBEARER", "XOAUTH2")


def test_credentials_repr_hides_the_token() -> None:
    credentials = BearerCredentials("u@example.org", "s3cr3t-t0ken", "mx.test", 587)
    text = repr(credentials)
    assert "s3cr3t" not in text
    assert text == "BearerCredentials(user='u@example.org', host='mx.test', port=587)"
    assert "s3cr3t" not in str(credentials)
    assert "s3cr3t" not in repr(attrs.evolve(credentials, user=None))


async def test_static_authenticator_refuses_bearer_tokens() -> None:
    authenticator = StaticAuthenticator({"alice": "s3cret"})
    session = object()  # StaticAuthenticator does not look at it
    assert await authenticator(session, BearerCredentials("alice", "s3cret")) is None  # type: ignore[arg-type]
    assert await authenticator(session, LoginCredentials("alice", "s3cret")) == "alice"  # type: ignore[arg-type]
