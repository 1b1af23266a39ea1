"""The ids the engine makes: UUIDv7, valid ids, strictly increasing within a process."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from llamactl.server import ids
from llamactl.server.ids import id_problem, new_id, new_uuid


def _ms(value: uuid.UUID) -> int:
    return value.int >> 80


def test_a_new_id_is_a_version_7_uuid_that_the_api_accepts() -> None:
    before = time.time_ns() // 1_000_000
    value = new_uuid()
    after = time.time_ns() // 1_000_000
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert before <= _ms(value) <= after
    text = new_id()
    assert uuid.UUID(text).version == 7 and len(text) == 36
    assert id_problem(text, "task id") is None


def test_ids_made_in_one_process_only_increase() -> None:
    made = [new_id() for _ in range(20_000)]  # many share a millisecond
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_keep_increasing_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    first = new_uuid()
    monkeypatch.setattr(ids.time, "time_ns", lambda: (_ms(first) - 60_000) * 1_000_000)
    later = [new_uuid() for _ in range(100)]
    assert [first, *later] == sorted([first, *later]) and len({first, *later}) == 101
    assert all(_ms(v) == _ms(first) for v in later)  # held at the last millisecond, not a minute back


def test_a_full_counter_moves_on_to_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    first = new_uuid()
    monkeypatch.setattr(ids.time, "time_ns", lambda: _ms(first) * 1_000_000)
    monkeypatch.setattr(ids, "_counter", ids._COUNTER_MAX)
    after = new_uuid()
    assert after > first and _ms(after) == _ms(first) + 1 and after.version == 7


def test_message_ids_are_the_hex_of_increasing_version_7_uuids() -> None:
    made = [ids.new_hex_id() for _ in range(1_000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(uuid.UUID(hex=h).version == 7 for h in made)


def test_a_text_id_is_what_the_uuid_prints() -> None:
    text = new_id()
    assert str(uuid.UUID(text)) == text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_random_bytes_of_its_parent() -> None:
    new_id()  # the parent holds a batch of random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send the random bytes it would use next
        os.write(write, ids._random.take(8).to_bytes(8, "big"))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 8), "big")
    os.close(read)
    os.waitpid(pid, 0)
    with ids._lock:
        assert ids._random.take(8) != child
