"""The artifact store: a folder (by default data_dir/artifacts) holding dataset files,
checkpoints and models. SQL rows keep paths relative to its root."""

from __future__ import annotations

import shutil
from pathlib import Path


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, relative: str) -> Path:
        resolved = (self.root / relative).resolve()
        if not resolved.is_relative_to(self.root):
            raise ValueError(f"artifact path escapes the store: {relative!r}")
        return resolved

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def incoming_dir(self) -> Path:
        folder = self.root / "incoming"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def dataset_path(self, dataset_id: str, fmt: str) -> Path:
        folder = self.root / "datasets"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{dataset_id}.{fmt}"

    def job_dir(self, job_id: str) -> Path:
        folder = self.root / "jobs" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def model_dir(self, model_id: str) -> Path:
        folder = self.root / "models" / model_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def delete(self, relative: str) -> None:
        target = self.path(relative)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
