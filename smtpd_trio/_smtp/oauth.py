"""SASL mechanisms for OAuth 2.0 bearer tokens: OAUTHBEARER (RFC 7628) and XOAUTH2 (the
format Gmail and Microsoft 365 use). Sans-IO and synchronous, like PLAIN and LOGIN.

Both yield a :class:`BearerCredentials`; the authenticator checks the token. When it refuses
(``auth_result(None)``), the exchange answers with an error challenge, a JSON object as RFC 7628
§3.2.2 describes::

    S: 334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NoZW1lcyI6ImJlYXJlciJ9
    C: AQ==                                     (OAUTHBEARER: ^A; XOAUTH2: an empty line)
    S: 535 5.7.8 Authentication credentials invalid

The machine ends the exchange with the client's next line, whatever it says.

OAUTHBEARER's client response (RFC 7628 §3.1, with the GS2 header of RFC 5801 §4)::

    client-resp = gs2-header kvsep *kvpair kvsep
    gs2-header  = gs2-cb-flag "," [ "a=" saslname ] ","
    gs2-cb-flag = "n" / "y" / "p=" cb-name      ; "p=" asks for channel binding: refused
    kvpair      = key "=" value kvsep           ; kvsep = %x01, key = 1*ALPHA
    value       = *(VCHAR / SP / HTAB / CR / LF)

with ``auth=Bearer <b64token>`` (RFC 6750 §2.1) required, ``host=`` and ``port=`` optional and
other keys ignored (§3.1: "Unknown key/value pairs MUST be ignored"). XOAUTH2's is
``user=<user> ^A auth=Bearer <token> ^A ^A`` exactly. Anything else raises :class:`SASLError`
(``501 5.5.2``). Where RFC 5801 and RFC 7628 allow more than any client sends, this parser
refuses it: GS2's non-standard flag (``F,``: there is no GSS-API token here), a control
character in a name (saslname allows %x01-1F), a ``host`` that is not 1*VCHAR, a ``port``
outside 1-65535 and a key given twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import ClassVar, Final, final

import attrs

from .sasl import Challenge, SASLError, SASLExchange

__all__ = [
    "BearerCredentials",
    "OAuthBearer",
    "XOAuth2",
    "oauthbearer_response",
    "parse_oauthbearer",
    "parse_xoauth2",
    "xoauth2_response",
]

_KVSEP: Final = b"\x01"
_KEY: Final = re.compile(rb"[A-Za-z]+")
_VALUE: Final = re.compile(rb"[\x21-\x7e \t\r\n]*")
# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive
# (RFC 7628 §4: "Bearer" could as easily be "bearer", "BEARER", or "BeArEr").
_BEARER: Final = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*)")
_HOST: Final = re.compile(rb"[\x21-\x7e]+")
_PORT: Final = re.compile(rb"[1-9][0-9]{0,4}")
# RFC 5801 §4: saslname = 1*(UTF8-char-safe / "=2C" / "=3D"): no raw "," and no "=" but these.
_SASLNAME: Final = re.compile(rb"(?:[^,=]|=2C|=3D)+")
_ESCAPE: Final = re.compile(rb"=(2C|3D)")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


@final
@attrs.frozen(repr=False)
class BearerCredentials:
    """An OAuth 2.0 bearer token (from OAUTHBEARER or XOAUTH2), for the authenticator to
    validate. The token never appears in repr."""

    #: The user the client names: XOAUTH2's ``user=``, OAUTHBEARER's authorization identity
    #: (``a=`` in the GS2 header; RFC 7628 §3.1), or None if OAUTHBEARER named none. Accept it
    #: only if the token was issued to that user (or allows acting as them).
    user: str | None
    #: The access token (RFC 6750's b64token), without the ``Bearer`` scheme.
    token: str
    #: The host name the client says it connected to (OAUTHBEARER's ``host=``), if given.
    host: str | None = None
    #: The port the client says it connected to (OAUTHBEARER's ``port=``), if given.
    port: int | None = None

    def __repr__(self) -> str:
        return f"BearerCredentials(user={self.user!r}, host={self.host!r}, port={self.port!r})"


def _name(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(f"{what} is not UTF-8") from None
    if not text or _CONTROL.search(text):
        raise SASLError(f"{what} is empty or holds a control character")
    return text


def _bearer_token(value: bytes) -> str:
    m = _BEARER.fullmatch(value)
    if m is None:
        raise SASLError("auth must be 'Bearer <token>'")
    return m.group(1).decode("ascii")


def _gs2_authzid(header: bytes) -> str | None:
    """The authorization identity of a GS2 header without its final comma (``n,a=user``)."""
    flag, sep, authzid = header.partition(b",")
    if not sep:
        raise SASLError("GS2 header must be flag ',' [authzid] ','")
    if flag.startswith(b"p="):
        raise SASLError("channel binding is not supported")
    if flag not in (b"n", b"y"):
        raise SASLError("GS2 channel binding flag must be n or y")
    if not authzid:
        return None
    if not authzid.startswith(b"a=") or not _SASLNAME.fullmatch(authzid, 2):
        raise SASLError("GS2 authzid must be a=saslname")
    name = _ESCAPE.sub(lambda m: b"," if m.group(1) == b"2C" else b"=", authzid[2:])
    return _name(name, "authorization identity")


def parse_oauthbearer(response: bytes) -> BearerCredentials:
    """OAUTHBEARER's initial client response (RFC 7628 §3.1); raises SASLError if malformed."""
    if response == _KVSEP:
        raise SASLError("a lone ^A answers an error challenge, it does not start an exchange")
    # The GS2 header ends at its second comma: a saslname holds no raw comma.
    first = response.find(b",")
    second = response.find(b",", first + 1) if first >= 0 else -1
    if second < 0:
        raise SASLError("no GS2 header")
    user = _gs2_authzid(response[:second])
    rest = response[second + 1 :]
    if not rest.startswith(_KVSEP) or not rest.endswith(_KVSEP + _KVSEP) or len(rest) < 3:
        raise SASLError("key/value pairs must follow the GS2 header, between ^A and ^A^A")
    pairs: dict[bytes, bytes] = {}
    for pair in rest[1:-2].split(_KVSEP):
        key, eq, value = pair.partition(b"=")
        if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            raise SASLError("a key/value pair must be key=value (key letters, value printable)")
        if key in pairs:
            raise SASLError("a key appears twice")
        pairs[key] = value
    if b"auth" not in pairs:
        raise SASLError("auth=Bearer <token> is missing")
    token = _bearer_token(pairs[b"auth"])
    host = pairs.get(b"host")
    if host is not None and not _HOST.fullmatch(host):
        raise SASLError("host must be a host name")
    port = pairs.get(b"port")
    if port is not None and not (_PORT.fullmatch(port) and int(port) <= 65535):
        raise SASLError("port must be a number from 1 to 65535, without leading zeros")
    return BearerCredentials(
        user,
        token,
        host.decode("ascii") if host is not None else None,
        int(port) if port is not None else None,
    )


def parse_xoauth2(response: bytes) -> BearerCredentials:
    """XOAUTH2's client response, ``user=<user>^Aauth=Bearer <token>^A^A``; raises SASLError
    if malformed."""
    fields = response.split(_KVSEP)
    if len(fields) != 4 or fields[2] or fields[3]:
        raise SASLError("XOAUTH2 response must be user=...^Aauth=Bearer ...^A^A")
    user, auth = fields[0], fields[1]
    if not user.startswith(b"user=") or not auth.startswith(b"auth="):
        raise SASLError("XOAUTH2 response must be user=...^Aauth=Bearer ...^A^A")
    return BearerCredentials(_name(user[5:], "user"), _bearer_token(auth[5:]))


def oauthbearer_response(
    user: str | None, token: str, *, host: str | None = None, port: int | None = None
) -> bytes:
    """The initial client response OAUTHBEARER sends for these (a client's side, for tests)."""
    gs2 = b"n,,"
    if user is not None:
        escaped = user.replace("=", "=3D").replace(",", "=2C")
        gs2 = b"n,a=" + escaped.encode("utf-8") + b","
    pairs = []
    if host is not None:
        pairs.append(b"host=" + host.encode("ascii"))
    if port is not None:
        pairs.append(b"port=%d" % port)
    pairs.append(b"auth=Bearer " + token.encode("ascii"))
    return gs2 + _KVSEP + b"".join(p + _KVSEP for p in pairs) + _KVSEP


def xoauth2_response(user: str, token: str) -> bytes:
    """The client response XOAUTH2 sends for these (a client's side, for tests)."""
    return b"user=%s\x01auth=Bearer %s\x01\x01" % (user.encode("utf-8"), token.encode("ascii"))


def _error_challenge(scope: str | None, openid_configuration: str | None) -> Challenge:
    """RFC 7628 §3.2.2's error result: status, schemes (as in its §4.4 SMTP example and in
    Gmail's), and the scope and discovery document if configured."""
    error: dict[str, str] = {"status": "invalid_token", "schemes": "bearer"}
    if scope is not None:
        error["scope"] = scope
    if openid_configuration is not None:
        error["openid-configuration"] = openid_configuration
    return Challenge(json.dumps(error, separators=(",", ":")).encode("utf-8"))


@final
class _BearerExchange:
    __slots__ = ("_asked", "_error", "_parse")

    def __init__(self, parse: Callable[[bytes], BearerCredentials], error: Challenge) -> None:
        self._parse = parse
        self._error = error
        self._asked = False

    def step(self, response: bytes | None) -> Challenge | BearerCredentials:
        if response is None:
            if self._asked:
                raise SASLError("a bearer token is needed")
            self._asked = True
            return Challenge(b"")  # "334 ": send the client response
        return self._parse(response)

    def refused(self) -> Challenge:
        """The authenticator refused the token: the error challenge to send before 535."""
        return self._error


@final
@attrs.frozen
class OAuthBearer:
    """SASL OAUTHBEARER (RFC 7628): a GS2 header, then ``auth=Bearer <token>`` and optional
    ``host=`` and ``port=``. A refused token gets RFC 7628 §3.2.2's error challenge first.

    ``scope`` and ``openid_configuration`` (an https URL of an OpenID Provider Configuration
    document) go into that challenge, to tell the client what token to ask for.
    """

    name: ClassVar[str] = "OAUTHBEARER"

    scope: str | None = None
    openid_configuration: str | None = None

    def start(self) -> SASLExchange:
        return _BearerExchange(
            parse_oauthbearer, _error_challenge(self.scope, self.openid_configuration)
        )


@final
@attrs.frozen
class XOAuth2:
    """The XOAUTH2 mechanism of Gmail and Microsoft 365: ``user=<user>^Aauth=Bearer
    <token>^A^A``. A refused token gets the same JSON error challenge as OAUTHBEARER, which
    clients answer with an empty line, as Gmail documents."""

    name: ClassVar[str] = "XOAUTH2"

    scope: str | None = None

    def start(self) -> SASLExchange:
        return _BearerExchange(parse_xoauth2, _error_challenge(self.scope, None))
