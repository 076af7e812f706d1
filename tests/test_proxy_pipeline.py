"""The PROXY stage inside the whole connection pipeline, over memory streams (no sockets).

Each test drives :func:`smtpd_trio.testing.open_test_session` with PROXY on, as if the
connection had been accepted from ``peer``: the client sends the header itself (or does not),
then speaks SMTP. What the handler saw is recorded and compared exactly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
from pathlib import Path

import pytest
import trio
import trio.testing

import smtpd_trio.server
from smtpd_trio import Config, Endpoint, Handler, Message, Reject, Reply, Session
from smtpd_trio.proxy import (
    CRC32CTLV,
    SSLTLV,
    AlpnTLV,
    AuthorityTLV,
    AWSVPCEndpointTLV,
    ProxyCommand,
    ProxyFamily,
    ProxyInfo,
    ProxyTransport,
    SSLClientFlags,
    SSLSubTLV,
    SSLSubType,
    UniqueIdTLV,
)
from smtpd_trio.proxy.crc32c import crc32c
from smtpd_trio.testing import ClientReply, TestClient, open_test_session

#: The load balancer, as the server sees it (TEST-NET-1).
LB = Endpoint("192.0.2.10", 41000)
#: The network the load balancers live in.
LB_NET = "192.0.2.0/24"
#: The real client named in the headers (TEST-NET-2) and the address it connected to.
CLIENT_IP = "198.51.100.7"
FRONTEND_IP = "203.0.113.25"

BANNER = ClientReply(220, ("mx.test ESMTP smtpd-trio ready",))
EHLO_REPLY = ClientReply(
    250,
    (
        "mx.test",
        "SIZE 10240000",
        "8BITMIME",
        "SMTPUTF8",
        "PIPELINING",
        "CHUNKING",
        "BINARYMIME",
        "ENHANCEDSTATUSCODES",
        "LIMITS RCPTMAX=1000 MAILMAX=10000",
        "HELP",
    ),
)
SESSION_ID = "pp-test-1"

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_config(**overrides: object) -> Config:
    fields: dict[str, object] = {
        "hostname": "mx.test",
        "proxy_protocol": True,
        "trusted_proxies": [LB_NET],
    }
    fields.update(overrides)
    return Config(**fields)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fixed_session_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection gets the id ``SESSION_ID``, so log lines can be compared exactly."""
    monkeypatch.setattr(smtpd_trio.server, "new_session_id", lambda: SESSION_ID)


class Recorder(Handler):
    """Records every callback the pipeline made, and every message's Received header."""

    def __init__(self, *, refuse_proxy: bool = False) -> None:
        self.refuse_proxy = refuse_proxy
        self.proxy_calls: list[tuple[Endpoint, ProxyInfo]] = []
        self.connects: list[Session] = []
        self.helos: list[Session] = []
        self.received: list[str] = []

    async def on_proxy(self, session: Session, info: ProxyInfo) -> Reply | None:
        self.proxy_calls.append((session.client, info))
        if self.refuse_proxy:
            raise Reject(554, "5.7.1", "not from there")
        return None

    async def on_connect(self, session: Session) -> Reply | None:
        self.connects.append(session)
        return None

    async def on_helo(self, session: Session, name: str, extended: bool) -> Reply | None:
        self.helos.append(session)
        return None

    async def on_data(self, session: Session, message: Message) -> Reply | None:
        self.received.append(message.received_header)
        return None


class OnlyHelo(Handler):
    """Records only on_helo, so on_proxy and on_connect are not defined at all."""

    def __init__(self) -> None:
        self.helos: list[Session] = []

    async def on_helo(self, session: Session, name: str, extended: bool) -> Reply | None:
        self.helos.append(session)
        return None


def v1(source: str, destination: str, sport: int, dport: int, *, family: str = "TCP4") -> bytes:
    return f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode("ascii")


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def v2_inet(
    source: str,
    destination: str,
    sport: int,
    dport: int,
    tlvs: bytes = b"",
    *,
    with_crc: bool = False,
    corrupt_crc: bool = False,
) -> bytes:
    """A v2 PROXY/INET/STREAM header built by hand; optionally with a CRC32C TLV last."""
    addresses = struct.pack(
        "!4s4sHH",
        ipaddress.IPv4Address(source).packed,
        ipaddress.IPv4Address(destination).packed,
        sport,
        dport,
    )
    crc_tlv = tlv(0x03, b"\x00\x00\x00\x00") if with_crc else b""
    body = addresses + tlvs + crc_tlv
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
    if with_crc:
        checksum = crc32c(header)
        if corrupt_crc:
            checksum ^= 0x00000001
        header = header[:-4] + struct.pack("!I", checksum)
    return header


def v2_local() -> bytes:
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


async def assert_closed_without_banner(client: TestClient) -> None:
    """The server closed the stream without sending a single byte."""
    with trio.fail_after(10):
        assert await client.at_eof() is True
    assert bytes(client.transcript) == b""


async def refused_silently(
    data: bytes, caplog: pytest.LogCaptureFixture, *, peer: Endpoint = LB
) -> list[str]:
    """Send ``data`` from ``peer`` to a PROXY listener; assert the connection was closed
    without a byte and without any handler call; return the refusal log lines."""
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=peer, read_greeting=False
    ) as client:
        await client.send(data)
        await assert_closed_without_banner(client)
    assert handler.connects == []
    assert handler.proxy_calls == []
    return refusals(caplog)


async def deliver(client: TestClient) -> ClientReply:
    return await client.sendmail("a@example.com", ["b@example.org"], b"Subject: hi\r\n\r\nhi\r\n")


async def trickle(client: TestClient, data: bytes, *, interval: float) -> int:
    """Send ``data`` one byte per ``interval``; return how many were sent before the server
    closed the stream."""
    for sent, byte in enumerate(data):
        try:
            await client.send(bytes([byte]))
        except trio.BrokenResourceError:
            return sent
        await trio.sleep(interval)
    return len(data)


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "smtpd_trio.server" and "refused" in r.getMessage()
    ]


# ---- headers that are believed ------------------------------------------------------------


async def test_v1_header_and_ehlo_in_one_write() -> None:
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(v1(CLIENT_IP, FRONTEND_IP, 51234, 25) + b"EHLO client.test\r\n")
        assert await client.read_reply() == BANNER
        assert await client.read_reply() == EHLO_REPLY
        assert await deliver(client) == ClientReply(250, ("2.0.0 Message accepted",))
    [session] = handler.connects
    assert session.client == Endpoint(CLIENT_IP, 51234)
    assert session.peer == LB
    assert session.proxy == ProxyInfo(
        version=1,
        command=ProxyCommand.PROXY,
        family=ProxyFamily.INET,
        transport=ProxyTransport.STREAM,
        source_address=ipaddress.IPv4Address(CLIENT_IP),
        destination_address=ipaddress.IPv4Address(FRONTEND_IP),
        source_port=51234,
        destination_port=25,
    )
    assert handler.helos == [session]
    [received] = handler.received
    assert received.startswith(f"Received: from client.test ([{CLIENT_IP}])\r\n")


async def test_v1_header_byte_by_byte() -> None:
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        for byte in v1(CLIENT_IP, FRONTEND_IP, 51234, 25) + b"EHLO client.test\r\n":
            await client.send(bytes([byte]))
            await trio.testing.wait_all_tasks_blocked()
        assert await client.read_reply() == BANNER
        assert await client.read_reply() == EHLO_REPLY
    [session] = handler.connects
    assert session.client == Endpoint(CLIENT_IP, 51234)
    assert session.peer == LB
    assert session.proxy is not None
    assert session.proxy.version == 1


async def test_v2_with_tlvs_and_ehlo_in_one_write() -> None:
    handler = Recorder()
    ssl_value = (
        bytes([0x01])  # client: SSL
        + struct.pack("!I", 0)  # verify: ok
        + tlv(0x21, b"TLSv1.3")
        + tlv(0x23, b"TLS_AES_256_GCM_SHA384")
    )
    tlvs = (
        tlv(0x01, b"smtp")
        + tlv(0x02, b"mx.example.net")
        + tlv(0x05, b"lb-7f3a")
        + tlv(0x20, ssl_value)
        + tlv(0xEA, b"\x01vpce-0123456789abcdef0")
    )
    header = v2_inet(CLIENT_IP, FRONTEND_IP, 40001, 465, tlvs, with_crc=True)
    checksum = struct.unpack("!I", header[-4:])[0]
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(header + b"EHLO client.test\r\n")
        assert await client.read_reply() == BANNER
        assert await client.read_reply() == EHLO_REPLY
    [session] = handler.connects
    assert session.client == Endpoint(CLIENT_IP, 40001)
    assert session.peer == LB
    expected = ProxyInfo(
        version=2,
        command=ProxyCommand.PROXY,
        family=ProxyFamily.INET,
        transport=ProxyTransport.STREAM,
        source_address=ipaddress.IPv4Address(CLIENT_IP),
        destination_address=ipaddress.IPv4Address(FRONTEND_IP),
        source_port=40001,
        destination_port=465,
        tlvs=(
            AlpnTLV(b"smtp"),
            AuthorityTLV("mx.example.net"),
            UniqueIdTLV(b"lb-7f3a"),
            SSLTLV(
                SSLClientFlags.SSL,
                0,
                (
                    SSLSubTLV(SSLSubType.VERSION, "TLSv1.3"),
                    SSLSubTLV(SSLSubType.CIPHER, "TLS_AES_256_GCM_SHA384"),
                ),
            ),
            AWSVPCEndpointTLV("vpce-0123456789abcdef0"),
            CRC32CTLV(checksum),
        ),
    )
    assert session.proxy == expected
    assert session.proxy.crc32c == checksum
    assert session.proxy.authority == "mx.example.net"
    assert session.proxy.aws_vpc_endpoint_id == "vpce-0123456789abcdef0"


async def test_ipv4_mapped_peer_inside_ipv4_allowlist() -> None:
    handler = Recorder()
    config = proxy_config(trusted_proxies=["10.0.0.0/8"])
    peer = Endpoint("::ffff:10.0.0.1", 41000)
    async with open_test_session(handler, config=config, peer=peer, read_greeting=False) as client:
        await client.send(v1(CLIENT_IP, FRONTEND_IP, 51234, 25))
        assert await client.read_reply() == BANNER
        assert await client.command("EHLO client.test") == EHLO_REPLY
    [session] = handler.connects
    assert session.client == Endpoint(CLIENT_IP, 51234)
    assert session.peer == peer


async def test_v1_unknown_uses_the_real_peer() -> None:
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(b"PROXY UNKNOWN\r\n")
        assert await client.read_reply() == BANNER
        assert await client.command("EHLO client.test") == EHLO_REPLY
    [session] = handler.connects
    assert session.client == LB
    assert session.peer == LB
    assert session.proxy == ProxyInfo(
        1, ProxyCommand.PROXY, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC
    )


async def test_v2_local_uses_the_real_peer() -> None:
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(v2_local())
        assert await client.read_reply() == BANNER
        assert await client.command("EHLO client.test") == EHLO_REPLY
    [session] = handler.connects
    assert session.client == LB
    assert session.peer == LB
    assert session.proxy == ProxyInfo(
        2, ProxyCommand.LOCAL, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC
    )


async def test_ipv6_client_in_received_header() -> None:
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(v1("2001:db8::7", "2001:db8::25", 50000, 25, family="TCP6"))
        assert await client.read_reply() == BANNER
        assert await client.command("EHLO client.test") == EHLO_REPLY
        assert await deliver(client) == ClientReply(250, ("2.0.0 Message accepted",))
    [session] = handler.connects
    assert session.client == Endpoint("2001:db8::7", 50000)
    [received] = handler.received
    assert received.startswith("Received: from client.test ([IPv6:2001:db8::7])\r\n")


async def test_ignored_hosts_skip_on_connect_but_are_served() -> None:
    handler = Recorder()
    config = proxy_config(ignored_hosts=["203.0.113.0/24"])
    async with open_test_session(handler, config=config, peer=LB, read_greeting=False) as client:
        await client.send(v1("203.0.113.50", FRONTEND_IP, 6000, 25))
        assert await client.read_reply() == BANNER
        assert await client.command("EHLO checker.test") == EHLO_REPLY
        assert await client.command("QUIT") == ClientReply(221, ("2.0.0 Bye",))
    assert handler.connects == []
    [session] = handler.helos
    assert session.client == Endpoint("203.0.113.50", 6000)
    assert [client for client, _info in handler.proxy_calls] == [session.client]


async def test_on_proxy_sees_the_header_and_the_real_client() -> None:
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(v1(CLIENT_IP, FRONTEND_IP, 51234, 25))
        assert await client.read_reply() == BANNER
    [session] = handler.connects
    assert handler.proxy_calls == [(Endpoint(CLIENT_IP, 51234), session.proxy)]
    assert session.proxy is not None
    assert session.proxy.source_address == ipaddress.IPv4Address(CLIENT_IP)


# ---- connections that are closed before any banner ------------------------------------------


async def test_silence_past_proxy_timeout_closes_without_banner(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    start = trio.current_time()
    async with open_test_session(
        handler, config=proxy_config(proxy_timeout=3.0), peer=LB, read_greeting=False
    ) as client:
        await assert_closed_without_banner(client)
        assert trio.current_time() - start == pytest.approx(3.0)
    assert refusals(caplog) == [f"[{SESSION_ID}] refused {LB}: no complete PROXY header within 3 s"]
    assert handler.connects == []
    assert handler.proxy_calls == []


async def test_partial_header_past_proxy_timeout_closes_without_banner(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(b"PROXY TCP4 198.51.100.7 ")
        await assert_closed_without_banner(client)
    assert refusals(caplog) == [f"[{SESSION_ID}] refused {LB}: no complete PROXY header within 5 s"]
    assert handler.connects == []


async def test_malformed_v1_header_closes_without_banner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = b"PROXY TCP4 256.0.0.1 203.0.113.25 51234 25\r\nEHLO x\r\n"
    assert await refused_silently(data, caplog) == [
        f"[{SESSION_ID}] refused {LB}: bad PROXY header "
        "(bad-address: bad IPv4 address b'256.0.0.1')"
    ]


async def test_bad_crc32c_closes_without_banner(caplog: pytest.LogCaptureFixture) -> None:
    header = v2_inet(CLIENT_IP, FRONTEND_IP, 40001, 25, with_crc=True, corrupt_crc=True)
    [message] = await refused_silently(header + b"EHLO client.test\r\n", caplog)
    assert message.startswith(f"[{SESSION_ID}] refused {LB}: bad PROXY header (checksum-mismatch: ")


async def test_plain_smtp_from_a_trusted_peer_is_not_guessed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await refused_silently(b"EHLO client.test\r\n", caplog) == [
        f"[{SESSION_ID}] refused {LB}: bad PROXY header "
        "(not-proxy: not a PROXY header: b'EHLO client.test\\r\\n')"
    ]


async def test_peer_outside_the_allowlist_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    stranger = Endpoint("198.51.100.99", 40000)
    data = v1("192.0.2.200", FRONTEND_IP, 1234, 25) + b"EHLO client.test\r\n"
    assert await refused_silently(data, caplog, peer=stranger) == [
        f"[{SESSION_ID}] refused {stranger}: peer {stranger} is not a trusted proxy"
    ]


async def test_untrusted_peer_served_directly_never_believes_a_header() -> None:
    handler = Recorder()
    stranger = Endpoint("198.51.100.99", 40000)
    config = proxy_config(untrusted_proxy_peers="direct")
    async with open_test_session(
        handler, config=config, peer=stranger, read_greeting=False
    ) as client:
        assert await client.read_reply() == BANNER
        reply = await client.command(f"PROXY TCP4 192.0.2.200 {FRONTEND_IP} 1234 25")
        assert reply == ClientReply(500, ("5.5.2 Syntax error, command unrecognized",))
        assert await client.command("EHLO client.test") == EHLO_REPLY
        assert await deliver(client) == ClientReply(250, ("2.0.0 Message accepted",))
    [session] = handler.connects
    assert session.client == stranger
    assert session.peer == stranger
    assert session.proxy is None
    assert handler.proxy_calls == []
    [received] = handler.received
    assert received.startswith("Received: from client.test ([198.51.100.99])\r\n")


async def test_on_proxy_reject_closes_without_banner(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder(refuse_proxy=True)
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(v1(CLIENT_IP, FRONTEND_IP, 51234, 25) + b"EHLO client.test\r\n")
        await assert_closed_without_banner(client)
    [(seen_client, info)] = handler.proxy_calls
    assert seen_client == Endpoint(CLIENT_IP, 51234)
    assert info.source_address == ipaddress.IPv4Address(CLIENT_IP)
    assert handler.connects == []
    assert refusals(caplog) == [f"[{SESSION_ID}] refused by on_proxy: 554 5.7.1 not from there"]


async def test_handler_without_on_proxy_is_served() -> None:
    handler = OnlyHelo()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(v1(CLIENT_IP, FRONTEND_IP, 51234, 25) + b"EHLO client.test\r\n")
        assert await client.read_reply() == BANNER
        assert await client.read_reply() == EHLO_REPLY
    [session] = handler.helos
    assert session.client == Endpoint(CLIENT_IP, 51234)


async def test_pipelined_bytes_past_the_first_read_are_kept() -> None:
    handler = Recorder()
    commands = b"NOOP\r\n" * 1500  # 9000 bytes: more than one read past the header
    config = proxy_config(max_junk_commands=None)  # 1500 NOOPs are the point here
    async with open_test_session(handler, config=config, peer=LB, read_greeting=False) as client:
        await client.send(v1(CLIENT_IP, FRONTEND_IP, 51234, 25) + commands)
        assert await client.read_reply() == BANNER
        replies = [await client.read_reply() for _ in range(1500)]
        assert replies == [ClientReply(250, ("2.0.0 OK",))] * 1500
    [session] = handler.connects
    assert session.client == Endpoint(CLIENT_IP, 51234)


async def test_health_checks_from_ignored_proxy_network_skip_on_connect() -> None:
    handler = Recorder()
    config = proxy_config(ignored_hosts=[LB_NET])
    async with open_test_session(handler, config=config, peer=LB, read_greeting=False) as client:
        await client.send(v2_local())
        assert await client.read_reply() == BANNER
        assert await client.command("QUIT") == ClientReply(221, ("2.0.0 Bye",))
    assert handler.connects == []
    assert [info.command for _client, info in handler.proxy_calls] == [ProxyCommand.LOCAL]


async def test_a_second_header_is_smtp_and_never_believed() -> None:
    handler = Recorder()
    forged = v1("192.0.2.66", FRONTEND_IP, 1111, 25)
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        await client.send(v1(CLIENT_IP, FRONTEND_IP, 51234, 25) + forged + b"EHLO client.test\r\n")
        assert await client.read_reply() == BANNER
        assert await client.read_reply() == ClientReply(
            500, ("5.5.2 Syntax error, command unrecognized",)
        )
        assert await client.read_reply() == EHLO_REPLY
    [session] = handler.connects
    assert session.client == Endpoint(CLIENT_IP, 51234)
    assert session.proxy is not None
    assert session.proxy.source_address == ipaddress.IPv4Address(CLIENT_IP)


async def test_proxy_timeout_bounds_the_whole_header_not_each_read(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smtpd_trio")
    handler = Recorder()
    header = v1(CLIENT_IP, FRONTEND_IP, 51234, 25)
    start = trio.current_time()
    async with open_test_session(
        handler, config=proxy_config(), peer=LB, read_greeting=False
    ) as client:
        # A byte every 1.5 s: every read is prompt, but the header would take over a minute.
        sent = await trickle(client, header, interval=1.5)
        assert sent == 4  # at t = 0, 1.5, 3 and 4.5 s; refused at 5 s; the send at 6 s fails
        assert trio.current_time() - start == 6.0
        await assert_closed_without_banner(client)
    assert refusals(caplog) == [f"[{SESSION_ID}] refused {LB}: no complete PROXY header within 5 s"]
    assert handler.connects == []


async def _unix_roundtrip(path: str, header: bytes) -> bytes:
    """Connect to a UNIX-socket listener, send ``header`` + EHLO + QUIT, return all replies."""
    stream = await trio.open_unix_socket(path)
    received = bytearray()
    async with stream:
        # A refused connection is closed with our bytes unread: the reset is part of the answer.
        with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(header + b"EHLO client.test\r\nQUIT\r\n")
            while data := await stream.receive_some(65536):
                received += data
    return bytes(received)


@pytest.mark.parametrize(("trusted", "believed"), [(["unix"], True), (["10.0.0.0/8"], False)])
async def test_a_unix_socket_listener_is_trusted_only_by_configuration(
    tmp_path: Path, trusted: list[str], believed: bool
) -> None:
    seen: list[Session] = []

    class Remember(Handler):
        async def on_helo(self, session: Session, name: str, extended: bool) -> Reply | None:
            seen.append(session)
            return None

    path = str(tmp_path / "smtp.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen()
    listener = trio.SocketListener(sock)
    config = Config(hostname="mx.test", proxy_protocol=True, trusted_proxies=trusted)
    server = smtpd_trio.SMTPServer(Remember(), config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        replies = await _unix_roundtrip(path, b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n")
        nursery.cancel_scope.cancel()
    if believed:
        assert replies.startswith(b"220 mx.test ")
        assert replies.endswith(b"221 2.0.0 Bye\r\n")
        (session,) = seen
        assert session.client == Endpoint("203.0.113.7", 40000)
        assert session.peer.host.startswith("unix:")
    else:
        assert replies == b""  # refused before any banner
        assert seen == []
