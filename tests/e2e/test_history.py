"""A job's history read in parts through HTTP, on the embedded defaults and on PostgreSQL +
Redis: `GET /jobs/{id}/history` (ordering, bounds, windows that tile, downsampling,
isolation) and the compact forms of `GET /jobs/{id}` (`?history=`, `?checkpoints=`), whose
answer stays small however long the job trained."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import iris_frame, job_spec, upload_frame
from tests.stack import Stack

EPOCHS = 300  # long enough that the full answer is big, short enough for seconds per stack
COMPACT_LIMIT = 10_000  # bytes: the bound for a polled `GET /jobs/{id}`

# One finished job per stack, trained once and read by every test here.
_finished: dict[str, dict[str, Any]] = {}


def finished_job(stack: Stack) -> dict[str, Any]:
    """A tiny iris MLP of `EPOCHS` epochs (one batch an epoch; `checkpoint_every` left at its
    default), as the full `GET /jobs/{id}` answers it once it has succeeded."""
    if stack.name not in _finished:
        dataset_id = upload_frame(stack.http(), iris_frame())
        spec = job_spec(dataset_id, training={"epochs": EPOCHS, "batch_size": 150, "seed": 0})
        response = stack.http().post("/jobs", json=spec)
        assert response.status_code == 202, response.text
        job = stack.wait_for_job(response.json()["id"])
        assert job["status"] == "succeeded", job
        _finished[stack.name] = job
    return _finished[stack.name]


def history(stack: Stack, job_id: str, **params: Any) -> dict[str, Any]:
    response = stack.http().get(f"/jobs/{job_id}/history", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def epochs(entries: list[dict[str, Any]]) -> list[int]:
    return [e["epoch"] for e in entries]


# GET /jobs/{id}/history ---------------------------------------------------------------


def test_history_is_every_epoch_in_order_as_in_the_full_job(stack: Stack) -> None:
    job = finished_job(stack)
    page = history(stack, job["id"])
    assert page["job_id"] == job["id"]
    assert epochs(page["items"]) == list(range(1, EPOCHS + 1))
    assert page["total"] == EPOCHS == job["history_total"]
    assert page["items"] == job["history"]
    assert page["downsampled"] is False
    assert page["last_event_id"].isdigit() and int(page["last_event_id"]) > 0


def test_history_after_the_last_epoch_is_empty_and_total_still_counts_all(stack: Stack) -> None:
    job_id = finished_job(stack)["id"]
    for after in (EPOCHS, EPOCHS + 1, 2**31 - 1):
        page = history(stack, job_id, after_epoch=after)
        assert page["items"] == [], after
        assert page["total"] == EPOCHS


def test_history_after_epochs_past_an_integer_column_is_a_422(stack: Stack) -> None:
    """`after_epoch` stops at 2**31 - 1, the largest value PostgreSQL's `integer` holds
    (2**31 was a 500 there)."""
    job_id = finished_job(stack)["id"]
    url = f"/jobs/{job_id}/history"
    assert stack.http().get(url, params={"after_epoch": 2**31 - 1}).json()["items"] == []
    assert stack.http().get(url, params={"after_epoch": 2**31}).status_code == 422


def test_history_limit_caps_the_page_from_after_epoch(stack: Stack) -> None:
    job_id = finished_job(stack)["id"]
    page = history(stack, job_id, limit=7)
    assert epochs(page["items"]) == list(range(1, 8))
    assert page["total"] == EPOCHS
    page = history(stack, job_id, after_epoch=100, limit=50)
    assert epochs(page["items"]) == list(range(101, 151))
    page = history(stack, job_id, after_epoch=EPOCHS - 3, limit=50)  # runs off the end
    assert epochs(page["items"]) == [EPOCHS - 2, EPOCHS - 1, EPOCHS]


@pytest.mark.parametrize("limit", [1, 37, 100, EPOCHS])
def test_history_windows_tile_the_whole_history(stack: Stack, limit: int) -> None:
    """Paging as a client would (after the last epoch seen) gives every entry exactly once."""
    job = finished_job(stack)
    seen: list[dict[str, Any]] = []
    after = 0
    for _ in range(EPOCHS + 2):
        page = history(stack, job["id"], after_epoch=after, limit=limit)
        assert page["total"] == EPOCHS
        if not page["items"]:
            break
        assert len(page["items"]) <= limit
        seen.extend(page["items"])
        after = page["items"][-1]["epoch"]
    assert seen == job["history"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": 100_001},
        {"limit": "ten"},
        {"after_epoch": -1},
        {"after_epoch": "x"},
        {"points": 5},
        {"points": 0},
    ],
)
def test_history_refuses_invalid_values(stack: Stack, params: dict[str, Any]) -> None:
    job_id = finished_job(stack)["id"]
    response = stack.http().get(f"/jobs/{job_id}/history", params=params)
    assert response.status_code == 422, response.text


def test_history_points_downsamples_keeping_the_first_and_last_epochs(stack: Stack) -> None:
    job = finished_job(stack)
    points = 30
    page = history(stack, job["id"], points=points)
    shown = page["items"]
    assert page["downsampled"] is True
    assert page["total"] == EPOCHS
    assert 2 < len(shown) < EPOCHS
    assert len(shown) <= 3 * points  # "about" points: each series' share plus its min and max
    assert shown[0]["epoch"] == 1 and shown[-1]["epoch"] == EPOCHS
    assert epochs(shown) == sorted(set(epochs(shown)))
    by_epoch = {e["epoch"]: e for e in job["history"]}
    assert all(e == by_epoch[e["epoch"]] for e in shown)  # picked entries, not averages
    assert page["last_event_id"].isdigit()


def test_history_points_within_a_window_and_above_the_count(stack: Stack) -> None:
    job_id = finished_job(stack)["id"]
    page = history(stack, job_id, after_epoch=100, limit=100, points=10)
    assert page["downsampled"] is True
    assert page["items"][0]["epoch"] == 101 and page["items"][-1]["epoch"] == 200
    page = history(stack, job_id, points=EPOCHS)  # nothing to thin
    assert page["downsampled"] is False
    assert epochs(page["items"]) == list(range(1, EPOCHS + 1))


def test_history_of_another_users_job_is_404_and_without_a_key_401(stack: Stack) -> None:
    job_id = finished_job(stack)["id"]
    with stack.client_for(stack.new_user("bob")) as bob:
        for path in (f"/jobs/{job_id}/history", f"/jobs/{job_id}?history=last:3"):
            response = bob.get(path)
            assert response.status_code == 404, (path, response.text)
            assert "train_loss" not in response.text
        assert bob.get("/jobs/no-such-job/history").status_code == 404
    with stack.client_for(None) as anonymous:
        for path in (f"/jobs/{job_id}/history", f"/jobs/{job_id}?history=none"):
            assert anonymous.get(path).status_code == 401, path


# The compact forms of GET /jobs/{id} --------------------------------------------------


def get_job(stack: Stack, job_id: str, **params: str) -> dict[str, Any]:
    response = stack.http().get(f"/jobs/{job_id}", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def without(job: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in keys}


def test_job_with_history_none_has_no_entries_but_counts_them(stack: Stack) -> None:
    full = finished_job(stack)
    job = get_job(stack, full["id"], history="none")
    assert job["history"] == []
    assert job["history_total"] == len(full["history"]) == EPOCHS
    assert job["checkpoints"] == full["checkpoints"]
    assert without(job, "history") == without(full, "history")


def test_job_with_history_last_n_is_the_tail_of_the_full_answer(stack: Stack) -> None:
    full = finished_job(stack)
    job = get_job(stack, full["id"], history="last:3")
    assert job["history"] == full["history"][-3:]
    assert epochs(job["history"]) == [EPOCHS - 2, EPOCHS - 1, EPOCHS]
    assert job["history_total"] == EPOCHS
    assert without(job, "history") == without(full, "history")
    assert get_job(stack, full["id"], history="last:0")["history"] == []
    assert get_job(stack, full["id"], history=f"last:{EPOCHS + 50}")["history"] == full["history"]


def test_job_with_history_all_equals_the_default(stack: Stack) -> None:
    full = finished_job(stack)
    assert get_job(stack, full["id"]) == full  # a finished job's answer no longer changes
    assert get_job(stack, full["id"], history="all") == full
    assert get_job(stack, full["id"], history="all", checkpoints="all") == full


def test_job_with_checkpoints_none_has_none(stack: Stack) -> None:
    full = finished_job(stack)
    assert full["checkpoints"], "the job should have written at least its last checkpoint"
    job = get_job(stack, full["id"], checkpoints="none")
    assert job["checkpoints"] == []
    assert without(job, "checkpoints") == without(full, "checkpoints")
    both = get_job(stack, full["id"], history="none", checkpoints="none")
    assert both["history"] == [] and both["checkpoints"] == []
    assert both["history_total"] == EPOCHS


@pytest.mark.parametrize(
    "params",
    [
        {"history": "last:x"},
        {"history": "last:"},
        {"history": "last:-1"},
        {"history": "some"},
        {"history": ""},
        {"checkpoints": "maybe"},
        {"checkpoints": ""},
    ],
)
def test_job_refuses_bad_compact_values(stack: Stack, params: dict[str, str]) -> None:
    job_id = finished_job(stack)["id"]
    response = stack.http().get(f"/jobs/{job_id}", params=params)
    assert response.status_code == 422, response.text


def test_compact_job_answer_stays_small_after_a_long_job(stack: Stack) -> None:
    job_id = finished_job(stack)["id"]
    response = stack.http().get(f"/jobs/{job_id}?history=last:20&checkpoints=none")
    assert response.status_code == 200, response.text
    assert len(response.content) < COMPACT_LIMIT, len(response.content)
    assert len(response.json()["history"]) == 20
