"""Faults the job system survives: a pickled message is refused unread; the broker down when
a job arrives; Redis restarted empty while a job waits; the API killed while a job runs.

The broker faults need a Redis of their own to stop and start: a private redis-server
without persistence, so a restart comes back empty, as a Redis that lost its data would."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from service.queue import RUN_JOB
from tests.e2e.helpers import iris_frame, job_spec, start_long_job, upload_frame, wait_until
from tests.services import temporary_postgres_database, unavailable
from tests.stack import Stack, free_port, stack_env


def read_log(stack: Stack, name: str, start: int = 0) -> str:
    """The process's log from byte `start` on (Stack.log keeps only the tail)."""
    with (stack.data_dir / f"{name}.log").open("rb") as handle:
        handle.seek(start)
        return handle.read().decode(errors="replace")


def log_size(stack: Stack, name: str) -> int:
    return (stack.data_dir / f"{name}.log").stat().st_size


# A pickled message -------------------------------------------------------------------------


class TouchOnUnpickle:
    """Unpickling this calls Path.touch(path): the kind of code a hostile pickle runs, made
    visible and harmless."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def send_pickled(stack: Stack, payload: object) -> None:
    """Publish a real `training.run_job` message, pickle-serialised, to the stack's Redis
    queue: what anyone who can reach the broker could send."""
    sender = Celery("hostile-sender", broker=stack.env["KEIKO_BROKER_URL"], set_as_current=False)
    sender.conf.update(
        task_serializer="pickle",
        accept_content=["pickle"],  # the sender's side only; the worker accepts JSON
        broker_transport_options={"global_keyprefix": stack.env["KEIKO_BROKER_KEY_PREFIX"]},
    )
    try:
        sender.send_task(RUN_JOB, args=[payload], queue="celery", serializer="pickle")
    finally:
        sender.close()


def test_a_pickled_message_is_refused_without_being_unpickled(
    postgres_redis_stack: Stack, tmp_path: Path
) -> None:
    stack = postgres_redis_stack
    # The payload is real: unpickled here, it creates its file.
    proof = tmp_path / "unpickled-here"
    pickle.loads(pickle.dumps(TouchOnUnpickle(proof)))
    assert proof.exists()

    marker = tmp_path / "unpickled-by-the-worker"
    start = log_size(stack, "worker")
    send_pickled(stack, TouchOnUnpickle(marker))
    deadline = time.monotonic() + 30
    while "disallowed" not in read_log(stack, "worker", start).lower():
        assert time.monotonic() < deadline, read_log(stack, "worker", start)
        time.sleep(0.2)
    log = read_log(stack, "worker", start)
    assert "ContentDisallowed" in log or "Refusing to deserialize" in log, log
    assert not marker.exists()
    # The worker refused that one message and goes on with the next.
    assert stack.processes["worker"].poll() is None
    dataset_id = upload_frame(stack.http(), iris_frame())
    job = stack.wait_for_job(stack.http().post("/jobs", json=job_spec(dataset_id)).json()["id"])
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert not marker.exists()


# Broker faults, on a Redis of the test's own ------------------------------------------------


class PrivateRedis:
    """redis-server on a free port, without snapshots or an append-only file."""

    def __init__(self, server: str, folder: Path) -> None:
        self.server, self.folder, self.port = server, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [self.server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    log_text = (self.folder / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server did not start:\n{log_text}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = shutil.which("redis-server")
    if server is None:
        unavailable("redis-server", FileNotFoundError("redis-server is not on PATH"))
    assert server is not None
    server_redis = PrivateRedis(server, tmp_path_factory.mktemp("private_redis"))
    server_redis.start()
    try:
        yield server_redis
    finally:
        server_redis.stop()


@pytest.fixture(scope="module")
def fault_stack(
    private_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """PostgreSQL (a database of its own) and the private Redis; a queued job whose message
    was lost is sent again after 2 s."""
    with temporary_postgres_database() as database_url:
        data_dir = tmp_path_factory.mktemp("faults")
        env = stack_env(
            data_dir,
            KEIKO_DATABASE_URL=database_url,
            KEIKO_BROKER_URL=private_redis.url,
            KEIKO_REDISPATCH_SECONDS="2",
        )
        stack = Stack("faults", data_dir, env)
        try:
            yield stack.start()
        finally:
            stack.stop()


@pytest.fixture
def faults(fault_stack: Stack, private_redis: PrivateRedis) -> tuple[Stack, PrivateRedis]:
    """Each test starts with Redis and the worker up, whatever the one before left."""
    private_redis.start()
    if fault_stack.processes["worker"].poll() is not None:
        fault_stack.start_worker()
    return fault_stack, private_redis


def test_broker_down_when_a_job_arrives(faults: tuple[Stack, PrivateRedis]) -> None:
    stack, broker = faults
    dataset_id = upload_frame(stack.http(), iris_frame())
    broker.stop()

    response = stack.http().post("/jobs", json=job_spec(dataset_id))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    time.sleep(1.5)  # several sweeps, none of which can send
    assert stack.http().get(f"/jobs/{job_id}").json()["status"] == "queued"
    assert stack.http().get("/ready").json()["broker"].startswith("down")

    broker.start()  # on the same port, empty
    job = stack.wait_for_job(job_id, timeout=120)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["attempts"] == 1


def test_redis_restarted_empty_while_a_job_waits(faults: tuple[Stack, PrivateRedis]) -> None:
    stack, broker = faults
    dataset_id = upload_frame(stack.http(), iris_frame())
    stack.kill_worker()  # nobody takes the message: it waits in Redis

    response = stack.http().post("/jobs", json=job_spec(dataset_id))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    with broker.client() as client:
        assert client.llen("celery") >= 1  # the API sent it; Redis holds it
    broker.stop()
    broker.start()  # every message is gone; the job is only in SQL now
    assert stack.http().get(f"/jobs/{job_id}").json()["status"] == "queued"

    stack.start_worker()
    job = stack.wait_for_job(job_id, timeout=120)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["attempts"] == 1


def test_api_killed_and_restarted_while_a_job_runs(faults: tuple[Stack, PrivateRedis]) -> None:
    stack, _broker = faults
    # About 20 s of training here: it outlasts the restart by far.
    job_id = start_long_job(stack, seed=3, epochs=80)
    job = wait_until(stack, job_id, lambda job: job["progress"]["epoch"] >= 1)
    assert job["status"] == "running"

    stack.restart_api()
    job = stack.http().get(f"/jobs/{job_id}").json()
    assert job["status"] == "running", job  # it trained on while no API was up
    job = stack.wait_for_job(job_id, timeout=240)
    assert job["status"] == "succeeded", (job["error"], stack.log("worker"))
    assert job["attempts"] == 1  # the worker kept its lease: nobody took the job over
    assert [entry["epoch"] for entry in job["history"]] == list(range(1, 81))
    assert stack.http().get(f"/models/{job['model_id']}").status_code == 200
