"""Following a job to its end in the terminal: the progress display, Ctrl-C's question,
and the exit code that says how the job ended."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from keiko.errors import APIError
from keiko.shell import emit, note, notes, show

if TYPE_CHECKING:
    from keiko.client import Keiko

EXIT_LEFT_RUNNING = 130
OUTCOMES = {"succeeded": 0, "failed": 1, "cancelled": 2, "pruned": 2}


def follow_job(keiko: Keiko, job_id: str, as_json: bool) -> int:
    """Draw the job's progress until it ends, then its final metrics; the exit code says how
    it ended. Ctrl-C asks whether to cancel the job (then follows it to its end) or to leave
    it running."""
    from keiko import render
    from keiko.progress import JobProgress

    job = keiko.job(job_id)
    view = JobProgress(job.read(history="last:1", checkpoints=False), notes)
    last: str | None = None
    while True:
        try:
            with view:
                for event in job.events(after=last):
                    last = event.id
                    view.update(event)
            break
        except KeyboardInterrupt:
            if not ask_to_cancel():
                note(
                    f"job {job_id} is still running; follow it again with: "
                    f"keiko jobs watch {job_id}"
                )
                return EXIT_LEFT_RUNNING
            try:
                job.cancel()
            except APIError as exc:
                if exc.status_code != 409:  # 409: it finished meanwhile
                    raise
    final = job.read()
    if as_json:
        emit(final)
    elif final.metrics:
        show(render.metrics_table(final.metrics))
    if final.status == "succeeded":
        note(f"job {job_id} succeeded: model {final.model_id}")
    elif final.error is not None:
        note(f"job {job_id} {final.status}: {final.error.type}: {final.error.message}")
    else:
        note(f"job {job_id} {final.status}")
    return OUTCOMES[final.status]


def ask_to_cancel() -> bool:
    try:
        return typer.confirm("\ncancel the job?", default=False, err=True)
    except typer.Abort:  # a second Ctrl-C, or no terminal to ask on
        return False
