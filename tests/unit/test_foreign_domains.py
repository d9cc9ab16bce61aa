"""The gateway's memory of domains that are not ours (gateway/smtp/recipients.py)."""

from __future__ import annotations

from gateway.smtp.recipients import ForeignDomains


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_domain_is_known_for_its_seconds_then_forgotten():
    clock = Clock()
    foreign = ForeignDomains(seconds=10, clock=clock)
    assert not foreign.knows("example.net")
    foreign.learn("example.net")
    clock.now += 9.9
    assert foreign.knows("example.net")
    clock.now += 0.1
    assert not foreign.knows("example.net")


def test_zero_seconds_remembers_nothing():
    foreign = ForeignDomains(seconds=0)
    foreign.learn("example.net")
    assert not foreign.knows("example.net")


def test_a_flood_of_domains_empties_the_memory_rather_than_growing_it():
    foreign = ForeignDomains(seconds=60, limit=3)
    for n in range(3):
        foreign.learn(f"d{n}.example")
    foreign.learn("d3.example")
    assert [foreign.knows(f"d{n}.example") for n in range(4)] == [False, False, False, True]


def test_the_seconds_are_the_functions_refusal_cache():
    assert ForeignDomains.from_env({"RESOLVE_NEGATIVE_CACHE_SECONDS": "3"}).seconds == 3.0
    assert ForeignDomains.from_env({}).seconds == 10.0
