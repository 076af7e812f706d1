"""Tests for smtpd_trio.trust.TrustedNetworks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpd_trio.errors import ConfigError
from smtpd_trio.trust import TrustedNetworks


def test_cidr_membership() -> None:
    trusted = TrustedNetworks(["10.0.0.0/8", "2001:db8::/32"])
    assert "10.0.0.1" in trusted
    assert "10.255.255.255" in trusted
    assert "11.0.0.0" not in trusted
    assert "9.255.255.255" not in trusted
    assert "2001:db8:1234::1" in trusted
    assert "2001:db9::1" not in trusted
    assert ipaddress.ip_address("10.1.2.3") in trusted
    assert ipaddress.ip_address("2001:db8::") in trusted
    assert b"10.9.9.9" in trusted


def test_ipv4_mapped_ipv6_is_compared_as_ipv4() -> None:
    trusted = TrustedNetworks(["10.0.0.0/8"])
    assert "::ffff:10.0.0.1" in trusted
    assert ipaddress.IPv6Address("::ffff:10.0.0.1") in trusted
    assert "::ffff:11.0.0.1" not in trusted
    # ...and an IPv4-mapped entry is turned into IPv4.
    mapped = TrustedNetworks(["::ffff:192.168.0.0/112", "::ffff:192.0.2.1"])
    assert mapped.networks == (
        ipaddress.IPv4Network("192.168.0.0/16"),
        ipaddress.IPv4Network("192.0.2.1/32"),
    )
    assert "192.168.4.4" in mapped
    assert "::ffff:192.0.2.1" in mapped
    assert "192.0.2.2" not in mapped


def test_ipv4_mapped_peers_do_not_match_wide_ipv6_entries() -> None:
    # A mapped peer is an IPv4 client: "all of IPv6" does not cover it.
    trusted = TrustedNetworks(["::/0"])
    assert "2001:db8::1" in trusted
    assert "::ffff:10.0.0.1" not in trusted
    assert "10.0.0.1" not in trusted


def test_bare_addresses_are_single_hosts() -> None:
    trusted = TrustedNetworks(["192.0.2.7", "2001:db8::7"])
    assert trusted.networks == (
        ipaddress.IPv4Network("192.0.2.7/32"),
        ipaddress.IPv6Network("2001:db8::7/128"),
    )
    assert "192.0.2.7" in trusted
    assert "192.0.2.8" not in trusted
    assert "2001:db8::7" in trusted
    assert "2001:db8::8" not in trusted  # a bare IPv6 is /128, not /64


def test_ipaddress_objects_as_entries() -> None:
    trusted = TrustedNetworks([ipaddress.ip_network("172.16.0.0/12"), ipaddress.ip_address("::1")])
    assert "172.31.0.1" in trusted
    assert "::1" in trusted
    assert "::2" not in trusted


@pytest.mark.parametrize(
    "entry",
    [
        "",
        " ",
        "bogus",
        "10.0.0.0/33",
        "2001:db8::/129",
        "10.0.0.1/8",  # host bits set: refused, not silently widened
        "2001:db8::1/32",
        "010.0.0.0/8",
        "10.0.0.0/8/8",
        "fe80::1%eth0",
        "10.0.0.0 /8",
        "unix:/run/x",
        42,
        None,
        b"10.0.0.0/8",
    ],
)
def test_bad_entries_raise_config_error(entry: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        TrustedNetworks([entry])  # type: ignore[list-item]
    message = str(excinfo.value)
    assert "\n" not in message
    assert repr(entry)[:40] in message


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="host bits"):
        TrustedNetworks(["192.0.2.1/24"])


def test_one_string_is_not_a_list() -> None:
    with pytest.raises(ConfigError):
        TrustedNetworks("10.0.0.0/8")


def test_long_bad_entry_is_quoted_briefly() -> None:
    with pytest.raises(ConfigError) as excinfo:
        TrustedNetworks(["x" * 10_000])
    assert len(str(excinfo.value)) < 150


@pytest.mark.parametrize(
    "peer",
    ["", "not an ip", "10.0.0.1:25", "999.1.1.1", "10.0.0.1 ", None, 10, ("10.0.0.1", 25), b"\xff"],
)
def test_unparseable_peers_are_not_trusted(peer: object) -> None:
    trusted = TrustedNetworks(["0.0.0.0/0", "::/0"])
    assert peer not in trusted


def test_scoped_ipv6_peer_is_tested_without_its_zone() -> None:
    trusted = TrustedNetworks(["fe80::/10"])
    assert "fe80::1%eth0" in trusted
    assert "fe80::1" in trusted


def test_unix_trust() -> None:
    assert not TrustedNetworks(["10.0.0.0/8"]).trust_unix
    assert TrustedNetworks(["unix", "10.0.0.0/8"]).trust_unix
    assert TrustedNetworks(["UNIX"]).trust_unix
    assert TrustedNetworks([], trust_unix=True).trust_unix
    only_unix = TrustedNetworks(["unix"])
    assert len(only_unix) == 0
    assert only_unix
    assert "127.0.0.1" not in only_unix


def test_empty_trusts_nothing() -> None:
    empty = TrustedNetworks()
    assert not empty
    assert "127.0.0.1" not in empty
    assert "::1" not in empty


def test_value_semantics() -> None:
    a = TrustedNetworks(["10.0.0.0/8", "192.0.2.1", "10.0.0.0/8"])
    b = TrustedNetworks(["192.0.2.1/32", "10.0.0.0/8"])
    assert len(a) == 2
    assert a == b
    assert hash(a) == hash(b)
    assert a != TrustedNetworks(["10.0.0.0/8", "192.0.2.1", "unix"])
    assert list(a) == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.1/32")]
    assert repr(b) == "TrustedNetworks(['192.0.2.1/32', '10.0.0.0/8'])"


# A brute-force reference built on ipaddress alone.
v4_networks = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6_networks = st.builds(
    lambda a, p: ipaddress.IPv6Network((a, p), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
v4_addresses = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6_addresses = st.one_of(
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
    v4_addresses.map(lambda a: ipaddress.IPv6Address("::ffff:" + str(a))),
)


MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def reference(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], text: str) -> bool:
    """IPv4 (plain or IPv4-mapped) matches IPv4 entries and IPv4-mapped IPv6 entries only."""
    address = ipaddress.ip_address(text)
    v4: ipaddress.IPv4Address | None = None
    if isinstance(address, ipaddress.IPv4Address):
        v4 = address
    elif address.ipv4_mapped is not None:
        v4 = address.ipv4_mapped
    for network in networks:
        mapped_net = (
            isinstance(network, ipaddress.IPv6Network)
            and network.prefixlen >= 96
            and network.subnet_of(MAPPED)
        )
        if v4 is not None:
            if isinstance(network, ipaddress.IPv4Network) and v4 in network:
                return True
            if mapped_net and ipaddress.IPv6Address("::ffff:" + str(v4)) in network:
                return True
        elif isinstance(network, ipaddress.IPv6Network) and address in network:
            return True
    return False


@settings(max_examples=300)
@given(
    networks=st.lists(st.one_of(v4_networks, v6_networks), max_size=6),
    addresses=st.lists(st.one_of(v4_addresses, v6_addresses), min_size=1, max_size=10),
    data=st.data(),
)
def test_matches_brute_force_reference(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    data: st.DataObject,
) -> None:
    # Addresses near the generated networks' edges make the test meaningful.
    for network in networks:
        addresses.append(network.network_address)
        addresses.append(network.broadcast_address)
        if int(network.broadcast_address) < (2**network.max_prefixlen) - 1:
            addresses.append(network.broadcast_address + 1)
    trusted = TrustedNetworks([str(n) if data.draw(st.booleans()) else n for n in networks])
    for address in addresses:
        expected = reference(networks, str(address))
        assert (str(address) in trusted) is expected
        assert (address in trusted) is expected
