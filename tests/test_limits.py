"""The per-client bookkeeping on its own (sans-IO): client keys, connection counts and rates,
and the refusal-log throttle, including the bounds on every table."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpd_trio.limits import TOO_FAST, TOO_MANY, ClientLimiter, RefusalLog, client_key


def test_client_keys() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    # A host may own a whole /64 and use a new address per connection: count the network.
    assert client_key("2001:db8:1:2::7") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::7") == "2001:db8:1:3::/64"
    assert client_key("2001:db8:1:2::7", ipv6_prefix=128) == "2001:db8:1:2::7/128"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    # Local and unknown peers are not limited.
    assert client_key("unix:/run/smtp.sock") is None
    assert client_key("unknown") is None


def test_connections_at_once() -> None:
    limiter = ClientLimiter(max_at_once=2, per_minute=None)
    assert limiter.admit("a", 0.0) is None
    assert limiter.admit("a", 0.0) is None
    assert limiter.admit("a", 0.0) is TOO_MANY
    assert limiter.admit("b", 0.0) is None  # others are not affected
    limiter.release("a")
    assert limiter.admit("a", 1.0) is None
    for key in ("a", "a", "b"):
        limiter.release(key)
    assert limiter.tracked == 0  # nothing is kept for clients with no connection open


def test_connection_rate_is_a_token_bucket() -> None:
    limiter = ClientLimiter(max_at_once=None, per_minute=3)
    for _ in range(3):
        assert limiter.admit("a", 0.0) is None
        limiter.release("a")
    assert limiter.admit("a", 1.0) is TOO_FAST
    assert limiter.admit("b", 1.0) is None  # others are not affected
    assert limiter.admit("a", 20.0) is None  # 3 per minute: one token back every 20 s
    assert limiter.admit("a", 21.0) is TOO_FAST
    assert limiter.admit("a", 80.0) is None


def test_a_flood_of_addresses_cannot_grow_the_rate_table() -> None:
    limiter = ClientLimiter(max_at_once=None, per_minute=10, max_tracked=100)
    for i in range(10_000):
        key = f"198.51.{i // 256 % 256}.{i % 256}"
        assert limiter.admit(key, i * 0.001) is None
        limiter.release(key)
        assert limiter.tracked <= 100
    # Buckets that refilled are dropped as time goes on.
    limiter.admit("192.0.2.1", 1000.0)
    limiter.release("192.0.2.1")
    assert limiter.tracked == 1


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["open", "close"]), st.integers(0, 30), st.floats(0, 5)),
        max_size=200,
    )
)
def test_limiter_model(steps: list[tuple[str, int, float]]) -> None:
    limiter = ClientLimiter(max_at_once=3, per_minute=5, max_tracked=10)
    now = 0.0
    open_: dict[str, int] = {}
    for action, n, dt in steps:
        now += dt
        key = f"10.0.0.{n}"
        if action == "open":
            if limiter.admit(key, now) is None:
                open_[key] = open_.get(key, 0) + 1
        elif open_.get(key):
            limiter.release(key)
            open_[key] -= 1
        assert all(limiter.open_connections(k) == v for k, v in open_.items())
        assert all(v <= 3 for v in open_.values())
        # The open counts hold one entry per client with a connection; the buckets at most 10.
        assert limiter.tracked <= sum(1 for v in open_.values() if v) + 10


def test_refusal_log_writes_one_line_per_client_and_kind_per_interval() -> None:
    log = RefusalLog(60.0)
    assert log.note("a", "timeout", 0.0) == 0  # the first is logged
    assert [log.note("a", "timeout", t) for t in (1.0, 2.0, 3.0)] == [None, None, None]
    assert log.note("a", "stalled", 4.0) == 0  # another kind has its own line
    assert log.note("b", "timeout", 5.0) == 0  # and another client
    # After the interval the next line says how many were held back.
    assert log.note("a", "timeout", 61.0) == 3
    assert log.note("a", "timeout", 62.0) is None


def test_refusal_log_summaries_and_bounds() -> None:
    log = RefusalLog(60.0, max_tracked=10)
    for i in range(1000):
        log.note(f"198.51.100.{i}", "rate", 0.0)
        log.note(f"198.51.100.{i}", "rate", 1.0)
    assert len(log) <= 11  # ten clients, and everyone else counted together
    summaries = log.summaries(100.0)
    # 2000 refusals: 11 lines were written (ten clients, and "other clients" once); every
    # other refusal is in a count.
    assert sum(count for _client, _kind, count in summaries) == 2000 - 11
    assert ("other clients", "rate", 990 * 2 - 1) in summaries
    assert len(log) == 0
    assert log.summaries(200.0) == []
