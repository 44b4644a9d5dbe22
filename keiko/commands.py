"""The command groups: `keiko datasets`, `jobs`, `models` and `config`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from keiko.follow import follow_job
from keiko.shell import JsonFlag, Limit, Offset, client, connection, emit, note, out, present

if TYPE_CHECKING:
    from service.schemas import JobStatus

datasets_app = typer.Typer(help="Upload, list, show and delete datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show, follow, compare and cancel jobs.", no_args_is_help=True)
models_app = typer.Typer(help="List, show, export and delete models.", no_args_is_help=True)
config_app = typer.Typer(help="The API's address and key, kept in a file.", no_args_is_help=True)


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


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    pruned = "pruned"


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
