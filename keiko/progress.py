"""A job's progress drawn from its events: a rich bar in a terminal or a notebook (epoch or
step, ETA, latest loss and main validation metric), a line per epoch anywhere else (a log
file, a pipe, CI)."""

from __future__ import annotations

from datetime import timedelta
from importlib.util import find_spec
from statistics import fmean
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

if TYPE_CHECKING:
    from keiko.client import JobEvent
    from service.schemas import JobRead

# The metric shown beside the loss: the first of these an epoch has.
MAIN_METRICS = ("val_accuracy", "val_rmse", "eval_return_mean", "val_loss")


class JobProgress:
    """Feed it a job's events with `update`; draws while entered (`with view:`), and may be
    entered again after a pause (a Ctrl-C question) with its state kept."""

    def __init__(self, job: JobRead, console: Console | None = None) -> None:
        self.console = console or Console()
        self.label = f"job {job.id[:8]}"
        self.reinforcement = job.task == "reinforcement"
        self.status, self.cancelling = job.status, False
        self.said: str | None = None  # the status line printed last
        self.epoch, self.epochs = job.progress.epoch, job.progress.epochs
        self.batch, self.batches = job.progress.batch, job.progress.batches
        self.step, self.steps = job.progress.step or 0, job.progress.steps or 0
        self.latest: dict[str, Any] = job.history[-1].model_dump() if job.history else {}
        self.seconds: dict[int, float] = {}  # epoch -> wall time, for the ETA
        self.steps_per_second: float | None = None
        # rich draws in a notebook through ipywidgets; without it, lines are all that shows.
        notebook = self.console.is_jupyter and find_spec("ipywidgets") is not None
        self.drawn = notebook or (self.console.is_terminal and not self.console.is_dumb_terminal)
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> JobProgress:
        if self.drawn:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[where]}"),
                TextColumn("{task.fields[eta]}"),
                TextColumn("{task.fields[metrics]}"),
                console=self.console,
                refresh_per_second=4,
            )
            self.task = self.bar.add_task(self.description(), where="", eta="", metrics="")
            self.refresh()  # before the first frame, which would otherwise pulse
            self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.stop()
            self.bar = self.task = None

    def update(self, event: JobEvent) -> None:
        data = event.data
        match event.type:
            case "status":
                self.status, self.cancelling = data["status"], bool(data.get("cancel_requested"))
                if self.status != "running":
                    self.batch = None
                if not self.drawn and self.description() != self.said:
                    self.said = self.description()
                    self.say(self.said)
            case "progress":
                self.epoch, self.epochs = data["epoch"], data["epochs"]
                self.batch, self.batches = data.get("batch"), data.get("batches")
                self.step, self.steps = data.get("step") or self.step, data.get("steps") or 0
            case "epoch":
                self.epoch, self.batch, self.latest = data["epoch"], None, data
                self.seconds[data["epoch"]] = float(data.get("seconds") or 0)
                if self.reinforcement:
                    self.step = data.get("step", self.step)
                    self.steps_per_second = data.get("steps_per_second")
                if not self.drawn:
                    self.say(f"{self.label} {self.where()}  {self.metrics()}  {self.eta()}")
            case "rewind":  # resumed from a checkpoint: what came after it is void
                self.epoch, self.batch = data["epoch"], None
                self.seconds = {e: s for e, s in self.seconds.items() if e <= data["epoch"]}
        self.refresh()

    def refresh(self) -> None:
        if self.bar is None or self.task is None:
            return
        total, done = (self.steps, self.step) if self.reinforcement else (self.epochs, self.done())
        if self.status == "succeeded":
            done = total  # early stopping ends a job before its last epoch
        self.bar.update(
            self.task, description=self.description(), total=total or None, completed=done,
            where=self.where(), eta=self.eta(), metrics=self.metrics(),
        )  # fmt: skip

    def done(self) -> float:
        """Epochs done, the running one's finished share included."""
        within = self.batch / self.batches if self.batch and self.batches else 0.0
        return self.epoch + within

    def description(self) -> str:
        status = "cancelling" if self.cancelling and self.status == "running" else self.status
        return f"{self.label} {status}"

    def where(self) -> str:
        if self.reinforcement:
            return f"step {self.step}/{self.steps}"
        if self.batch and self.batches:  # Keras' way: the epoch under way, 1-based
            return f"epoch {self.epoch + 1}/{self.epochs} batch {self.batch}/{self.batches}"
        return f"epoch {self.epoch}/{self.epochs}"

    def eta(self) -> str:
        left: float | None = None
        if self.status != "running":
            return ""
        if self.reinforcement and self.steps_per_second:
            left = max(self.steps - self.step, 0) / self.steps_per_second
        elif not self.reinforcement and self.seconds:
            left = fmean(self.seconds.values()) * max(self.epochs - self.done(), 0.0)
        return f"ETA {timedelta(seconds=round(left))}" if left is not None else "ETA -"

    def metrics(self) -> str:
        shown = []
        if isinstance(loss := self.latest.get("train_loss"), int | float):
            shown.append(f"loss {loss:.4g}")
        for name in MAIN_METRICS:
            if isinstance(value := self.latest.get(name), int | float):
                shown.append(f"{name} {value:.4g}")
                break
        return "  ".join(shown)

    def say(self, line: str) -> None:
        self.console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)
