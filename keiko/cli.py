"""`keiko`: Keiko from a terminal, a thin layer over `keiko.client`.

Tables for people, `--json` for scripts. The client (and with it the API's pydantic models
and PyTorch) is imported inside the commands, so that `keiko --help` and a mistyped
argument answer at once.

Exit codes: 0 done (a followed job succeeded), 1 a followed job failed, 2 a followed job was
cancelled (and, as in every click program, a command line that does not parse), 3 the API
refused or could not be reached, or a local file could not be used, 130 Ctrl-C left a
followed job running."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keiko.commands import config_app, datasets_app, jobs_app, models_app
from keiko.errors import InputFileError, KeikoError
from keiko.follow import follow_job
from keiko.shell import JsonFlag, client, connection, note, present

EXIT_ERROR = 3

app = typer.Typer(
    name="keiko",
    help="Train and serve PyTorch models on a Keiko API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a traceback's locals would show the API key
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")


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


def main() -> None:
    """The console script: an error from the API or a local file is one line and exit 3."""
    try:
        app()
    except KeikoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


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
