"""The RFC 5080 duplicate cache: a retransmission gets the first reply, one of a request still being
served is dropped, entries leave after the window, and the cache stays out of the collector's sight."""

from __future__ import annotations

import gc

from aaa.dedup import DuplicateCache, Seen, request_key

REQUEST = bytes([1, 7, 0, 20]) + bytes(range(16))


def test_a_retransmission_gets_the_first_reply_and_one_in_progress_is_dropped() -> None:
    cache = DuplicateCache(window_s=30.0)
    key = request_key(REQUEST, "192.0.2.1", 40000)
    assert cache.check(key, 0.0) == (Seen.NEW, b"")
    assert cache.check(key, 1.0) == (Seen.IN_PROGRESS, b"")
    cache.answered(key, b"reply")
    assert cache.check(key, 2.0) == (Seen.ANSWERED, b"reply")


def test_the_key_is_the_source_code_identifier_and_authenticator() -> None:
    key = request_key(REQUEST, "192.0.2.1", 40000)
    other_port = request_key(REQUEST, "192.0.2.1", 40001)
    other_host = request_key(REQUEST, "192.0.2.11", 4000)  # "192.0.2.1" + "1 4000" must not collide
    other_id = request_key(REQUEST[:1] + b"\x08" + REQUEST[2:], "192.0.2.1", 40000)
    other_auth = request_key(REQUEST[:-1] + b"\xff", "192.0.2.1", 40000)
    assert len({key, other_port, other_host, other_id, other_auth}) == 5
    assert request_key(REQUEST + b"attributes", "192.0.2.1", 40000) == key  # the length and body do not count


def test_entries_expire_after_the_window_and_a_forgotten_request_is_new_again() -> None:
    cache = DuplicateCache(window_s=30.0)
    first, second = request_key(REQUEST, "192.0.2.1", 1), request_key(REQUEST, "192.0.2.1", 2)
    cache.check(first, 0.0)
    cache.answered(first, b"reply")
    cache.check(second, 10.0)
    cache.forget(second)  # not served (the store was down): the NAS's retransmission is served
    assert cache.check(second, 11.0) == (Seen.NEW, b"")
    assert cache.check(first, 29.9)[0] is Seen.ANSWERED
    assert cache.check(first, 30.0) == (Seen.NEW, b"")  # the old entry left; this one is new
    assert len(cache) == 2
    # at 40.5 the expiry queued at 10.0 (deadline 40.0) is stale: second was served again at 11.0
    assert cache.check(second, 40.5)[0] is Seen.IN_PROGRESS
    assert cache.check(second, 41.0) == (Seen.NEW, b"")  # its own deadline, 11.0 + 30


def test_a_full_cache_serves_without_remembering() -> None:
    cache = DuplicateCache(window_s=30.0, max_entries=1)
    cache.check(request_key(REQUEST, "192.0.2.1", 1), 0.0)
    key = request_key(REQUEST, "192.0.2.1", 2)
    assert cache.check(key, 0.0) == (Seen.NEW, b"")
    assert cache.check(key, 0.1) == (Seen.NEW, b"") and len(cache) == 1


def test_the_cache_is_invisible_to_the_cyclic_collector() -> None:
    # 300,000 entries at 10k requests/s: tracked, each full collection walked them (a 15-25 ms stall)
    cache = DuplicateCache(window_s=30.0)
    for port in range(1000):
        key = request_key(REQUEST, "2001:db8::1", port)
        cache.check(key, 0.0)
        cache.answered(key, b"reply")
    assert not gc.is_tracked(cache._replies) and not gc.is_tracked(cache._deadlines)
