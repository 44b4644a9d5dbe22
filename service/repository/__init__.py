"""Every SQL query of the service, shared by the API and the workers. Nothing here commits.

Callers import the package (`from service import repository`) and call
`repository.some_function(session, ...)`; its modules split the queries by what they store:

- `accounts`: users, their API keys, idempotent requests;
- `datasets`: dataset rows;
- `jobs`: the job lifecycle (submission cap, dispatch sweeps, claim, lease, finish, release,
  cancel);
- `history`: epochs, the running epoch's progress, checkpoints, history paging;
- `events`: each job's event log, its first event and its status events;
- `models`: model rows;
- `studies`: hyperparameter studies and their trials' jobs;
- `monitoring`: the aggregates `GET /metrics` reads at scrape time;
- `_common`: the job states (ACTIVE, FINISHED) and the ownership lookups and paging that the
  others share.

Modules import `_common` and `events`, which import neither of the others: no cycle.
"""

from __future__ import annotations

from service.repository._common import ACTIVE, FINISHED
from service.repository.accounts import (
    find_key,
    forget_idempotent_requests,
    get_key,
    get_user,
    idempotent_request,
    list_keys,
    list_users,
    user_named,
)
from service.repository.datasets import dataset_in_use, get_dataset, list_datasets
from service.repository.events import (
    add_event,
    add_job,
    add_status_event,
    event_marks,
    job_events,
)
from service.repository.history import (
    add_checkpoint,
    checkpoint_records,
    checkpoints_newest_first,
    delete_checkpoints,
    forget_after,
    history_entry,
    history_tail,
    job_history,
    record_epoch,
    set_progress,
)
from service.repository.jobs import (
    active_jobs,
    cancel_requested,
    claim_job,
    finish_job,
    get_job,
    list_jobs,
    mark_dispatched,
    orphaned_jobs,
    owns_job,
    release_job,
    renew_lease,
    request_cancel,
    set_device,
    settle_abandoned_jobs,
    unclaimed_jobs,
    undispatched_jobs,
)
from service.repository.models import (
    add_model,
    get_model,
    key_and_model,
    list_models,
    model_for_job,
    new_model_id,
)
from service.repository.monitoring import RunningJob, job_counts, running_jobs
from service.repository.studies import (
    add_study,
    get_study,
    job_metrics,
    list_studies,
    lock_study,
    running_studies,
    studies_using,
    study_counts,
    study_jobs,
    study_trial_jobs,
)

__all__ = [
    "ACTIVE",
    "FINISHED",
    "RunningJob",
    "active_jobs",
    "add_checkpoint",
    "add_event",
    "add_job",
    "add_model",
    "add_status_event",
    "add_study",
    "cancel_requested",
    "checkpoint_records",
    "checkpoints_newest_first",
    "claim_job",
    "dataset_in_use",
    "delete_checkpoints",
    "event_marks",
    "find_key",
    "finish_job",
    "forget_after",
    "forget_idempotent_requests",
    "get_dataset",
    "get_job",
    "get_key",
    "get_model",
    "get_study",
    "get_user",
    "history_entry",
    "history_tail",
    "idempotent_request",
    "job_counts",
    "job_events",
    "job_history",
    "job_metrics",
    "key_and_model",
    "list_datasets",
    "list_jobs",
    "list_keys",
    "list_models",
    "list_studies",
    "list_users",
    "lock_study",
    "mark_dispatched",
    "model_for_job",
    "new_model_id",
    "orphaned_jobs",
    "owns_job",
    "record_epoch",
    "release_job",
    "renew_lease",
    "request_cancel",
    "running_jobs",
    "running_studies",
    "set_device",
    "set_progress",
    "settle_abandoned_jobs",
    "studies_using",
    "study_counts",
    "study_jobs",
    "study_trial_jobs",
    "unclaimed_jobs",
    "undispatched_jobs",
    "user_named",
]
