"""The redis backend's configuration and its errors: bad URLs, an unreachable or refusing Redis,
a missing ``redis`` package. None of them may show the password."""

from __future__ import annotations

import socket
import time
from urllib.parse import quote

import pytest

from llamactl.server.errors import MessageQueueError
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.redis import RedisQueue, RedisQueueConfig
from tests.missing_package import error_without

from .conftest import REDIS_URL, redis_reachable

SECRET = "s3cr:et/pw"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_url_and_defaults() -> None:
    q = connect_queue({"type": "redis", "url": "redis://127.0.0.1:6379/0"})
    assert isinstance(q, RedisQueue)
    c = q.config
    assert (c.prefix, c.heartbeat_interval, c.liveness, c.max_attempts, c.publish_timeout, c.retention) == (
        "llamactl:",
        1.0,
        3,
        5,
        10.0,
        60.0,
    )


def test_llama_deploy_host_port_keys_make_a_url() -> None:
    c = RedisQueueConfig.from_mapping(
        {
            "type": "redis",
            "host": "redis.internal",
            "port": 6380,
            "db": 2,
            "username": "u",
            "password": SECRET,
        }
    )
    assert c.url == "redis://u:s3cr%3Aet%2Fpw@redis.internal:6380/2"
    assert c.where == "redis://***@redis.internal:6380/2"
    assert SECRET not in repr(c)
    assert RedisQueueConfig.from_mapping({"type": "redis", "ssl": "true"}).url == "rediss://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"url": "http://127.0.0.1:6379"}, "must start with redis://"),
        ({"url": "redis://x", "host": "y"}, "either 'url' or"),
        ({"url": "redis://x", "router": "tcp://x"}, r"unknown keys \['router'\]"),
        ({"port": "six"}, "port and db must be integers"),
        ({"liveness": 0}, "liveness at least 1"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"prefix": "has space"}, "prefix must be"),
        ({"url": "redis://:pw@127.0.0.1:/0"}, r"'redis://\*\*\*@127.0.0.1:/0': it has an empty port"),
        ({"url": "redis://127.0.0.1:63a79/0"}, r"its port is not a number"),
        ({"url": "redis://h/0?Socket_timeout=1"}, r"sets 'socket_timeout' itself \(publish_timeout bounds"),
        ({"url": "redis://h/0?DB=1"}, r"key 'DB' is not one it takes \(did you mean 'db'\?\); it takes \["),
        ({"url": "redis://h/0?decode_responses=1"}, r"'decode_responses' is not one it takes; it takes \["),
        ({"url": "redis://h/0?max_connections=9"}, r"sets 'max_connections' itself \(the queue sizes"),
        (
            {"url": "redis://h/0?ssl_cert_reqs=none"},
            r"'ssl_cert_reqs' applies to TLS only: start the url with",
        ),
    ],
)
def test_bad_configs_say_what_is_wrong(config: dict[str, object], match: str) -> None:
    with pytest.raises(MessageQueueError, match=match):
        connect_queue({"type": "redis", **config})


def test_a_url_s_query_may_set_what_the_connection_allows() -> None:
    """A key redis-py does not know failed `serve`'s start with a bare TypeError on first connect."""
    query = "db=2&client_name=me&socket_connect_timeout=0.5&socket_keepalive=true&username=u&password=p"
    assert RedisQueueConfig.from_mapping({"url": f"redis://h:1/0?{query}"}).where.endswith("&password=***")
    tls = (
        "rediss://h:1/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem&ssl_min_version=TLSv1_2&ssl_password=k3y"
    )
    assert RedisQueueConfig.from_mapping({"url": tls}).where.endswith("&ssl_password=***")


async def test_a_url_redis_py_cannot_parse_fails_at_start_without_the_password() -> None:
    password = quote(SECRET, safe="")
    url = f"redis://u:{password}@127.0.0.1:6379/0?socket_connect_timeout=soon"
    q = connect_queue({"type": "redis", "url": url})
    with pytest.raises(MessageQueueError, match="bad url") as err:
        await q.start()
    assert "s3cr" not in str(err.value)


async def test_a_password_in_the_url_s_query_is_never_shown() -> None:
    """redis-py takes `?password=` as the password: `where` (status, logs) showed it."""
    url = "redis://127.0.0.1:1/0?socket_connect_timeout=0.2&password=hunter%402"
    q = connect_queue({"type": "redis", "url": url, "publish_timeout": 0.3})
    assert isinstance(q, RedisQueue)
    assert q.config.where == "redis://127.0.0.1:1/0?socket_connect_timeout=0.2&password=***"
    with pytest.raises(MessageQueueError) as err:
        await q.start()  # nothing listens on port 1
    assert "hunter" not in str(err.value) and "***" in str(err.value)


def test_a_url_whose_port_is_not_a_number_is_refused_without_the_password() -> None:
    """A '/' in an unencoded password ends the url's address there: what follows the password's
    last ':' looks like the port, and must not be shown."""
    with pytest.raises(MessageQueueError, match="its port is not a number") as err:
        connect_queue({"type": "redis", "url": f"redis://u:{SECRET}@127.0.0.1:6379/0"})
    assert "s3cr" not in str(err.value) and "et" not in str(err.value).split("(")[0]


async def test_redis_down_fails_start_in_time_with_a_clear_message(caplog: pytest.LogCaptureFixture) -> None:
    """The wait was silent (10 s by default) and its error did not say what to do."""
    url = f"redis://u:s3cr%3Aet@127.0.0.1:{free_port()}/0"
    q = connect_queue({"type": "redis", "url": url, "publish_timeout": 0.5})
    started = time.monotonic()
    with pytest.raises(
        MessageQueueError, match=r"redis at redis://\*\*\*@127.0.0.1:\d+/0 did not answer"
    ) as err:
        await q.start()
    assert time.monotonic() - started < 2.0
    assert "s3cr" not in str(err.value)
    assert str(err.value).endswith(
        "start Redis there, or point the deployment's `message-queue` (its url, or $REDIS_URL) at a running one"
    )
    said = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(said) == 1 and "trying for 0.5s" in said[0] and "s3cr" not in said[0], said
    await q.close()


async def test_a_refused_password_is_reported_at_once() -> None:
    if not await redis_reachable(REDIS_URL):
        pytest.fail(
            f"no Redis server answers at {REDIS_URL}: start one (CI does) or set LLAMACTL_TEST_REDIS_URL"
        )
    url = REDIS_URL.replace("redis://", f"redis://nobody-{time.time_ns()}:wrong@", 1)
    q = connect_queue({"type": "redis", "url": url, "publish_timeout": 5.0})
    started = time.monotonic()
    with pytest.raises(MessageQueueError, match="refused") as err:
        await q.start()
    assert time.monotonic() - started < 2.0  # not retried until the publish timeout
    assert "wrong" not in str(err.value).replace("WRONGPASS", "")


def test_without_the_redis_package_the_factory_says_what_to_install() -> None:
    name, message = error_without(
        ["redis"],
        "from llamactl.server.mq.factory import connect_queue\n"
        "connect_queue({'type': 'redis', 'url': 'redis://127.0.0.1:6379/0'})",
    )
    assert name == "MessageQueueError"
    assert "pip install 'llamactl[redis]'" in message
