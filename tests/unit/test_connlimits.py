"""The gateway's connection counts: limits per client, in total and per user, and every
slot given back exactly once."""

from __future__ import annotations

from gateway.connlimits import ConnectionCounter, ConnectionLimits, client_key


def test_per_client_and_total_limits():
    counter = ConnectionCounter(ConnectionLimits(total=3, per_client=2, per_user=1))
    a1, a2 = counter.admit("192.0.2.1"), counter.admit("192.0.2.1")
    assert a1 is not None and a2 is not None
    assert counter.admit("192.0.2.1") is None  # the client's limit
    assert counter.admit("::ffff:192.0.2.1") is None  # the same client over IPv6
    b = counter.admit("192.0.2.2")
    assert b is not None
    assert counter.admit("192.0.2.3") is None  # the gateway's limit
    a1.release()
    a1.release()  # once only
    assert counter.open == 2 and counter.clients == {"192.0.2.1": 1, "192.0.2.2": 1}
    assert counter.admit("192.0.2.3") is not None


def test_per_user_limit_is_released_with_the_connection():
    counter = ConnectionCounter(ConnectionLimits(per_user=1))
    first, second = counter.admit("192.0.2.1"), counter.admit("198.51.100.1")
    assert first is not None and second is not None
    assert first.hold_user("u@example.test")
    assert not second.hold_user("u@example.test")  # from any address
    first.release()
    assert counter.users == {} and counter.clients == {"198.51.100.1": 1}
    assert second.hold_user("u@example.test")


def test_client_key():
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("2001:DB8::7") == "2001:db8::7"
    assert client_key("unknown") == "unknown"
