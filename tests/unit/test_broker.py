"""The embedded broker: complete messages only, first in first out, damaged files set aside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kombu import Connection

from service.broker import REJECTED, TAKEN, Transport


@pytest.fixture
def connection(tmp_path: Path) -> Connection:
    options = {
        "data_folder_in": str(tmp_path),
        "data_folder_out": str(tmp_path),
        "control_folder": str(tmp_path / "control"),
    }
    (tmp_path / "control").mkdir()
    Transport.global_state.clear()  # bindings are process-wide; each test has its own folder
    with Connection("filesystem://", transport=Transport, transport_options=options) as conn:
        yield conn


def test_messages_come_back_in_order(connection: Connection, tmp_path: Path) -> None:
    queue = connection.SimpleQueue("jobs")
    for n in range(5):
        queue.put({"n": n})
    assert [queue.get(timeout=1).payload["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.1)
    # Nothing is left behind: no partial files, no taken ones.
    assert sorted(p.name for p in tmp_path.iterdir()) == [TAKEN, "control"]
    assert not any((tmp_path / TAKEN).iterdir())
    queue.close()


def test_a_file_being_written_is_not_taken(connection: Connection, tmp_path: Path) -> None:
    # What kombu's own writer leaves for a moment: the file exists, its content does not yet.
    (tmp_path / ".1_abc.jobs.msg.partial").write_bytes(b"")
    queue = connection.SimpleQueue("jobs")
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.1)
    assert (tmp_path / ".1_abc.jobs.msg.partial").exists()
    queue.close()


def test_an_undecodable_message_is_set_aside(connection: Connection, tmp_path: Path) -> None:
    queue = connection.SimpleQueue("jobs")
    (tmp_path / "0_empty.jobs.msg").write_bytes(b"")
    (tmp_path / "1_garbage.jobs.msg").write_bytes(b"\x80not json")
    queue.put({"n": 1})
    assert queue.get(timeout=1).payload == {"n": 1}
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.3)  # the consumer goes on past both
    queue.put({"n": 2})
    assert queue.get(timeout=1).payload == {"n": 2}
    assert sorted(os.listdir(tmp_path / REJECTED)) == ["0_empty.jobs.msg", "1_garbage.jobs.msg"]
    queue.close()


def test_other_queues_are_left_alone(connection: Connection, tmp_path: Path) -> None:
    connection.SimpleQueue("gpu").put({"n": 1})
    queue = connection.SimpleQueue("jobs")
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.1)
    assert len([p for p in os.listdir(tmp_path) if p.endswith(".gpu.msg")]) == 1
    queue.close()
