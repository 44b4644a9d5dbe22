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
