"""Knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
Network", 2015): a classifier learns from a trained teacher's softened outputs besides the
labels. For each training batch, with T the temperature,

    loss = alpha * T² * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross-entropy(student, labels)

T² keeps the soft term's gradients on the scale of the hard one's as T changes (the
paper's section 2). The teacher is any of the user's classification models, whatever its
kind and preprocessing: each batch the student trains on (augmented or not) is turned back
into the numbers a client would send (`models.fronts.Front.inverse`) and from there into
the teacher's own input (its `Front.module`), so the teacher sees what its predict would
make of the same examples. A table's columns are matched by name, and a string column's
one-hot positions by category; the teacher's classes are put in the student's order.

Without augmentation the teacher's logits are computed once for the whole training part;
with it, for each augmented batch on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from models.base import PreparedData, SpecError, TrainingError
from models.describe import NUMERIC, DataDescription
from models.fronts import Front, input_front
from models.preprocessing import NumericColumn, TabularPreprocessor, validate_columns
from models.specs import DistillationSpec, JobSpec

CACHE_BATCH = 8192


@dataclass(frozen=True)
class Teacher:
    """A trained classification model a job distils from: its network (in eval mode) and
    its bundle's metadata (the stored preprocessing and labels)."""

    model_id: str
    network: nn.Module
    meta: dict[str, Any]


class TeacherRecord(Protocol):
    """What the service's `models` row tells of a teacher before any file is read."""

    @property
    def id(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def input_schema(self) -> dict[str, Any]: ...

    @property
    def output(self) -> dict[str, Any]: ...


def soft_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² * KL(softmax(teacher/T) || softmax(student/T)) for a batch of logits (B, C),
    averaged over the batch."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student / t, dim=-1),
        F.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return kl * (t * t)


def two_logits(out: torch.Tensor) -> torch.Tensor:
    """A single logit z of class 1 (B, 1) as the pair (0, z), whose softmax is
    (1 - sigmoid(z), sigmoid(z)); logits of more classes as they are."""
    if out.shape[-1] == 1:
        return torch.cat([torch.zeros_like(out), out], dim=-1)
    return out


# Checks before a job is recorded (from the dataset's and the teacher's rows) -------------


def check_teacher(description: DataDescription, teacher: TeacherRecord) -> None:
    """Refuse a teacher that cannot teach a student on this data: not a classifier, other
    classes, another shape of input. Raises `SpecError` naming the difference; the worker
    checks again against the stored preprocessing (`teacher_inputs`, `class_order`)."""
    where = f"model.distillation.teacher_model_id: model {teacher.id}"
    if teacher.task != "classification":
        raise SpecError(f"{where} is a {teacher.task} model; a teacher must be a classifier")
    schema = teacher.input_schema
    if description.is_table != ("features" in schema):
        taught = "a table's columns" if "features" in schema else f"arrays {schema.get('shape')}"
        raise SpecError(f"{where} takes {taught}; this dataset is {description.what()}")
    if description.is_table:
        _check_columns(where, description, schema["features"])
    else:
        _check_shape(where, description, schema)
    labels = list(teacher.output.get("labels") or [])
    classes = description.shape.outputs
    if len(labels) != classes:
        raise SpecError(f"{where} was trained on {len(labels)} classes; this dataset has {classes}")
    counts = (description.dataset.shape or {}).get("class_counts")
    if counts and sorted(counts) != sorted(str(label) for label in labels):
        raise SpecError(
            f"{where} was trained on the classes {_listed(labels)}; this dataset's are "
            f"{_listed(sorted(counts))}"
        )


def _check_columns(where: str, description: DataDescription, taught: list[dict[str, Any]]) -> None:
    spec = description.spec
    columns = {c["name"]: c for c in description.dataset.columns or []}
    features = validate_columns(list(columns), target=spec.target, features=spec.features)
    ours = {name: "number" if columns[name]["dtype"] in NUMERIC else "string" for name in features}
    theirs = {f["name"]: f["type"] for f in taught}
    if ours != theirs:
        missing = [name for name in theirs if name not in ours]
        extra = [name for name in ours if name not in theirs]
        typed = [name for name in ours if name in theirs and ours[name] != theirs[name]]
        parts = [
            f"lacks {_listed(missing)}" if missing else "",
            f"has {_listed(extra)} besides" if extra else "",
            f"types {_listed(typed)} otherwise" if typed else "",
        ]
        raise SpecError(
            f"{where} takes the columns {_listed(list(theirs))}; this job's input "
            f"{'; '.join(p for p in parts if p)}"
        )


def _check_shape(where: str, description: DataDescription, schema: dict[str, Any]) -> None:
    image = description.image_shape
    if image is not None and "channels" in schema:  # images either side: compare (C, H, W)
        taught = (schema["channels"], schema["height"], schema["width"])
        if tuple(taught) != image:
            raise SpecError(
                f"{where} takes images of {_chw(taught)}; this dataset's are {_chw(image)}"
            )
        return
    ours, theirs = description.x_shape[1:], [int(d) for d in schema.get("shape", [])]
    if description.form == "sequences":  # the time axis is free
        ours, theirs = ours[1:], theirs[1:]
    if ours != theirs:
        raise SpecError(
            f"{where} takes examples of shape {schema.get('shape')}; this dataset's are "
            f"{description.x_shape[1:]}"
        )


def _chw(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{c} channel{'s' if c != 1 else ''} x {h} x {w}"


def _listed(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:12])
    return f"[{shown}{', ...' if len(values) > 12 else ''}]"


# From the student's batches to the teacher's logits (in the worker) -----------------------


def teacher_inputs(student: dict[str, Any], teacher: dict[str, Any]) -> nn.Module:
    """A module from the student network's inputs (its stored preprocessing `student`
    applied) to the teacher network's (`teacher`): the student's preprocessing undone, a
    table's columns put in the teacher's positions, the teacher's preprocessing applied.
    Raises `TrainingError` when the two were fitted to data of different shapes."""
    ours, theirs = input_front(student), input_front(teacher)
    if ours is None or theirs is None:
        kinds = (student.get("type"), teacher.get("type"))
        raise TrainingError(f"model.distillation: cannot map {kinds[0]} inputs to {kinds[1]}")
    steps: list[nn.Module] = [ours.inverse]
    if student.get("type") == "table" and teacher.get("type") == "table":
        steps.append(_column_map(student, teacher))
    elif "table" in (student.get("type"), teacher.get("type")):
        raise TrainingError(
            "model.distillation: one of the teacher and the student reads a table and the "
            "other does not"
        )
    else:
        _check_same_examples(ours, theirs)
    steps.append(theirs.module)
    return nn.Sequential(*steps)


def _check_same_examples(ours: Front, theirs: Front) -> None:
    free = {ours.time_axis, theirs.time_axis} - {None}
    same = len(ours.shape) == len(theirs.shape) and all(
        a == b
        for axis, (a, b) in enumerate(zip(ours.shape, theirs.shape, strict=True))
        if axis not in free
    )
    if not same:
        raise TrainingError(
            f"model.distillation: the teacher takes examples of shape {theirs.shape}, the "
            f"student's are {ours.shape}"
        )


class ColumnMap(nn.Module):
    """A table's row as one model encodes it (numbers, then one-hot positions, in its own
    column order) -> as another does: numbers by column name, one-hot positions by column
    and category (a category the teacher never saw has no position: all zeros, as at its
    predict). One matrix product."""

    matrix: torch.Tensor

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix


def _column_map(student: dict[str, Any], teacher: dict[str, Any]) -> ColumnMap:
    ours, theirs = TabularPreprocessor.from_json(student), TabularPreprocessor.from_json(teacher)
    positions: dict[tuple[str, Any], int] = {}  # (column, category or None) -> our position
    position = 0
    for column in ours.columns:
        if isinstance(column, NumericColumn):
            positions[(column.name, None)] = position
        else:
            for offset, category in enumerate(column.categories):
                positions[(column.name, category)] = position + offset
        position += len(column.output_names)
    matrix = torch.zeros((len(ours.output_names), len(theirs.output_names)))
    position = 0
    for column in theirs.columns:
        if isinstance(column, NumericColumn):
            if (column.name, None) not in positions:
                raise TrainingError(
                    f"model.distillation: the teacher reads the number column {column.name!r}, "
                    "which the student's data does not have as a number"
                )
            matrix[positions[(column.name, None)], position] = 1.0
        else:
            for offset, category in enumerate(column.categories):
                if (column.name, category) in positions:
                    matrix[positions[(column.name, category)], position + offset] = 1.0
        position += len(column.output_names)
    return ColumnMap(matrix)


def class_order(student: list[Any], teacher: list[Any]) -> torch.Tensor:
    """The teacher's output index of each of the student's classes, in the student's order.
    Raises `TrainingError` when the two were trained on different classes."""
    where = {_key(label): i for i, label in enumerate(teacher)}
    if sorted(where) != sorted(_key(label) for label in student) or len(where) != len(student):
        raise TrainingError(
            f"model.distillation: the teacher was trained on the classes {_listed(teacher)}; "
            f"this dataset's are {_listed(student)}"
        )
    return torch.tensor([where[_key(label)] for label in student], dtype=torch.int64)


def _key(label: Any) -> str:
    return repr(label.item() if hasattr(label, "item") else label)


class Distiller:
    """What the training loop asks of a distillation: the teacher's logits for a batch (in
    the student's class order), and the batch's loss and its two terms."""

    def __init__(self, spec: DistillationSpec, teacher: Teacher, data: PreparedData) -> None:
        device = data.train.x.device
        self.alpha, self.temperature = spec.alpha, spec.temperature
        preprocessing = teacher.meta.get("preprocessing", {})
        self.bridge = nn.Sequential(
            teacher_inputs(data.preprocessing, preprocessing), teacher.network
        ).to(device)
        self.bridge.eval()
        labels = list(data.output.get("labels") or [])
        self.order = class_order(labels, list(teacher.meta["output"]["labels"])).to(device)
        self.cached: torch.Tensor | None = None

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (B, C) for student inputs `x` (no gradient reaches it)."""
        out = two_logits(self.bridge(x).float())
        return out[:, self.order]

    def cache(self, x: torch.Tensor) -> None:
        """Compute the teacher's logits for the whole training part once (inputs that no
        augmentation changes); `batch_logits` then indexes them."""
        parts = [self.logits(x[i : i + CACHE_BATCH]) for i in range(0, len(x), CACHE_BATCH)]
        self.cached = torch.cat(parts)

    def batch_logits(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the batch `x`, the training rows `rows`."""
        return self.cached[rows] if self.cached is not None else self.logits(x)

    def soft_loss(self, out: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """T² * KL(softmax(teacher/T) || softmax(out/T)) for the student's logits `out`
        (B, C) or (B, 1); the hard term is the student's own cross-entropy."""
        return soft_term(two_logits(out.float()), teacher, self.temperature)


def distiller_for(spec: JobSpec, teacher: Teacher | None, data: PreparedData) -> Distiller | None:
    """The job's distillation from `teacher` (the model its `model.distillation` names,
    loaded), or None when it distils nothing."""
    distillation = getattr(spec.model, "distillation", None)
    if distillation is None:
        return None
    if teacher is None:
        raise TrainingError("model.distillation: the teacher model could not be loaded")
    return Distiller(distillation, teacher, data)
