"""The page's event-stream reader (service/web/api.js) against scripted streams: the SSE
format, the Authorization header, and a reconnect that sends Last-Event-ID and resumes."""

from __future__ import annotations

import json
from typing import Any

FIRST = (
    ": a comment line is ignored\n"
    "retry: 50\n"
    "\n"
    "id: 5\r\nevent: epoch\r\n"
    'data: {"epoch": 1,\r\n'
    'data:  "train_loss": 0.5}\r\n'
    "\r\n"
    "id: 6\n"
    "event: progress\n"
    'data: {"fraction": 0.25}\n'
    "\n"
    "event: status\n"
    'data: {"status": "running"}\n'
    # no blank line: an event cut off by the dropped connection is not delivered
)
SECOND = 'id: 9\nevent: status\ndata: {"status": "succeeded"}\n\n'


def test_events_reader_parses_sends_the_key_and_resumes_with_last_event_id(
    page: Any, key: str
) -> None:
    page.goto("/#/datasets")
    page.locator("[data-testid=datasets-table], main p").first.wait_for()
    calls: list[dict[str, str]] = []

    def scripted(route: Any) -> None:
        calls.append(route.request.headers)
        body = FIRST if len(calls) == 1 else SECOND
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/jobs/scripted/events", scripted)
    seen = page.evaluate(
        """async () => {
            const { api } = await import('/ui/api.js');
            const seen = [];
            await api.events('scripted', { onEvent: (e) => seen.push(e) });
            return seen;
        }"""
    )
    assert [(e["type"], e["id"], e["data"]) for e in seen] == [
        ("epoch", "5", {"epoch": 1, "train_loss": 0.5}),
        ("progress", "6", {"fraction": 0.25}),
        ("status", "9", {"status": "succeeded"}),
    ]
    assert len(calls) == 2, "one reconnect, none after the terminal status"
    assert all(c["authorization"] == f"Bearer {key}" for c in calls)
    assert "last-event-id" not in calls[0]
    assert calls[1]["last-event-id"] == "6"
    assert all(key not in json.dumps(c.get("referer", "")) for c in calls)


def entry(epoch: int, loss: float) -> dict[str, Any]:
    return {"epoch": epoch, "train_loss": loss, "val_loss": loss + 0.1, "seconds": 0.1}


def test_job_page_skips_replayed_epochs_and_drops_rewound_ones(page: Any) -> None:
    """A scripted running job: the stream replays epochs the page has, brings new ones, then
    a rewind to epoch 4 (the worker died) and the epochs trained again."""
    job = {
        "id": "scripted",
        "status": "running",
        "kind": "mlp",
        "task": "regression",
        "dataset_id": None,
        "progress": {"epoch": 4, "epochs": 8, "fraction": 0.5},
        "model_id": None,
        "error": None,
        "spec": {"model": {"kind": "mlp"}},
        "metrics": None,
        "checkpoints": [],
        "history": [],
    }
    history = {
        "job_id": "scripted",
        "total": 4,
        "downsampled": False,
        "items": [entry(e, 1.0 / e) for e in range(1, 5)],
    }
    events = [
        ("1", "status", {"status": "running"}),
        *[(str(e + 1), "epoch", entry(e, 1.0 / e)) for e in range(1, 5)],  # replayed
        ("6", "epoch", entry(5, 0.5)),
        ("7", "epoch", entry(6, 0.4)),
        ("8", "rewind", {"epoch": 4}),
        ("9", "epoch", entry(5, 0.25)),
        ("10", "progress", {"epoch": 5, "epochs": 8, "fraction": 0.625}),
        ("11", "status", {"status": "running"}),
    ]
    stream = "".join(f"id: {i}\nevent: {t}\ndata: {json.dumps(d)}\n\n" for i, t, d in events)
    served = {"stream": 0}

    def events_route(route: Any) -> None:
        served["stream"] += 1
        body = stream if served["stream"] == 1 else ": keep-alive\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/jobs/scripted/events", events_route)
    page.route("**/jobs/scripted/history?*", lambda r: r.fulfill(json=history))
    page.route("**/jobs/scripted?*", lambda r: r.fulfill(json=job))
    page.goto("/#/jobs/scripted")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=job-progress]')?.dataset.fraction === '0.625'"
    )
    page.wait_for_function(
        "() => document.querySelector('[data-testid=curve-loss]')?.data?.[0]?.x.length === 5"
    )
    drawn = page.evaluate(
        "() => { const t = document.querySelector('[data-testid=curve-loss]').data[0];"
        " return {x: t.x, y: t.y}; }"
    )
    assert drawn == {"x": [1, 2, 3, 4, 5], "y": [1.0, 0.5, 1 / 3, 0.25, 0.25]}
