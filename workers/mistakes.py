"""After an image classifier trains: the test images it gets wrong, kept beside the job's
checkpoints (jobs/<id>/mistakes.json) for the job page's gallery."""

from __future__ import annotations

import logging

from models.base import PreparedData, TrainResult
from models.gallery import find_mistakes, mistakes_files
from models.specs import TrainingSpec
from service.storage import ArtifactStore, job_key

log = logging.getLogger(__name__)


def record_mistakes(
    store: ArtifactStore,
    job_id: str,
    result: TrainResult,
    data: PreparedData | None,
    training: TrainingSpec,
) -> None:
    """Best effort: a gallery that cannot be made is logged, and never fails the job."""
    if data is None:
        return
    try:
        found = find_mistakes(result.network, data, training=training, outputs=result.outputs)
        if found is not None:
            for name, body in mistakes_files(found).items():
                store.put_bytes(job_key(job_id, name), body)
    except Exception:
        log.exception("job %s: the gallery of mistakes could not be made", job_id)
