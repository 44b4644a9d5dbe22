"""Knowledge distillation: the soft term against a hand computation, the teacher's inputs
made from the student's batches as the teacher's own predict would make them, its classes
put in the student's order, and the loop's loss, history and resume with a teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_iris

from models.base import Cancelled, PreparedData, Released, TrainingError, TrainResult
from models.checkpoint import load_checkpoint
from models.distillation import Teacher, class_order, soft_term, teacher_inputs
from models.fronts import input_front
from models.image_preprocessing import ImagePreprocessor
from models.prepare import DataSource, load_input_encoder, prepare_data
from models.preprocessing import ArrayPreprocessor, TabularPreprocessor
from models.registry import get_kind
from models.sequences import SequencePreprocessor
from models.specs import JobSpec
from tests.unit.reporting import MemoryReporter


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_soft_term_is_t_squared_times_the_kl_divergence_of_softened_outputs() -> None:
    rng = np.random.default_rng(0)
    student, teacher, t = rng.normal(size=(5, 4)) * 3, rng.normal(size=(5, 4)) * 3, 2.5
    p, q = softmax(teacher / t), softmax(student / t)
    by_hand = t * t * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    got = soft_term(torch.tensor(student), torch.tensor(teacher), t)
    assert float(got) == pytest.approx(by_hand, rel=1e-12)
    assert float(soft_term(torch.tensor(teacher), torch.tensor(teacher), t)) == pytest.approx(0)


# The teacher's inputs ---------------------------------------------------------------------


def table(rows: pd.DataFrame, features: list[str]) -> dict[str, Any]:
    encoder = TabularPreprocessor.fit(rows, features=features)
    return {"type": "table", **encoder.to_json()}


def test_a_tables_columns_reach_the_teacher_by_name_and_category() -> None:
    """The teacher read the columns in another order, with statistics of other rows and a
    vocabulary without 'blue': the student's encoding, mapped, is what the teacher's own
    predict makes of the same records (an unseen category: all zeros)."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "a": rng.normal(5, 2, 60),
            "b": rng.normal(-3, 0.5, 60),
            "colour": rng.choice(["red", "green", "blue"], 60),
        }
    )
    student = table(frame, ["a", "b", "colour"])
    theirs = frame[frame["colour"] != "blue"].iloc[:30]
    teacher = table(theirs, ["colour", "b", "a"])
    records = frame.iloc[:12].to_dict("records")
    records[0]["a"] = None  # missing: the student's mean, then the teacher's encoding of it
    ours = torch.from_numpy(load_input_encoder(student).encode(records))
    want = load_input_encoder(teacher).encode(records)
    got = teacher_inputs(student, teacher)(ours).numpy()
    assert np.allclose(got[1:], want[1:], atol=1e-5)
    student_mean_a = TabularPreprocessor.from_json(student).columns[0].mean  # type: ignore[attr-defined]
    teacher_a = TabularPreprocessor.from_json(teacher).columns[2]
    assert got[0, -1] == pytest.approx((student_mean_a - teacher_a.mean) / teacher_a.std, abs=1e-5)  # type: ignore[attr-defined]
    blue = [i for i, r in enumerate(records) if r["colour"] == "blue"]
    assert blue and np.all(got[blue, :2] == 0)


def test_images_reach_a_teacher_with_other_preprocessing() -> None:
    """A student reading grey images as arrays (per-position statistics, flattened) and a
    teacher reading them as images (pixels scaled, one mean per channel)."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (40, 8, 8)).astype(np.uint8)
    student = {"type": "array", **ArrayPreprocessor.fit(x[:30].astype(np.float64)).to_json()}
    teacher = {"type": "image", **ImagePreprocessor.fit(x[10:, None], layout="NHW").to_json()}
    inputs = x[:6].tolist()
    ours = torch.from_numpy(load_input_encoder(student).encode(inputs))
    want = load_input_encoder(teacher).encode(inputs)
    got = teacher_inputs(student, teacher)(ours).numpy()
    assert got.shape == want.shape == (6, 1, 8, 8)
    assert np.allclose(got, want, atol=1e-4)

    other = {"type": "image", **ImagePreprocessor.fit(x[:, None, :6], layout="NHW").to_json()}
    with pytest.raises(TrainingError, match="the teacher takes examples of shape"):
        teacher_inputs(student, other)
    with pytest.raises(TrainingError, match="reads a table"):
        teacher_inputs(student, table(pd.DataFrame({"a": [1.0, 2.0]}), ["a"]))


def fronts() -> dict[str, tuple[dict[str, Any], list[Any]]]:
    """Stored preprocessing of each type, and inputs as a client sends them."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (10, 6, 5, 3)).astype(np.uint8)  # NHWC
    series = rng.normal(2, 3, (10, 7, 2))
    frame = pd.DataFrame({"a": rng.normal(size=10), "c": rng.choice(["x", "y"], 10)})
    return {
        "table": (table(frame, ["a", "c"]), frame.to_dict("records")),
        "image NHWC": (
            {
                "type": "image",
                **ImagePreprocessor.fit(rgb.transpose(0, 3, 1, 2), layout="NHWC").to_json(),
            },
            rgb.tolist(),
        ),
        "sequence (T, F)": (
            {"type": "sequence", **SequencePreprocessor.fit(series).to_json()},
            series.tolist(),
        ),
        "sequence (T)": (
            {"type": "sequence", **SequencePreprocessor.fit(series[..., 0]).to_json()},
            series[..., 0].tolist(),
        ),
    }


@pytest.mark.parametrize("name", list(fronts()))
def test_each_front_is_undone_by_its_inverse(name: str) -> None:
    """`inverse` takes what predict gives the network back to what the client sent (a
    string column's one-hot positions included)."""
    preprocessing, inputs = fronts()[name]
    front = input_front(preprocessing)
    assert front is not None
    encoded = torch.from_numpy(load_input_encoder(preprocessing).encode(inputs))
    assert torch.allclose(front.module(front.inverse(encoded)), encoded, atol=1e-5)
    if name != "table":  # the table's client form is its one-hot row
        sent = torch.tensor(np.asarray(inputs, dtype=np.float64), dtype=torch.float32)
        assert torch.allclose(front.inverse(encoded), sent, atol=1e-4)


def test_the_teachers_classes_are_put_in_the_students_order() -> None:
    order = class_order(["cat", "dog", "emu"], ["emu", "cat", "dog"])
    assert order.tolist() == [1, 2, 0]
    with pytest.raises(TrainingError, match="trained on the classes"):
        class_order(["cat", "dog", "emu"], ["cat", "dog", "fox"])
    with pytest.raises(TrainingError, match="trained on the classes"):
        class_order([0, 1, 2], ["0", "1", "2"])  # numbers are not their names


# The loop with a teacher --------------------------------------------------------------------


@pytest.fixture
def iris_csv(tmp_path: Path) -> DataSource:
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    path = tmp_path / "iris.csv"
    frame.to_csv(path, index=False)
    return DataSource(path, "csv")


def iris_spec(seed: int, distillation: dict[str, Any] | None = None, **training: Any) -> JobSpec:
    model: dict[str, Any] = {"kind": "mlp", "hidden_layers": [16]}
    if distillation is not None:
        model["distillation"] = {"teacher_model_id": "teacher", **distillation}
    return JobSpec.model_validate(
        {
            "dataset_id": "d",
            "task": "classification",
            "target": "species",
            "model": model,
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": 3, "batch_size": 16, "seed": seed, **training},
        }
    )


def train(
    spec: JobSpec, source: DataSource, reporter: MemoryReporter, teacher: Teacher | None = None
) -> tuple[TrainResult, PreparedData]:
    data = prepare_data(spec, source, None)
    kind = get_kind(spec.model.kind)
    return kind.train(spec, data, reporter, teacher=teacher, cancel_poll_seconds=0.0), data


@pytest.fixture
def teacher(iris_csv: DataSource) -> Teacher:
    """An MLP trained on another split of iris (other statistics) than the students'."""
    result, data = train(iris_spec(seed=7, epochs=20), iris_csv, MemoryReporter())
    meta = {"config": result.config, **data.interface()}
    return Teacher("teacher", result.network.eval(), meta)


def test_one_batch_of_distillation_by_hand(iris_csv: DataSource, teacher: Teacher) -> None:
    """One epoch of one batch: the loss recorded is the untrained student's, so its two
    terms can be computed by hand from the seeded network and the teacher's predict."""
    spec = iris_spec(0, {"temperature": 3.0, "alpha": 0.7}, epochs=1, batch_size=1000)
    reporter = MemoryReporter()
    _, data = train(spec, iris_csv, reporter, teacher)
    [record] = reporter.records
    torch.manual_seed(0)
    kind = get_kind("mlp")
    student = kind.build(kind.config(spec, data.shape()))(data.train.x).detach().double().numpy()
    # The teacher's logits for the same rows (its inputs made as the tests above check).
    bridge = teacher_inputs(data.preprocessing, teacher.meta["preprocessing"])
    with torch.no_grad():
        t_logits = teacher.network(bridge(data.train.x)).double().numpy()
    t = 3.0
    p, q = softmax(t_logits / t), softmax(student / t)
    soft = t * t * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))
    labels = data.train.y.numpy()
    hard = float(F.cross_entropy(torch.from_numpy(student), torch.from_numpy(labels)))
    assert record.metrics["train_soft_loss"] == pytest.approx(soft, rel=1e-5)
    assert record.metrics["train_hard_loss"] == pytest.approx(hard, rel=1e-5)
    assert record.train_loss == pytest.approx(0.7 * soft + 0.3 * hard, rel=1e-5)


def test_alpha_zero_trains_as_without_a_teacher(iris_csv: DataSource, teacher: Teacher) -> None:
    plain_reporter, taught_reporter = MemoryReporter(), MemoryReporter()
    plain, _ = train(iris_spec(0), iris_csv, plain_reporter)
    taught, _ = train(iris_spec(0, {"alpha": 0.0}), iris_csv, taught_reporter, teacher)
    for a, b in zip(
        plain.network.state_dict().values(), taught.network.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6)
    for plain_record, record in zip(plain_reporter.records, taught_reporter.records, strict=True):
        assert record.metrics["train_hard_loss"] == pytest.approx(plain_record.train_loss)
        assert record.metrics["train_soft_loss"] > 0


def test_a_distilled_job_stopped_mid_epoch_resumes_with_both_terms(
    iris_csv: DataSource, teacher: Teacher, tmp_path: Path
) -> None:
    spec = iris_spec(0, {"temperature": 2.0}, checkpoint_every=None, checkpoint_seconds=None)
    (tmp_path / "full").mkdir(), (tmp_path / "cut").mkdir(), (tmp_path / "resumed").mkdir()
    full_reporter = MemoryReporter(tmp_path / "full")
    full, data = train(spec, iris_csv, full_reporter, teacher)
    batches = -(-len(data.train) // 16)
    stop: Cancelled = Released()
    cut = MemoryReporter(tmp_path / "cut", stop_after_progress=batches + 3, stop=stop)
    with pytest.raises(Released):
        train(spec, iris_csv, cut, teacher)
    [(epoch, path)] = cut.checkpoints
    assert epoch == 2 and len(cut.metas[-1]["term_sums"]) == 2
    resumed_reporter = MemoryReporter(tmp_path / "resumed")
    resumed_reporter.resume_from = load_checkpoint(path)
    resumed, _ = train(spec, iris_csv, resumed_reporter, teacher)
    assert resumed.metrics == full.metrics
    for got, want in zip(resumed_reporter.records, full_reporter.records[1:], strict=True):
        assert got.metrics == pytest.approx(want.metrics, rel=1e-9)
        assert got.train_loss == pytest.approx(want.train_loss, rel=1e-9)


def test_a_distillation_without_its_teacher_is_a_training_error(iris_csv: DataSource) -> None:
    with pytest.raises(TrainingError, match="the teacher model could not be loaded"):
        train(iris_spec(0, {}), iris_csv, MemoryReporter())


def test_distillation_trains_only_classifiers() -> None:
    with pytest.raises(ValueError, match="train a classifier"):
        JobSpec.model_validate(
            {
                "dataset_id": "d",
                "task": "regression",
                "target": "y",
                "model": {"kind": "mlp", "distillation": {"teacher_model_id": "t"}},
            }
        )
    with pytest.raises(ValueError, match="distillation"):
        JobSpec.model_validate(
            {
                "dataset_id": "d",
                "task": "classification",
                "target": "y",
                "model": {"kind": "linear", "distillation": {"teacher_model_id": "t"}},
            }
        )
