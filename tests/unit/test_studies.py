"""The study engine (service.studies) against a real database built by the migrations and
Optuna's real storage beside it: asking, telling, ending, orphaned and invalid trials,
cancel, importances, and the worker's pruner. Jobs end here by SQL, as a worker's
`finish_job` would end them; tests/e2e/test_studies.py runs the same with real workers."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from alembic import command
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.specs import JobSpec
from models.specs.study import StudySpec
from service import repository, studies
from service.db import make_engine
from service.optuna_storage import shared_storage as optuna_storage
from service.optuna_storage import upgrade_storage
from service.settings import Settings
from service.studies import (
    TrialPruner,
    advance,
    cancel,
    create_study,
    decode,
    distributions,
    reported,
    trial_views,
)
from service.tables import LOCAL_USER, Dataset, Job, Study
from tests.test_migrations import alembic_config

WIDTHS = [[4], [8, 4], [16, 8]]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Settings, Session]]:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'keiko.db'}")
    command.upgrade(alembic_config(settings.resolved_database_url), "head")
    upgrade_storage(settings)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine, expire_on_commit=False) as session:
        session.add(
            Dataset(
                id="d1", name="iris", format="csv", filename="iris.csv", path="d1.csv",
                size_bytes=1, sha256="0" * 64, num_rows=150,
            )
        )  # fmt: skip
        session.commit()
        yield settings, session
    engine.dispose()


def study_spec(**overrides: Any) -> StudySpec:
    study: dict[str, Any] = {
        "base": {
            "dataset_id": "d1",
            "task": "classification",
            "target": "species",
            "model": {"kind": "mlp", "hidden_layers": [4]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": 3},
        },
        "space": {
            "model.hidden_layers": {"type": "categorical", "choices": WIDTHS},
            "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        },
        "metric": "validation.accuracy",
        "n_trials": 6,
        "parallelism": 2,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
    }
    study.update(overrides)
    return StudySpec.model_validate(study)


def start(settings: Settings, session: Session, spec: StudySpec) -> tuple[Study, list[str]]:
    row = create_study(session, settings, owner_id=LOCAL_USER, spec=spec)
    new = advance(session, settings, row.id)
    session.commit()
    return row, [job_id for job_id, _ in new]


def end(session: Session, job_id: str, status: str, accuracy: float | None = None) -> None:
    metrics = {"validation": {"accuracy": accuracy}} if accuracy is not None else None
    session.execute(update(Job).where(Job.id == job_id).values(status=status, metrics=metrics))
    session.commit()


def jobs_of(session: Session, row: Study) -> list[Job]:
    return list(
        session.scalars(select(Job).where(Job.study_id == row.id).order_by(Job.trial_number))
    )


def test_choices_that_are_lists_travel_through_optuna_and_come_back() -> None:
    spec = study_spec()
    dist = distributions(spec)
    assert isinstance(dist["model.hidden_layers"], optuna.distributions.CategoricalDistribution)
    assert dist["model.hidden_layers"].choices == ("[4]", "[8, 4]", "[16, 8]")
    assert dist["optimizer.lr"].log  # type: ignore[attr-defined]
    assert decode(spec, {"model.hidden_layers": "[8, 4]", "optimizer.lr": 0.01}) == {
        "model.hidden_layers": [8, 4],
        "optimizer.lr": 0.01,
    }


def test_reported_epochs_are_the_same_for_every_trial_and_few() -> None:
    assert all(reported(e) for e in range(1, 101))
    assert [e for e in range(101, 200) if reported(e)] == [
        110,
        120,
        130,
        140,
        150,
        160,
        170,
        180,
        190,
    ]
    assert sum(reported(e) for e in range(1, 10_001)) == 100 + 90 + 90


def test_a_study_asks_tells_and_ends_with_its_best_trial(
    deployment: tuple[Settings, Session],
) -> None:
    settings, session = deployment
    row, first = start(settings, session, study_spec())
    assert len(first) == 2  # parallelism
    jobs = jobs_of(session, row)
    assert [j.trial_number for j in jobs] == [0, 1]
    for job in jobs:
        spec = JobSpec.model_validate(job.spec)
        assert spec.model.hidden_layers in WIDTHS  # type: ignore[union-attr]
        assert 1e-4 <= spec.optimizer.lr <= 1e-1
        assert job.status == "queued" and job.dataset_id == "d1"
    assert advance(session, settings, row.id) == []  # nothing ended: nothing new
    session.commit()

    end(session, first[0], "succeeded", 0.7)
    end(session, first[1], "failed")
    new = advance(session, settings, row.id)
    session.commit()
    assert len(new) == 2
    accuracies = [0.9, 0.8, 0.6, 0.95]
    while new:
        for job_id, _ in new:
            end(session, job_id, "succeeded", accuracies.pop(0))
        new = advance(session, settings, row.id)
        session.commit()
    session.refresh(row)
    assert row.status == "succeeded" and row.finished_at is not None
    jobs = jobs_of(session, row)
    assert len(jobs) == 6  # n_trials, the failed one included
    assert row.best_job_id == jobs[5].id  # 0.95

    views, importances = trial_views(settings, row, jobs)
    assert [v.status for v in views] == ["succeeded", "failed"] + ["succeeded"] * 4
    assert [v.value for v in views] == [0.7, None, 0.9, 0.8, 0.6, 0.95]
    assert views[2].params == {
        "model.hidden_layers": JobSpec.model_validate(jobs[2].spec).model.hidden_layers,  # type: ignore[union-attr]
        "optimizer.lr": JobSpec.model_validate(jobs[2].spec).optimizer.lr,
    }
    assert importances is not None and set(importances) == set(study_spec().space)
    assert math.isclose(sum(importances.values()), 1.0)


def test_the_same_seed_asks_the_same_trials(deployment: tuple[Settings, Session]) -> None:
    settings, session = deployment
    specs = []
    for _ in range(2):
        row, _ = start(settings, session, study_spec(parallelism=3))
        specs.append([j.spec for j in jobs_of(session, row)])
    assert specs[0] == specs[1]
    assert len({str(s) for s in specs[0]}) == 3  # and the trials differ from each other


def test_a_trial_asked_by_an_advance_that_never_committed_is_not_counted(
    deployment: tuple[Settings, Session],
) -> None:
    settings, session = deployment
    row, first = start(settings, session, study_spec(n_trials=3, parallelism=1))
    study = optuna.load_study(study_name=f"keiko-{row.id}", storage=optuna_storage(settings))
    study.ask(distributions(study_spec()))  # its job's transaction rolled back: no job
    end(session, first[0], "succeeded", 0.5)
    new = advance(session, settings, row.id)
    session.commit()
    assert len(new) == 1
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states[1] == optuna.trial.TrialState.FAIL  # the orphan
    assert [j.trial_number for j in jobs_of(session, row)] == [0, 2]
    views, _ = trial_views(settings, row, jobs_of(session, row))
    assert [v.number for v in views] == [0, 2]  # the orphan is no trial of the study's


def test_samples_the_job_spec_refuses_fail_without_a_job_and_the_study_says_why(
    deployment: tuple[Settings, Session],
) -> None:
    settings, session = deployment
    spec = study_spec(
        space={"model.dropout": {"type": "float", "low": 1.0, "high": 2.0}}, n_trials=2
    )
    row, first = start(settings, session, spec)
    assert first == []
    session.refresh(row)
    assert row.status == "failed" and row.finished_at is not None
    assert row.error_message == "no trial ended with a value of validation.accuracy"
    views, _ = trial_views(settings, row, [])
    assert [(v.status, v.job_id) for v in views] == [("failed", None)] * 2
    assert all(v.error and "less than" in v.error for v in views), views


def test_cancel_ends_queued_trials_and_asks_for_no_more(
    deployment: tuple[Settings, Session],
) -> None:
    settings, session = deployment
    row, first = start(settings, session, study_spec())
    session.execute(update(Job).where(Job.id == first[0]).values(status="running"))
    session.commit()
    assert cancel(session, settings, row) == []
    session.commit()
    jobs = {j.id: j for j in jobs_of(session, row)}
    assert jobs[first[1]].status == "cancelled"  # it was queued
    assert jobs[first[0]].cancel_requested and jobs[first[0]].status == "running"
    assert row.status == "cancelled" and row.finished_at is None  # one still runs
    end(session, first[0], "cancelled")
    assert advance(session, settings, row.id) == []
    session.commit()
    session.refresh(row)
    assert row.status == "cancelled" and row.finished_at is not None
    assert len(jobs_of(session, row)) == 2
    assert cancel(session, settings, row) == []  # an ended study stays as it is


def test_the_pruner_stops_a_trial_behind_the_median_at_the_same_epoch(
    deployment: tuple[Settings, Session],
) -> None:
    settings, session = deployment
    spec = study_spec(
        metric="validation.loss",
        parallelism=1,
        pruner={"name": "median", "startup_trials": 1, "warmup_epochs": 2},
    )
    row, first = start(settings, session, spec)
    good = TrialPruner(settings, row.id, 0, spec)
    for epoch, loss in enumerate([0.9, 0.5, 0.3], start=1):
        assert good.check(epoch, {"val_loss": loss}) is None  # no finished trial yet
    session.execute(
        update(Job)
        .where(Job.id == first[0])
        .values(status="succeeded", metrics={"validation": {"loss": 0.3}})
    )
    session.commit()
    (second, _), *_ = advance(session, settings, row.id)
    session.commit()
    bad = TrialPruner(settings, row.id, 1, spec)
    assert bad.check(1, {"val_loss": 2.0}) is None  # warm-up: epochs 1 and 2 never stop
    assert bad.check(2, {"val_loss": 0.45}) is None  # ahead of the finished trial's 0.5
    assert bad.check(3, {"val_loss": float("nan")}) is None  # nothing to compare
    assert bad.check(3, {"val_accuracy": 0.1}) is None  # not the study's metric
    reason = bad.check(3, {"val_loss": 0.8})
    assert reason is not None and "median pruner at epoch 3" in reason
    assert "validation.loss 0.8" in reason
    trial = optuna_storage(settings).get_trial(bad.trial_id)
    assert trial.intermediate_values == {1: 2.0, 2: 0.45, 3: 0.8}
    assert session.get(Job, second) is not None


def test_a_study_whose_dataset_is_gone_fails_saying_so(
    deployment: tuple[Settings, Session],
) -> None:
    settings, session = deployment
    row, first = start(settings, session, study_spec(parallelism=1))
    assert repository.studies_using(session, dataset_id="d1", owner_id=LOCAL_USER) == [row.id]
    assert repository.studies_using(session, dataset_id="d1", owner_id="someone") == []
    end(session, first[0], "succeeded", 0.5)
    session.delete(session.get(Dataset, "d1"))  # what the API refuses while the study runs
    session.commit()
    assert advance(session, settings, row.id) == []
    session.commit()
    session.refresh(row)
    assert row.status == "failed" and row.finished_at is not None
    assert row.error_message == "the study's dataset d1 was deleted"
    assert len(jobs_of(session, row)) == 1
    assert repository.studies_using(session, dataset_id="d1", owner_id=LOCAL_USER) == []


@pytest.mark.parametrize("name", ["successive_halving", "hyperband"])
def test_the_halving_pruners_keep_the_best_at_each_rung(
    deployment: tuple[Settings, Session], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, session = deployment
    # Hyperband puts each trial in a bracket by a CRC of the study's name and the trial's
    # number, and compares it only with its bracket: a fixed name makes that the same on
    # every run (a random study id made the bad trial the first of its bracket in some).
    monkeypatch.setattr(studies, "study_name", lambda study_id: f"keiko-test-{name}")
    spec = study_spec(metric="validation.loss", n_trials=8, parallelism=1, pruner={"name": name})
    row, (job_id,) = start(settings, session, spec)
    reasons = []
    # One trial at a time, each a loss curve first_loss / epoch; the last far behind.
    for number, first_loss in enumerate([0.5, 0.4, 0.45, 0.42, 0.41, 0.43, 0.44, 3.0]):
        pruner = TrialPruner(settings, row.id, number, spec)
        reason = None
        for epoch in range(1, 10):
            reason = pruner.check(epoch, {"val_loss": first_loss / epoch})
            if reason is not None:
                break
        reasons.append(reason)
        final = {"validation": {"loss": first_loss / 9}}
        status = "pruned" if reason else "succeeded"
        session.execute(update(Job).where(Job.id == job_id).values(status=status, metrics=final))
        session.commit()
        new = advance(session, settings, row.id)
        session.commit()
        job_id = new[0][0] if new else ""
    assert reasons[0] is None  # nothing to compare the first with
    assert reasons[-1] is not None and f"{name.replace('_', ' ')} pruner" in reasons[-1]
    session.refresh(row)
    assert row.status == "succeeded" and row.finished_at is not None
