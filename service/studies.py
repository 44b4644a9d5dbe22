"""Studies: Optuna's ask-and-tell over ordinary Keiko jobs (issue 17).

A study is a row in `studies` and an Optuna study of the same name in Optuna's storage
(service.optuna_storage). Optuna asks; every trial it asks for becomes a job with
`jobs.study_id` and `jobs.trial_number`, queued like any other and run by any worker.

`advance` moves a study on, and is safe to call at any time from any process: under the
study's row lock it tells Optuna how every ended trial job went (its final metric, pruned,
or failed), asks for new trials while fewer than `parallelism` run and fewer than
`n_trials` were asked, and ends the study when nothing runs and nothing is left to ask. The
API calls it when a study is posted or cancelled and when a trial is cancelled, the worker
when a trial ends, and the API's sweep every period, so a crash between a job's end and
its study's advance costs a delay, never the study.

Pruning runs in the worker: `TrialPruner` reports each epoch's metric (RL: each
evaluation's return) to Optuna and asks the study's pruner whether the trial goes on.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from sqlalchemy.orm import Session

from models.specs import JobSpec
from models.specs.study import CategoricalParam, FloatParam, StudySpec, grid_points, with_params
from service import repository
from service.db import session_scope
from service.dispatch import new_job, send_job
from service.optuna_storage import shared_storage
from service.schemas import TrialRead
from service.settings import Settings, get_settings
from service.tables import Dataset, Job, Study, utcnow

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

MIN_FOR_IMPORTANCE = 4  # finished trials before parameter importances are estimated
_PRIMITIVE = (str, int, float, bool, type(None))


def study_name(study_id: str) -> str:
    return f"keiko-{study_id}"


# Parameters --------------------------------------------------------------------------------
# Optuna's categorical choices are numbers, strings, booleans or None; a list of hidden
# layer widths travels as its JSON text and comes back as the list.


def _encode(choice: Any) -> Any:
    return choice if isinstance(choice, _PRIMITIVE) else json.dumps(choice, sort_keys=True)


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for path, param in spec.space.items():
        if isinstance(param, FloatParam):
            out[path] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, CategoricalParam):
            out[path] = CategoricalDistribution([_encode(c) for c in param.choices])
        else:
            out[path] = IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return out


def decode(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as the space gave them (lists back from their JSON text)."""
    out = {}
    for path, value in params.items():
        param = spec.space.get(path)
        if isinstance(param, CategoricalParam):
            encoded = [_encode(c) for c in param.choices]
            value = param.choices[encoded.index(value)] if value in encoded else value
        out[path] = value
    return out


def effective_trials(spec: StudySpec) -> int:
    """`n_trials`, or fewer for a grid with fewer combinations: each is tried once."""
    if spec.sampler.name != "grid":
        return spec.n_trials
    return min(spec.n_trials, math.prod(p.grid_count() or 1 for p in spec.space.values()))


def make_sampler(spec: StudySpec, seed: int, asked: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler for the `asked`-th ask. Each ask builds its own (any API process
    or worker may make it), so the seed moves on with the count: the same study asks the
    same random points whoever asks."""
    seed = (spec.sampler.seed if spec.sampler.seed is not None else seed) + asked
    if spec.sampler.name in ("random", "grid"):  # a grid's trials are enqueued points
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials still running count as bad ones, so parallel trials spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    pruner = spec.pruner
    if pruner.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs
        )
    if pruner.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, pruner.warmup_epochs), reduction_factor=pruner.reduction_factor
        )
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, pruner.warmup_epochs), reduction_factor=pruner.reduction_factor
        )
    return optuna.pruners.NopPruner()


def _load(
    settings: Settings, row_id: str, spec: StudySpec, sampler: optuna.samplers.BaseSampler | None
) -> optuna.Study:
    # Telling goes through a plain sampler: the grid sampler's end-of-grid hook expects to
    # run inside Optuna's own optimize loop.
    return optuna.load_study(
        study_name=study_name(row_id),
        storage=shared_storage(settings),
        sampler=sampler or optuna.samplers.RandomSampler(),
        pruner=make_pruner(spec),
    )


# The study's life ---------------------------------------------------------------------------


def create_study(session: Session, settings: Settings, *, owner_id: str, spec: StudySpec) -> Study:
    """Record the study and create its Optuna study; `advance` then asks its first trials."""
    row = Study(
        owner_id=owner_id,
        status="running",
        spec=spec.model_dump(mode="json"),
        metric=spec.metric,
        direction=spec.resolved_direction,
        n_trials=effective_trials(spec),
        parallelism=spec.parallelism,
    )
    repository.add_study(session, study=row)
    optuna.create_study(
        study_name=study_name(row.id),
        storage=shared_storage(settings),
        direction=spec.resolved_direction,
    )
    return row


def advance(session: Session, settings: Settings, study_id: str) -> list[tuple[str, str]]:
    """Tell, ask and end (see the module's docstring) under the study's row lock. Answers
    the new jobs (id, queue), to send once the caller has committed."""
    row = repository.lock_study(session, study_id=study_id)
    if row is None or row.finished_at is not None:
        return []
    spec = StudySpec.model_validate(row.spec)
    study = _load(settings, row.id, spec, None)
    jobs = {j.trial_number: j for j in repository.study_jobs(session, study_id=row.id)}
    trials = study.get_trials(deepcopy=False)
    storage = study._storage
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        job = jobs.get(trial.number)
        if job is None:  # asked by an advance whose transaction never committed
            storage.set_trial_user_attr(trial._trial_id, "orphan", True)
            study.tell(trial.number, state=TrialState.FAIL)
        elif job.status in repository.FINISHED:
            _tell(session, study, spec, trial, job.id, job.status)
    asked = sum(1 for t in trials if not t.user_attrs.get("orphan"))
    asked -= sum(1 for t in trials if t.state == TrialState.RUNNING and t.number not in jobs)
    active = sum(1 for j in jobs.values() if j.status in repository.ACTIVE)
    new: list[tuple[str, str]] = []
    missing = _missing_data(session, spec) if row.status == "running" else None
    if missing is not None:
        row.status = "failed"
        row.error_message = f"the study's {missing} was deleted"
    if row.status == "running":
        base = JobSpec.model_validate(spec.base)
        wanted = distributions(spec)
        # A grid's points in turn: the asked-th trial is the asked-th point (Optuna's own
        # grid sampler assumes its optimize loop; an enqueued trial is what ask takes first).
        points = grid_points(spec) if spec.sampler.name == "grid" else None
        while active < row.parallelism and asked < row.n_trials:
            asking = _load(settings, row.id, spec, make_sampler(spec, base.training.seed, asked))
            if points is not None:
                asking.enqueue_trial({path: _encode(v) for path, v in points[asked].items()})
            asked_trial = asking.ask(wanted)
            asked += 1
            trial_job = _trial_job(row, spec, asked_trial, settings)
            if trial_job is None:
                study.tell(asked_trial.number, state=TrialState.FAIL)
                continue
            repository.add_job(session, job=trial_job)
            storage.set_trial_user_attr(asked_trial._trial_id, "job_id", trial_job.id)
            new.append((trial_job.id, trial_job.queue))
            active += 1
    best = _best(study)
    row.best_job_id = None
    if best is not None:
        row.best_job_id = best.user_attrs.get("job_id")
    if active == 0 and (row.status != "running" or asked >= row.n_trials):
        row.finished_at = utcnow()
        if row.status == "running":
            row.status = "succeeded" if best is not None else "failed"
            if best is None:
                row.error_message = f"no trial ended with a value of {spec.metric}"
    session.flush()
    return new


def advance_and_send(settings: Settings, study_id: str) -> None:
    """`advance` in a transaction of its own, then its new jobs to the broker (a send that
    fails is the dispatch sweep's to retry, as for any job)."""
    with session_scope() as session:
        new = advance(session, settings, study_id)
    for job_id, queue in new:
        send_job(job_id, queue)


def sweep_studies() -> None:
    """Advance every study that has not ended (the API's sweep): what a crash between a
    trial's end and its study's advance left undone is done here."""
    settings = get_settings()
    with session_scope() as session:
        study_ids = repository.running_studies(session)
    for study_id in study_ids:
        try:
            advance_and_send(settings, study_id)
        except Exception:
            log.exception("study %s: not advanced", study_id)


def _missing_data(session: Session, spec: StudySpec) -> str | None:
    """The base's dataset (or test dataset) when it no longer exists."""
    for field in ("dataset_id", "test_dataset_id"):
        dataset_id = spec.base.get(field)
        if dataset_id and session.get(Dataset, dataset_id) is None:
            return f"{field.removesuffix('_id').replace('_', ' ')} {dataset_id}"
    return None


def _trial_job(row: Study, spec: StudySpec, trial: optuna.Trial, settings: Settings) -> Job | None:
    """The trial's job: the base spec with the trial's parameters. None (the trial's
    `error` says why) when the sample fails the job spec's validation: `POST /studies`
    checked every parameter's ends, not every combination."""
    params = decode(spec, trial.params)
    try:
        job_spec = JobSpec.model_validate(with_params(spec.base, params))
    except (ValidationError, KeyError) as exc:
        why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        trial.study._storage.set_trial_user_attr(trial._trial_id, "error", why)
        return None
    return new_job(job_spec, row.owner_id, settings, study_id=row.id, trial_number=trial.number)


def _tell(
    session: Session,
    study: optuna.Study,
    spec: StudySpec,
    trial: FrozenTrial,
    job_id: str,
    status: str,
) -> None:
    """Tell Optuna how the trial's job ended: its final metric, pruned, or failed."""
    if status == "pruned":
        study.tell(trial.number, state=TrialState.PRUNED)
        return
    if status == "succeeded":
        job = repository.get_job(session, job_id=job_id, owner_id=None)
        value = spec.final_value(job.metrics or {}) if job is not None else None
        if value is not None and math.isfinite(value):
            study.tell(trial.number, value)
            return
        study._storage.set_trial_user_attr(
            trial._trial_id, "error", f"the job reported no finite {spec.metric}"
        )
    study.tell(trial.number, state=TrialState.FAIL)


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial has completed
        return None


def cancel(session: Session, settings: Settings, row: Study) -> list[tuple[str, str]]:
    """Stop the study: no more trials; its queued trials end at once and its running ones
    at their next cancel check."""
    if row.finished_at is not None or row.status != "running":
        return []
    row.status = "cancelled"
    for job in repository.study_trial_jobs(session, study_id=row.id):
        if job.status in repository.ACTIVE and not job.cancel_requested:
            repository.request_cancel(session, job=job)
    session.flush()
    return advance(session, settings, row.id)


# What GET /studies/{id} shows ----------------------------------------------------------------


def trial_views(
    settings: Settings, row: Study, jobs: Sequence[Job]
) -> tuple[list[TrialRead], dict[str, float] | None]:
    """Every trial (its job's status where it has a job) and, once enough trials have a
    value, the parameters' importances (Optuna's fANOVA)."""
    spec = StudySpec.model_validate(row.spec)
    study = _load(settings, row.id, spec, None)
    by_number = {j.trial_number: j for j in jobs}
    views = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("orphan"):
            continue
        job = by_number.get(trial.number)
        views.append(
            TrialRead(
                number=trial.number,
                job_id=job.id if job else None,
                status=job.status if job else "failed",  # type: ignore[arg-type]
                params=decode(spec, trial.params),
                value=trial.value if trial.state == TrialState.COMPLETE else None,
                epochs_reported=len(trial.intermediate_values),
                error=trial.user_attrs.get("error")
                or (job.error_message if job is not None else None),
                model_id=job.model.id if job is not None and job.model is not None else None,
            )
        )
    done = sum(1 for v in views if v.value is not None)
    return views, _importances(study, row.id, done)


_importance_cache: dict[tuple[str, int], dict[str, float] | None] = {}


def _importances(study: optuna.Study, study_id: str, done: int) -> dict[str, float] | None:
    if done < MIN_FOR_IMPORTANCE:
        return None
    key = (study_id, done)
    if key not in _importance_cache:
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
            _importance_cache[key] = {k: float(v) for k, v in found.items()}
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log.info("study %s: no importances yet (%s)", study_id, exc)
            _importance_cache[key] = None
        if len(_importance_cache) > 256:
            _importance_cache.pop(next(iter(_importance_cache)))
    return _importance_cache[key]


# The worker's side ---------------------------------------------------------------------------


def reported(epoch: int) -> bool:
    """The epochs whose metric goes to Optuna: every one of the first 100, every 10th to
    1,000, every 100th after. The same epochs for every trial (pruners compare trials at
    equal steps), and a few hundred writes at most for a job of thousands of tiny epochs."""
    if epoch <= 100:
        return True
    return epoch % 10 == 0 if epoch <= 1000 else epoch % 100 == 0


class TrialPruner:
    """Reports a trial's metric at its epochs' ends and asks the study's pruner whether it
    goes on (in the worker that trains it)."""

    def __init__(self, settings: Settings, study_id: str, trial_number: int, spec: StudySpec):
        self.study = _load(settings, study_id, spec, None)
        self.storage = self.study._storage
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, trial_number
        )
        self.key = spec.history_key()
        self.metric = spec.metric
        self.pruner_name = spec.pruner.name

    def check(self, epoch: int, values: dict[str, Any]) -> str | None:
        """Why the trial stops at this epoch, or None when it goes on."""
        value = values.get(self.key) if self.key else None
        if not isinstance(value, int | float) or not math.isfinite(value) or not reported(epoch):
            return None
        try:
            self.storage.set_trial_intermediate_value(self.trial_id, epoch, float(value))
            trial = self.storage.get_trial(self.trial_id)
            if trial.state != TrialState.RUNNING or not self.study.pruner.prune(self.study, trial):
                return None
        except (RuntimeError, ValueError) as exc:  # the trial was ended meanwhile
            log.info("trial %d: not reported (%s)", self.trial_id, exc)
            return None
        return (
            f"pruned by the study's {self.pruner_name.replace('_', ' ')} pruner at epoch "
            f"{epoch}: {self.metric} {value:.6g} was behind the study's other trials"
        )


def trial_pruner(session: Session, settings: Settings, job: Job) -> TrialPruner | None:
    """The pruner of the study the job is a trial of; None when it is no trial, its study
    prunes nothing, or has ended."""
    if job.study_id is None or job.trial_number is None:
        return None
    row = repository.get_study(session, study_id=job.study_id, owner_id=None)
    if row is None or row.finished_at is not None:
        return None
    spec = StudySpec.model_validate(row.spec)
    if spec.pruner.name == "none" or spec.history_key() is None:
        return None
    return TrialPruner(settings, row.id, job.trial_number, spec)
