"""What the command line shows a person: rich tables of the API's answers, and the
comparison of jobs (final metrics side by side, the spec fields that differ)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from service.schemas import (
        DatasetRead,
        JobRead,
        JobSummary,
        ModelRead,
        Page,
        PredictResponse,
        RolloutResponse,
    )


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def id_column(table: Table, name: str = "id") -> None:
    """Ids are copied into the next command: never cut or wrapped."""
    table.add_column(name, no_wrap=True, min_width=32)


def key_values(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value if isinstance(value, str) else number(value))
    return table


def datasets_table(page: Page[DatasetRead]) -> Table:
    table = Table(title=f"datasets ({len(page.items)} of {page.total})", title_justify="left")
    id_column(table)
    for column in ("name", "format", "rows", "size", "created"):
        table.add_column(column)
    for d in page.items:
        size = f"{d.size_bytes / 1e6:.2f} MB" if d.size_bytes >= 10**5 else f"{d.size_bytes} B"
        table.add_row(d.id, d.name, d.format, str(d.num_rows), size, when(d.created_at))
    return table


def dataset_tables(d: DatasetRead) -> list[Table]:
    shown = [("id", d.id), ("name", d.name), ("format", d.format), ("file", d.filename),
             ("rows", d.num_rows), ("bytes", d.size_bytes), ("sha256", d.sha256),
             ("created", when(d.created_at))]  # fmt: skip
    if d.shape:
        shown += [(name, json.dumps(value)) for name, value in d.shape.items()]
    tables = [key_values(f"dataset {d.id}", shown)]
    if d.columns:
        columns = Table(title="columns", title_justify="left")
        for name in ("name", "dtype", "missing", "unique"):
            columns.add_column(name)
        for c in d.columns:
            # Past 100,000 distinct values the count is an estimate: shown as one.
            unique = str(c.unique) if c.unique_exact else f"≈ {c.unique}"
            columns.add_row(c.name, c.dtype, str(c.missing), unique)
        tables.append(columns)
    return tables


def jobs_table(page: Page[JobSummary]) -> Table:
    table = Table(title=f"jobs ({len(page.items)} of {page.total})", title_justify="left")
    id_column(table)
    for column in ("status", "kind", "task", "progress", "main metric"):
        table.add_column(column)
    id_column(table, "model")
    table.add_column("created")
    for j in page.items:
        metric = f"{j.main_metric.name} {number(j.main_metric.value)}" if j.main_metric else "-"
        progress = f"{j.progress.epoch}/{j.progress.epochs} ({j.progress.fraction:.0%})"
        table.add_row(j.id, j.status, j.kind, j.task, progress, metric, j.model_id or "-",
                      when(j.created_at))  # fmt: skip
    return table


def job_tables(job: JobRead) -> list[Table]:
    shown = [("id", job.id), ("status", job.status), ("kind", job.kind), ("task", job.task),
             ("dataset", job.dataset_id or "-"),
             ("progress", f"{job.progress.epoch}/{job.progress.epochs} epochs"),
             ("model", job.model_id or "-"), ("device", job.device or "-"),
             ("attempts", job.attempts), ("created", when(job.created_at)),
             ("finished", when(job.finished_at))]  # fmt: skip
    if job.error is not None:
        shown.append(("error", f"{job.error.type}: {job.error.message}"))
    tables = [key_values(f"job {job.id}", shown)]
    if job.metrics:
        tables.append(metrics_table(job.metrics))
    return tables


def final_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The scalar final metrics by part (train, validation, test; RL: evaluation); lists
    such as the confusion matrix are left to --json."""
    parts: dict[str, dict[str, Any]] = {}
    for part, values in metrics.items():
        if isinstance(values, dict):
            scalars = {k: v for k, v in values.items() if v is None or _scalar(v)}
            if scalars:
                parts[part] = scalars
        elif _scalar(values):
            parts.setdefault("", {})[part] = values
    return parts


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str) and not isinstance(value, bool)


def metrics_table(metrics: dict[str, Any]) -> Table:
    parts = final_metrics(metrics)
    table = Table(title="final metrics", title_justify="left")
    table.add_column("metric", style="bold")
    for part in parts:
        table.add_column(part or "value", justify="right")
    names = list(dict.fromkeys(name for values in parts.values() for name in values))
    for name in names:
        table.add_row(name, *(number(values.get(name)) for values in parts.values()))
    return table


def models_table(page: Page[ModelRead]) -> Table:
    table = Table(title=f"models ({len(page.items)} of {page.total})", title_justify="left")
    id_column(table)
    for column in ("kind", "task"):
        table.add_column(column)
    id_column(table, "job")
    table.add_column("created")
    for m in page.items:
        table.add_row(m.id, m.kind, m.task, m.job_id or "-", when(m.created_at))
    return table


def model_tables(m: ModelRead) -> list[Table]:
    shown = [("id", m.id), ("kind", m.kind), ("task", m.task), ("job", m.job_id or "-"),
             ("created", when(m.created_at)), ("input", json.dumps(m.input_schema)),
             ("output", json.dumps(m.output))]  # fmt: skip
    return [key_values(f"model {m.id}", shown), metrics_table(m.metrics)]


def predictions_table(answer: PredictResponse, names: Sequence[str]) -> Table:
    """One row per input: its name (a file, or its row), the prediction, and the class
    probability or the actions' Q-values."""
    table = Table(title="predictions", title_justify="left")
    table.add_column("input")
    table.add_column("prediction")
    if answer.probabilities is not None:
        table.add_column("probability", justify="right")
    if answer.q_values is not None:
        table.add_column("q_values")
    for i, prediction in enumerate(answer.predictions):
        row = [names[i] if i < len(names) else str(i + 1), _value(prediction)]
        if answer.probabilities is not None:
            row.append(f"{max(answer.probabilities[i]):.4f}")
        if answer.q_values is not None:
            row.append(" ".join(f"{q:.4g}" for q in answer.q_values[i]))
        table.add_row(*row)
    return table


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return number(value)


def rollout_table(answer: RolloutResponse) -> Table:
    table = Table(title="rollout", title_justify="left")
    for column in ("episode", "return", "length"):
        table.add_column(column, justify="right")
    for i, (ret, length) in enumerate(zip(answer.returns, answer.lengths, strict=True)):
        table.add_row(str(i), number(ret), str(length))
    return table


# Comparing jobs ----------------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested spec as dotted paths (`training.epochs`); lists stay whole."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(flatten(inner, f"{prefix}.{key}" if prefix else key))
    return flat


def comparison(jobs: Sequence[JobRead]) -> dict[str, Any]:
    """The final metrics side by side (`part/name` -> one value per job) and the spec fields
    whose values differ between the jobs (a missing field is None)."""
    metrics: dict[str, list[Any]] = {}
    for i, job in enumerate(jobs):
        for part, scalars in final_metrics(job.metrics or {}).items():
            for name, value in scalars.items():
                row = metrics.setdefault(f"{part}/{name}" if part else name, [None] * len(jobs))
                row[i] = value
    specs = [flatten(job.spec.model_dump(mode="json")) for job in jobs]
    differences: dict[str, list[Any]] = {}
    for path in dict.fromkeys(path for spec in specs for path in spec):
        values = [spec.get(path) for spec in specs]
        if len({json.dumps(value, sort_keys=True) for value in values}) > 1:
            differences[path] = values
    return {
        "jobs": [job.id for job in jobs],
        "status": [job.status for job in jobs],
        "metrics": metrics,
        "spec_differences": differences,
    }


def comparison_tables(compared: dict[str, Any]) -> list[Table]:
    ids = compared["jobs"]
    tables = []
    metrics = Table(title="final metrics", title_justify="left")
    metrics.add_column("metric", style="bold")
    for job_id in ids:
        metrics.add_column(job_id[:8], justify="right")
    metrics.add_row("status", *compared["status"])
    for name, values in compared["metrics"].items():
        metrics.add_row(name, *(number(v) for v in values))
    tables.append(metrics)
    spec = Table(title="spec differences", title_justify="left")
    spec.add_column("field", style="bold")
    for job_id in ids:
        spec.add_column(job_id[:8])
    for path, values in compared["spec_differences"].items():
        spec.add_row(path, *(json.dumps(v) if not isinstance(v, str) else v for v in values))
    if not compared["spec_differences"]:
        spec.add_row("(the specs are the same)", *([""] * len(ids)))
    tables.append(spec)
    return tables
