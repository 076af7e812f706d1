"""Tests for PROXY v2 TLV decoding (smtpd_trio.proxy.tlv)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpd_trio.proxy import (
    CRC32CTLV,
    SSLTLV,
    TLV,
    AlpnTLV,
    AuthorityTLV,
    AWSVPCEndpointTLV,
    AzurePrivateLinkTLV,
    GCPPSCConnectionTLV,
    NetnsTLV,
    NoopTLV,
    ProxyErrorReason,
    ProxyProtocolError,
    RawTLV,
    SSLClientFlags,
    SSLSubTLV,
    SSLSubType,
    TLVType,
    UniqueIdTLV,
    decode_tlvs,
)


def tlv(tlv_type: int, value: bytes) -> bytes:
    return bytes([tlv_type]) + len(value).to_bytes(2, "big") + value


def test_registered_numbers_match_the_specification() -> None:
    assert [int(t) for t in TLVType] == [0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x30, 0xE0, 0xEA, 0xEE]
    assert [int(t) for t in SSLSubType] == list(range(0x21, 0x29))
    assert [int(f) for f in SSLClientFlags] == [0x01, 0x02, 0x04]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"", ()),
        (tlv(0x01, b"smtp"), (AlpnTLV(b"smtp"),)),
        (tlv(0x02, "bücher.example".encode()), (AuthorityTLV("bücher.example"),)),
        (tlv(0x03, b"\xde\xad\xbe\xef"), (CRC32CTLV(0xDEADBEEF),)),
        (tlv(0x04, b""), (NoopTLV(b""),)),
        (tlv(0x05, b""), (UniqueIdTLV(b""),)),
        (tlv(0x05, b"u" * 128), (UniqueIdTLV(b"u" * 128),)),
        (tlv(0x30, b"blue"), (NetnsTLV("blue"),)),
        (tlv(0xEA, b"\x01vpce-0123"), (AWSVPCEndpointTLV("vpce-0123"),)),
        (tlv(0xEA, b"\x02zz"), (RawTLV(0xEA, b"\x02zz"),)),
        (tlv(0xEE, b"\x01\x01\x00\x00\x00"), (AzurePrivateLinkTLV(1),)),
        (tlv(0xEE, b"\x07abc"), (RawTLV(0xEE, b"\x07abc"),)),
        (tlv(0xE0, b"\x00" * 7 + b"\x2a"), (GCPPSCConnectionTLV(42),)),
        (tlv(0xE0, b"short"), (RawTLV(0xE0, b"short"),)),
        (tlv(0x99, b"?"), (RawTLV(0x99, b"?"),)),
        (tlv(0xFF, b""), (RawTLV(0xFF, b""),)),
        (
            tlv(0x04, b"") + tlv(0x01, b"h2") + tlv(0x01, b"x"),
            (NoopTLV(b""), AlpnTLV(b"h2"), AlpnTLV(b"x")),
        ),
    ],
)
def test_decode(wire: bytes, expected: tuple[TLV, ...]) -> None:
    assert decode_tlvs(wire) == expected


def test_ssl_with_every_subtype() -> None:
    der = b"\x30\x82\x01\x0a" + b"\x00" * 20
    subs = (
        tlv(0x21, b"TLSv1.3")
        + tlv(0x22, "Jürgen".encode())
        + tlv(0x23, b"TLS_AES_256_GCM_SHA384")
        + tlv(0x24, b"RSA-SHA256")
        + tlv(0x25, b"RSA2048")
        + tlv(0x26, b"x25519")
        + tlv(0x27, b"rsa_pss_rsae_sha256")
        + tlv(0x28, der)
        + tlv(0x2F, b"future")
    )
    (ssl,) = decode_tlvs(tlv(0x20, b"\x03\x00\x00\x00\x00" + subs))
    assert isinstance(ssl, SSLTLV)
    assert ssl.client == SSLClientFlags.SSL | SSLClientFlags.CERT_CONN
    assert ssl.verify == 0
    assert ssl.verified
    assert ssl.version == "TLSv1.3"
    assert ssl.cn == "Jürgen"
    assert ssl.cipher == "TLS_AES_256_GCM_SHA384"
    assert ssl.sig_alg == "RSA-SHA256"
    assert ssl.key_alg == "RSA2048"
    assert ssl.group == "x25519"
    assert ssl.sig_scheme == "rsa_pss_rsae_sha256"
    assert ssl.client_cert == der
    assert ssl.sub_tlvs[-1] == SSLSubTLV(0x2F, b"future")
    assert [s.type for s in ssl.sub_tlvs[:-1]] == list(SSLSubType)


@pytest.mark.parametrize(
    ("client", "verify", "verified"),
    [(0x01, 0, False), (0x03, 0, True), (0x05, 0, True), (0x03, 1, False), (0x00, 0, False)],
)
def test_ssl_verified(client: int, verify: int, verified: bool) -> None:
    (ssl,) = decode_tlvs(tlv(0x20, bytes([client]) + verify.to_bytes(4, "big")))
    assert isinstance(ssl, SSLTLV)
    assert ssl.verified is verified
    assert ssl.version is None
    assert ssl.client_cert is None


def test_ssl_keeps_unknown_flag_bits() -> None:
    (ssl,) = decode_tlvs(tlv(0x20, b"\xf1\x00\x00\x00\x07"))
    assert isinstance(ssl, SSLTLV)
    assert int(ssl.client) == 0xF1
    assert ssl.verify == 7


@pytest.mark.parametrize(
    "wire",
    [
        b"\x01",
        b"\x01\x00",
        tlv(0x01, b"ok") + b"\x04\x00",
        b"\x01\x00\x05abc",
        b"\x01\xff\xff",
        tlv(0x03, b"\x00" * 3),
        tlv(0x03, b""),
        tlv(0x03, b"\x00" * 4) + tlv(0x03, b"\x00" * 4),
        tlv(0x05, b"u" * 129),
        tlv(0x02, b"\xc3"),
        tlv(0x30, b"\x80"),
        tlv(0x20, b""),
        tlv(0x20, b"\x01\x00\x00\x00"),
        tlv(0x20, b"\x01\x00\x00\x00\x00\x21"),
        tlv(0x20, b"\x01\x00\x00\x00\x00\x21\x00\x02a"),
        tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x23, b"\xe9")),
        tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x22, b"\xff")),
        tlv(0xEA, b""),
        tlv(0xEA, b"\x01vpce-\xff"),
        tlv(0xEE, b""),
        tlv(0xEE, b"\x01\x00\x00\x00"),
        tlv(0xEE, b"\x01\x00\x00\x00\x00\x00"),
    ],
)
def test_malformed(wire: bytes) -> None:
    with pytest.raises(ProxyProtocolError) as excinfo:
        decode_tlvs(wire)
    assert excinfo.value.reason is ProxyErrorReason.BAD_TLV


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_decode_or_raise_bad_tlv(wire: bytes) -> None:
    reason = None
    try:
        tlvs = decode_tlvs(wire)
    except ProxyProtocolError as exc:
        reason = exc.reason
    else:
        assert all(isinstance(t.type, int) for t in tlvs)
    assert reason in (None, ProxyErrorReason.BAD_TLV)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0x06, 0x1F), st.binary(max_size=30)), max_size=8))
def test_unknown_types_round_trip_in_order(items: list[tuple[int, bytes]]) -> None:
    wire = b"".join(tlv(t, v) for t, v in items)
    assert decode_tlvs(wire) == tuple(RawTLV(t, v) for t, v in items)
