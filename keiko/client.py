"""Keiko's Python client: the REST API over httpx, its answers typed with the API's own
pydantic models, and a job's event stream as an iterator that outlives API restarts.

    from keiko.client import Keiko

    keiko = Keiko()  # KEIKO_URL / KEIKO_API_KEY, else the config file, else 127.0.0.1:8000
    job = keiko.train("spec.yaml", dataset="iris.csv")
    result = job.wait(progress=True)
    keiko.predict(result.model_id, [{"sepal_length": 5.1, ...}])
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
from httpx_sse import connect_sse

from keiko.config import resolve
from keiko.errors import APIError, KeikoError, Unreachable
from keiko.files import load_spec
from models.specs import JobSpec
from service.schemas import (
    DatasetRead,
    JobRead,
    JobStatus,
    JobSummary,
    ModelRead,
    Page,
    PredictResponse,
    RolloutResponse,
)

if TYPE_CHECKING:
    from rich.console import Console

FINISHED = frozenset({"succeeded", "failed", "cancelled", "pruned"})
# A proxy in front of a restarting API answers these; the stream is retried like a reset.
RETRY_STATUSES = frozenset({502, 503, 504})
# Reads on a stream: the API pings every 15 s, so a minute of silence is a dead connection.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)
# An upload is answered once the API has parsed the whole file: minutes for a large one.
UPLOAD_TIMEOUT = httpx.Timeout(60.0, read=600.0)


def _api_error(response: httpx.Response) -> APIError:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text.strip() or response.reason_phrase
    return APIError(response.status_code, detail)


@dataclass(frozen=True)
class JobEvent:
    """One event of `GET /jobs/{id}/events`: `type` is status, epoch, progress, checkpoint or
    rewind, `data` its JSON (README, "Watching a job from code")."""

    id: str
    type: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.type == "status" and self.data.get("status") in FINISHED


class Job:
    """A handle on one job; nothing is fetched until asked."""

    def __init__(self, client: Keiko, job_id: str, submitted: JobRead | None = None) -> None:
        self.client = client
        self.id = job_id
        self.submitted = submitted  # POST /jobs's answer, for a job this client started

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def read(self, *, history: str = "all", checkpoints: bool = True) -> JobRead:
        """The job now; `history` is `all`, `none` or `last:N`."""
        params = {"history": history, "checkpoints": "all" if checkpoints else "none"}
        return JobRead.model_validate(self.client.get_json(f"/jobs/{self.id}", params=params))

    def cancel(self) -> JobRead:
        return JobRead.model_validate(self.client.send("POST", f"/jobs/{self.id}/cancel").json())

    def events(self, *, after: str | None = None) -> Iterator[JobEvent]:
        """Every event from the start (or after the event id `after`) until the final status.
        A dropped connection or a restarted API is reconnected with `Last-Event-ID`, so
        nothing is missed or seen twice; after `reconnect_seconds` without an answer the
        iterator raises `Unreachable`."""
        last, failing_since, delay = after, None, 0.2
        while True:
            received = 0
            try:
                for event in self._stream(last):
                    last, received, failing_since, delay = event.id, received + 1, None, 0.2
                    yield event
                    if event.final:
                        return
                # The stream ended before the final status (the API shut down): go on from
                # `last`, unless the job had finished before this stream began.
                if not received and self.read(history="none", checkpoints=False).status in FINISHED:
                    return
                failing_since = None
            except (httpx.TransportError, Unreachable) as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self.client.reconnect_seconds:
                    raise Unreachable(
                        f"lost the event stream of job {self.id} at {self.client.url} and "
                        f"could not reconnect for {self.client.reconnect_seconds:.0f} s: "
                        f"{str(exc) or type(exc).__name__}"
                    ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _stream(self, last: str | None) -> Iterator[JobEvent]:
        """One connection's events; an error answer raises `APIError`, a lost connection
        httpx's TransportError."""
        headers = {"Last-Event-ID": last} if last else {}
        with connect_sse(
            self.client.http, "GET", f"/jobs/{self.id}/events", headers=headers,
            timeout=STREAM_TIMEOUT,
        ) as source:  # fmt: skip
            if source.response.status_code in RETRY_STATUSES:
                raise httpx.TransportError(f"HTTP {source.response.status_code}")
            if source.response.is_error:
                source.response.read()
                raise _api_error(source.response)
            for sse in source.iter_sse():
                yield JobEvent(sse.id, sse.event, sse.json())

    def wait(self, *, progress: bool = False, console: Console | None = None) -> JobRead:
        """Follow the job to its end and return it; `progress` draws a bar (rich: in a
        terminal or a notebook; a line per epoch elsewhere)."""
        if progress:
            from keiko.progress import JobProgress

            view = JobProgress(self.read(history="last:1", checkpoints=False), console)
            with view:
                for event in self.events():
                    view.update(event)
        else:
            for _ in self.events():
                pass
        return self.read()


class Keiko:
    """A connection to one Keiko API, as one user (or the admin key)."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        reconnect_seconds: float = 120.0,
    ) -> None:
        connection = resolve(url, key)
        self.url = connection.url
        self.reconnect_seconds = reconnect_seconds
        headers = {"User-Agent": "keiko-client"}
        if connection.key:
            headers["Authorization"] = f"Bearer {connection.key}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Keiko:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # Transport -------------------------------------------------------------------------

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; an error answer raises `APIError`, no answer `Unreachable`."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise Unreachable(f"cannot reach the Keiko API at {self.url}: {reason}") from exc
        if response.is_error:
            raise _api_error(response)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.send("GET", path, **kwargs).json()

    # Datasets --------------------------------------------------------------------------

    def upload(self, *paths: str | PathLike[str], name: str | None = None) -> DatasetRead:
        """One dataset from one file, or from several (MNIST's image and label files)."""
        if not paths:
            raise KeikoError("upload needs at least one file")
        opened: list[IO[bytes]] = []
        try:
            for path in map(Path, paths):
                try:
                    opened.append(path.open("rb"))
                except OSError as exc:
                    raise KeikoError(f"{path}: {exc.strerror}") from exc
            files = [("file", (Path(f.name).name, f)) for f in opened]
            data = {"name": name} if name else {}
            response = self.send(
                "POST", "/datasets", files=files, data=data, timeout=UPLOAD_TIMEOUT
            )
        finally:
            for file in opened:
                file.close()
        return DatasetRead.model_validate(response.json())

    def datasets(self, *, limit: int = 50, offset: int = 0) -> Page[DatasetRead]:
        answer = self.get_json("/datasets", params={"limit": limit, "offset": offset})
        return Page[DatasetRead].model_validate(answer)

    def dataset(self, dataset_id: str) -> DatasetRead:
        return DatasetRead.model_validate(self.get_json(f"/datasets/{dataset_id}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self.send("DELETE", f"/datasets/{dataset_id}")

    # Jobs ------------------------------------------------------------------------------

    def train(
        self,
        spec: JobSpec | Mapping[str, Any] | str | PathLike[str],
        *,
        dataset: str | PathLike[str] | None = None,
    ) -> Job:
        """Start a job from a spec (a mapping, a JobSpec, or a JSON/YAML file). `dataset`,
        a file (uploaded first) or a dataset id, replaces the spec's `dataset_id`."""
        if isinstance(spec, JobSpec):
            body = spec.model_dump(mode="json")
        elif isinstance(spec, Mapping):
            body = dict(spec)
        else:
            body = load_spec(spec)
        if dataset is not None:
            body["dataset_id"] = (
                self.upload(dataset).id if Path(dataset).is_file() else str(dataset)
            )
        submitted = JobRead.model_validate(self.send("POST", "/jobs", json=body).json())
        return Job(self, submitted.id, submitted)

    def job(self, job_id: str) -> Job:
        return Job(self, job_id)

    def jobs(
        self, *, status: JobStatus | None = None, limit: int = 50, offset: int = 0
    ) -> Page[JobSummary]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return Page[JobSummary].model_validate(self.get_json("/jobs", params=params))

    # Models ----------------------------------------------------------------------------

    def models(self, *, limit: int = 50, offset: int = 0) -> Page[ModelRead]:
        answer = self.get_json("/models", params={"limit": limit, "offset": offset})
        return Page[ModelRead].model_validate(answer)

    def model(self, model_id: str) -> ModelRead:
        return ModelRead.model_validate(self.get_json(f"/models/{model_id}"))

    def delete_model(self, model_id: str) -> None:
        self.send("DELETE", f"/models/{model_id}")

    def predict(self, model_id: str, inputs: Sequence[Any]) -> PredictResponse:
        """Records or arrays (tables), nested arrays or base64 images, observations."""
        body = {"model_id": model_id, "inputs": list(inputs)}
        return PredictResponse.model_validate(self.send("POST", "/predict", json=body).json())

    def predict_files(self, model_id: str, paths: Sequence[str | PathLike[str]]) -> PredictResponse:
        """PNG or JPEG files, for image models."""
        try:
            parts = [("file", (Path(p).name, Path(p).read_bytes())) for p in paths]
        except OSError as exc:
            raise KeikoError(f"{exc.filename}: {exc.strerror}") from exc
        response = self.send("POST", "/predict/files", data={"model_id": model_id}, files=parts)
        return PredictResponse.model_validate(response.json())

    def rollout(self, model_id: str, *, episodes: int = 1, seed: int = 0) -> RolloutResponse:
        body = {"episodes": episodes, "seed": seed}
        response = self.send("POST", f"/models/{model_id}/rollout", json=body)
        return RolloutResponse.model_validate(response.json())

    def export(
        self, model_id: str, to: str | PathLike[str] | None = None, *, file_format: str = "onnx"
    ) -> Path:
        """Write the model's ONNX file to `to` (a file, or a folder for the API's file name,
        `keiko-<kind>-<id>.onnx`; default: the current folder) and return its path."""
        response = self.send("GET", f"/models/{model_id}/export", params={"format": file_format})
        named = re.search(r'filename="([^"/\\]+)"', response.headers.get("content-disposition", ""))
        filename = named.group(1) if named else f"keiko-{model_id}.{file_format}"
        target = Path(to) if to is not None else Path.cwd()
        if target.is_dir():
            target = target / filename
        target.write_bytes(response.content)
        return target
