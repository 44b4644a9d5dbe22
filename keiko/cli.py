"""`keiko`: Keiko from a terminal, a thin layer over `keiko.client`.

Tables for people, `--json` for scripts. The client (and with it the API's pydantic models
and PyTorch) is imported inside the commands, so that `keiko --help` and a mistyped
argument answer at once.

Exit codes: 0 done (a followed job succeeded), 1 a followed job failed, 2 a followed job was
cancelled (and, as in every click program, a command line that does not parse), 3 the API
refused or could not be reached, or a local file could not be used, 130 Ctrl-C left a
followed job running."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from rich.console import Console

from keiko.errors import APIError, InputFileError, KeikoError

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.table import Table

    from keiko.client import Keiko
    from service.schemas import JobStatus

EXIT_ERROR = 3
EXIT_LEFT_RUNNING = 130
T = TypeVar("T", bound="BaseModel | dict[str, Any]")
OUTCOMES = {"succeeded": 0, "failed": 1, "cancelled": 2}

app = typer.Typer(
    name="keiko",
    help="Train and serve PyTorch models on a Keiko API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a traceback's locals would show the API key
)
datasets_app = typer.Typer(help="Upload, list, show and delete datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show, follow, compare and cancel jobs.", no_args_is_help=True)
models_app = typer.Typer(help="List, show, export and delete models.", no_args_is_help=True)
config_app = typer.Typer(help="The API's address and key, kept in a file.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

out = Console()
notes = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts), not tables.")]
Limit = Annotated[int, typer.Option(min=1, max=500, help="At most this many.")]
Offset = Annotated[int, typer.Option(min=0, help="Skip this many (newest first).")]


@dataclass
class Connection:
    url: str | None = None
    key: str | None = None


connection = Connection()


@app.callback()
def connect(
    url: Annotated[
        str | None,
        typer.Option(envvar="KEIKO_URL", help="The API's address (default: the config file's, "
                     "else http://127.0.0.1:8000)."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(envvar="KEIKO_API_KEY", help="An API key (default: the config file's)."),
    ] = None,
) -> None:  # fmt: skip
    """Options before the command: `keiko --url http://host:8000 jobs list`."""
    connection.url, connection.key = url, key


def client() -> Keiko:
    from keiko.client import Keiko

    return Keiko(connection.url, connection.key)


def main() -> None:
    """The console script: an error from the API or a local file is one line and exit 3."""
    try:
        app()
    except KeikoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def note(text: str) -> None:
    """A message for the person at the terminal, on stderr, never wrapped."""
    notes.print(text, highlight=False, markup=False, soft_wrap=True)


def emit(value: BaseModel | dict[str, Any]) -> None:
    """JSON on stdout, unwrapped and uncoloured."""
    data = value if isinstance(value, dict) else value.model_dump(mode="json")
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def present(value: T, as_json: bool, tables: Callable[[T], Table | list[Table]]) -> None:
    """`value` as JSON for a script, else as a person reads it."""
    if as_json:
        emit(value)
        return
    drawn = tables(value)
    for table in drawn if isinstance(drawn, list) else [drawn]:
        show(table)


def show(table: Table) -> None:
    """A table in the terminal's width (its ids are never cut), or at its natural width
    into a pipe or a file, where nothing would wrap it."""
    from rich.measure import Measurement

    if out.is_terminal:
        out.print(table)
    else:
        natural = Measurement.get(out, out.options.update_width(10_000), table).maximum
        Console(width=max(out.width, natural)).print(table)


# Datasets ----------------------------------------------------------------------------------


@datasets_app.command("upload")
def datasets_upload(
    files: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet, NPZ, a zip/tar of "
                       "images, or MNIST's IDX image and label files together."),
    ],
    name: Annotated[str | None, typer.Option(help="Display name (default: the file's).")] = None,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Upload one dataset (several files make one dataset)."""
    from keiko import render

    with client() as keiko:
        dataset = keiko.upload(*files, name=name)
    present(dataset, as_json, render.dataset_tables)


@datasets_app.command("list")
def datasets_list(limit: Limit = 50, offset: Offset = 0, as_json: JsonFlag = False) -> None:
    """Your datasets, newest first."""
    from keiko import render

    with client() as keiko:
        page = keiko.datasets(limit=limit, offset=offset)
    present(page, as_json, render.datasets_table)


@datasets_app.command("show")
def datasets_show(dataset_id: str, as_json: JsonFlag = False) -> None:
    """A dataset's columns (tables) or shapes (arrays, images)."""
    from keiko import render

    with client() as keiko:
        dataset = keiko.dataset(dataset_id)
    present(dataset, as_json, render.dataset_tables)


@datasets_app.command("delete")
def datasets_delete(dataset_id: str) -> None:
    """Delete a dataset and its file (refused while a job uses it)."""
    with client() as keiko:
        keiko.delete_dataset(dataset_id)
    note(f"dataset {dataset_id} deleted")


# Jobs --------------------------------------------------------------------------------------


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="A job spec: JSON, or YAML.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="A file to upload first, or a dataset id; replaces the spec's "
                     "dataset_id."),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Show the job's progress until it ends; the exit "
                     "code says how it ended (0 succeeded, 1 failed, 2 cancelled)."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Start a training job."""
    from keiko import render

    with client() as keiko:
        if dataset is not None and Path(dataset).is_file():
            uploaded = keiko.upload(dataset)
            note(f"dataset {uploaded.id} uploaded from {dataset}")
            dataset = uploaded.id
        job = keiko.train(spec, dataset=dataset)
        if not follow:
            assert job.submitted is not None
            present(job.submitted, as_json, render.job_tables)
            return
        note(f"job {job.id} queued")
        raise typer.Exit(follow_job(keiko, job.id, as_json))


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


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


@jobs_app.command("list")
def jobs_list(
    status: Annotated[Status | None, typer.Option(help="Only jobs with this status.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    as_json: JsonFlag = False,
) -> None:
    """Your jobs, newest first."""
    from keiko import render

    with client() as keiko:
        chosen = cast("JobStatus", status.value) if status is not None else None
        page = keiko.jobs(status=chosen, limit=limit, offset=offset)
    present(page, as_json, render.jobs_table)


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: JsonFlag = False) -> None:
    """A job's status, progress, error and final metrics (--json: its history too)."""
    from keiko import render

    with client() as keiko:
        job = keiko.job(job_id).read(history="all" if as_json else "none")
    present(job, as_json, render.job_tables)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, as_json: JsonFlag = False) -> None:
    """Cancel a job: a queued one at once, a running one within about a second."""
    with client() as keiko:
        job = keiko.job(job_id).cancel()
    if as_json:
        emit(job)
    else:
        note(f"job {job_id}: cancel requested")


@jobs_app.command("watch")
def jobs_watch(job_id: str, as_json: JsonFlag = False) -> None:
    """Follow a job to its end, as `train --follow` does (the same exit codes)."""
    with client() as keiko:
        raise typer.Exit(follow_job(keiko, job_id, as_json))


@jobs_app.command("compare")
def jobs_compare(
    job_ids: Annotated[list[str], typer.Argument(help="Two or more job ids.")],
    as_json: JsonFlag = False,
) -> None:
    """Final metrics side by side, and the spec fields that differ."""
    from keiko import render

    if len(job_ids) < 2:
        raise typer.BadParameter("compare needs two or more job ids", param_hint="JOB_IDS")
    with client() as keiko:
        jobs = [keiko.job(job_id).read(history="none", checkpoints=False) for job_id in job_ids]
    compared = render.comparison(jobs)
    present(compared, as_json, render.comparison_tables)


# Models ------------------------------------------------------------------------------------


@app.command()
def predict(
    model_id: str,
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--input", "-i", exists=True, dir_okay=False,
                     help="A CSV of rows (one record each), PNG/JPEG images (image models; "
                     "repeat the option), or a JSON list of inputs."),
    ] = None,
    inline: Annotated[
        str | None,
        typer.Option("--inputs", help="Inputs as JSON: a list of records, arrays or "
                     "observations, or one record."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Predict with a trained model."""
    from keiko import render
    from keiko.files import is_image, parse_inputs, read_csv

    files = inputs or []
    if bool(files) == (inline is not None):
        raise typer.BadParameter("give --input FILE... or --inputs JSON, not both or neither")
    images = [path for path in files if is_image(path)]
    if images and len(images) < len(files):
        raise typer.BadParameter("images and other files cannot go in one call")
    names: list[str] = [path.name for path in images]
    rows: list[Any] = []
    if inline is not None:
        rows = parse_inputs(inline)
    for path in files if not images else []:
        if path.suffix.lower() == ".json":
            found = parse_inputs(path.read_text(encoding="utf-8"))
        elif path.suffix.lower() == ".csv":
            found = read_csv(path)
        else:
            raise InputFileError(f"{path}: expected .csv, .json, .png or .jpg")
        names += [f"{path.name}:{i}" for i in range(1, len(found) + 1)]
        rows += found
    with client() as keiko:
        answer = keiko.predict_files(model_id, images) if images else keiko.predict(model_id, rows)
    present(answer, as_json, lambda found: render.predictions_table(found, names))


@app.command()
def rollout(
    model_id: str,
    episodes: Annotated[int, typer.Option(min=1, max=100, help="Episodes to play.")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Episode k starts from seed + k.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Play episodes with a trained policy (dqn, q_learning, sarsa)."""
    from keiko import render

    with client() as keiko:
        answer = keiko.rollout(model_id, episodes=episodes, seed=seed)
    present(answer, as_json, render.rollout_table)


@models_app.command("list")
def models_list(limit: Limit = 50, offset: Offset = 0, as_json: JsonFlag = False) -> None:
    """Your models, newest first."""
    from keiko import render

    with client() as keiko:
        page = keiko.models(limit=limit, offset=offset)
    present(page, as_json, render.models_table)


@models_app.command("show")
def models_show(model_id: str, as_json: JsonFlag = False) -> None:
    """A model's input schema, labels and metrics."""
    from keiko import render

    with client() as keiko:
        model = keiko.model(model_id)
    present(model, as_json, render.model_tables)


@models_app.command("export")
def models_export(
    model_id: str,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="A file, or a folder for the API's file name "
                     "(keiko-<kind>-<id>.onnx; default: the current folder)."),
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="The file format.")] = "onnx",
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Download a model as an ONNX file."""
    with client() as keiko:
        path = keiko.export(model_id, output, file_format=file_format)
    if as_json:
        emit({"model_id": model_id, "path": str(path), "bytes": path.stat().st_size})
    else:
        note(f"model {model_id} exported to {path}")


@models_app.command("delete")
def models_delete(model_id: str) -> None:
    """Delete a model and its file; its job stays."""
    with client() as keiko:
        keiko.delete_model(model_id)
    note(f"model {model_id} deleted")


# Config ------------------------------------------------------------------------------------


class Setting(StrEnum):
    url = "url"
    key = "key"


@config_app.command("set")
def config_set(
    setting: Setting,
    value: Annotated[
        str | None, typer.Argument(help="The value (default: asked for, hidden for a key).")
    ] = None,
) -> None:
    """Keep the API's address or key in the config file (flags and KEIKO_URL /
    KEIKO_API_KEY still come first)."""
    from keiko.config import write_config

    if value is None:
        value = typer.prompt(setting.value, hide_input=setting is Setting.key)
    path = write_config(setting.value, value)
    note(f"{setting.value} saved in {path}")


@config_app.command("unset")
def config_unset(setting: Setting) -> None:
    """Remove a setting from the config file."""
    from keiko.config import write_config

    path = write_config(setting.value, None)
    note(f"{setting.value} removed from {path}")


@config_app.command("show")
def config_show(as_json: JsonFlag = False) -> None:
    """The address and key in use (the key shortened), and the config file's path."""
    from keiko.config import config_path, resolve

    used = resolve(connection.url, connection.key)
    key = f"{used.key[:12]}..." if used.key else None
    shown = {"url": used.url, "key": key, "config_file": str(config_path())}
    if as_json:
        emit(shown)
        return
    for name, value in shown.items():
        out.print(f"{name}: {value or '-'}", highlight=False)
