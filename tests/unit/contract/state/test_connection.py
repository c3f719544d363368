"""contract/state/connection.py: the one client factory, and the quick PING."""

from __future__ import annotations

import pytest
from redis import Redis

from contract.state import RedisConnectionError, Runs, connect, ping
from contract.state.connection import REDIS_RETRIES
from previewvec.localredis import free_port


def test_connect_decodes_by_default_and_retries(redis_url: str, raw: Redis) -> None:
    raw.set("pv:test", "é")
    assert connect(redis_url).get("pv:test") == "é"
    assert connect(redis_url, decode=False).get("pv:test") == "é".encode()
    retrying = connect(redis_url).get_connection_kwargs()["retry"]
    assert retrying.get_retries() == REDIS_RETRIES


def test_connect_without_retry_fails_at_once() -> None:
    client = connect(f"redis://127.0.0.1:{free_port()}/0", retry=False, connect_timeout_s=1)
    with pytest.raises(RedisConnectionError):
        client.ping()


def test_a_redis_that_never_answers_times_out_instead_of_hanging() -> None:
    """A server that accepts and never replies (a Redis stopped by SIGSTOP): every client
    has a socket timeout, so a command fails (and is retried, then given up) instead of
    waiting for ever, as `status --watch` did."""
    import socket
    import time

    from contract.state import RedisTimeoutError
    from contract.state.connection import SOCKET_TIMEOUT_S

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        kwargs = connect(url).get_connection_kwargs()
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == SOCKET_TIMEOUT_S
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            connect(url, retry=False, timeout_s=0.5).ping()
        assert time.monotonic() - started < 30  # a deadline against a hang, not a timing


def test_another_server_on_the_port_is_redis_unavailable() -> None:
    """From the operations review: a server that is not Redis (NATS sends a banner) raised
    redis-py's InvalidResponse, which every command printed as a traceback (and the API
    as a 500); it is Redis being unavailable, like a refused connection."""
    import socket
    import threading

    from contract.state import RedisUnavailable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)

        def banner() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b'INFO {"server_id":"not-redis"}\r\n')
                conn.recv(1024)

        threading.Thread(target=banner, daemon=True).start()
        with pytest.raises(RedisUnavailable):
            ping(f"redis://127.0.0.1:{server.getsockname()[1]}/0", timeout_s=2)


def test_ping(redis_url: str) -> None:
    assert ping(redis_url, timeout_s=2)
    with pytest.raises(RedisConnectionError):
        ping(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1)
    with pytest.raises(ValueError):
        ping("http://not-redis", timeout_s=1)


def test_runs_ping_and_from_url_options(redis_url: str) -> None:
    assert Runs.from_url(redis_url, retry=False, timeout_s=5).ping()


@pytest.mark.parametrize("path", ["/abc", "/0x1", "/1/2"])
def test_a_database_that_is_no_number_is_refused(path: str) -> None:
    # redis-py would use database 0 without a word; Celery refuses the same URL.
    with pytest.raises(ValueError, match="must be a number"):
        connect(f"redis://127.0.0.1:{free_port()}{path}")


@pytest.mark.parametrize("path", ["", "/", "/7"])
def test_a_numbered_or_absent_database_is_accepted(path: str) -> None:
    connect(f"redis://127.0.0.1:{free_port()}{path}", retry=False)


def test_a_redis_at_its_maxmemory_refuses_and_is_an_outage(redis_url: str, raw: Redis) -> None:
    """Given Redis at its maxmemory (noeviction), expect its refusals of a command, of a
    MULTI transaction (as kombu acknowledges) and of a script to be classified as
    refusals and outages (waited out, not bugs); an error reply of our own making and a
    lost connection as neither refusal, the latter still an outage."""
    from redis.exceptions import ResponseError

    from contract.state import redis_outage, redis_refusal
    from tests.harness.faults import redis_out_of_memory

    raw.set("pv:test:string", "x")
    refused = []
    with redis_out_of_memory(raw):
        for command in (lambda: raw.lpush("pv:test:list", "x"),
                        lambda: raw.pipeline().zrem("pv:test:z", "a").hdel("pv:test:h", "a")
                        .execute(),
                        lambda: raw.eval("return redis.call('SET', KEYS[1], 'y')", 1,
                                         "pv:test:other")):
            with pytest.raises(ResponseError) as caught:
                command()
            refused.append(caught.value)
        assert raw.get("pv:test:string") == "x"  # reads still answer
    assert [type(e).__name__ for e in refused] == ["OutOfMemoryError"] * 3
    assert all(redis_refusal(e) and redis_outage(e) for e in refused)

    with pytest.raises(ResponseError) as wrong_type:
        raw.lpush("pv:test:string", "x")  # WRONGTYPE: a bug, not an outage
    misconf = ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's "
                            "currently unable to persist to disk.")
    lost = RedisConnectionError("Connection closed by server.")
    assert [redis_refusal(e) for e in (wrong_type.value, misconf, lost)] == [False, True, False]
    assert [redis_outage(e) for e in (wrong_type.value, misconf, lost)] == [False, True, True]
