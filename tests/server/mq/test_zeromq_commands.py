"""What the embedded broker does with commands a client got wrong (forged past the client's checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.errors import PublishRejected
from llamactl.server.mq.zeromq import wire

from .test_zeromq_direct import TASKS
from .test_zeromq_memory_work import journaled, over_a_socket


@pytest.mark.parametrize("topic", [b"nowhere.tasks", b"work.with space", "work.caf\u00e9".encode()])
async def test_a_publish_to_a_malformed_topic_is_refused_with_the_reason(
    tmp_path: Path, topic: bytes
) -> None:
    path = tmp_path / "mq.sqlite"
    async with over_a_socket(path) as remote:
        forged = [topic, b"m1", b"", wire.encode_headers(None), b"payload"]
        with pytest.raises(PublishRejected, match=r"rejected: topic .* must"):
            await remote._new_request(wire.PUB, forged, "a forged publish")
        await remote.publish(TASKS, b"after", msg_id="m2")  # the broker serves on
        assert journaled(path) == [("m2",)]
