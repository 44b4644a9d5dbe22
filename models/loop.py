"""The one supervised loop every network kind trains with.

Data lives on the training device as whole tensors; each epoch draws a fresh permutation
from a seeded generator, so mini-batches are reshuffled every epoch and a run is
repeatable. Losses are accumulated on the device and read once per epoch, so there is no
host synchronisation per batch.
"""

from __future__ import annotations

import copy
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (
    Cancelled,
    DivergedError,
    EpochRecord,
    PreparedData,
    Reporter,
    Split,
    TrainResult,
)
from models.checkpoint import prefixed, restore_optimizer_state
from models.distillation import Distiller
from models.metrics import classification_metrics, regression_metrics
from models.optimizers import build_optimizer
from models.policy import CheckpointClock
from models.schedules import LRScheduler
from models.specs import JobSpec, TrainingSpec
from models.watch import Watch

EVAL_BATCH = 8192  # rows per scoring pass at most (on a GPU, always)
# On a CPU a scoring pass holds its widest activation to about this many bytes: a
# convolution over a big batch spills the caches (10,000 MNIST images through the mnist-cnn
# recipe's network score in 8.7 s in passes of 8192 rows, in 4.1 s in passes of 128), while
# a dense network wants passes of a few thousand rows.
EVAL_BYTES = 8 * 2**20
MIN_EVAL_BATCH = 32
_eval_rows: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], int]] = (
    weakref.WeakKeyDictionary()
)
HISTORY_METRICS = ("accuracy", "f1", "log_loss", "mse", "rmse", "mae", "r2")


@dataclass(frozen=True)
class Objective:
    """Turns raw network outputs into a loss, probabilities and metrics for one task."""

    task: str  # classification; anything else (regression, forecasting) is least squares
    num_classes: int | None = None
    target_std: float = 1.0
    target_mean: float = 0.0

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            if out.shape[-1] == 1:  # (B, 1) logit of class 1
                return F.binary_cross_entropy_with_logits(out.squeeze(-1), y.to(out.dtype))
            return F.cross_entropy(out, y)  # (B, C) logits
        return F.mse_loss(self.values(out), y)

    def loss_scale(self) -> float:
        """Regression trains on standardised targets; report losses in the target's units."""
        return 1.0 if self.task == "classification" else self.target_std**2

    def probabilities(self, out: torch.Tensor) -> torch.Tensor:
        if out.shape[-1] == 1:
            p1 = torch.sigmoid(out.squeeze(-1).double())
            return torch.stack([1 - p1, p1], dim=-1)  # (N, 2)
        return torch.softmax(out.double(), dim=-1)  # (N, C)

    def values(self, out: torch.Tensor) -> torch.Tensor:
        """Regression (B, 1) -> (B,); forecasting keeps (B, horizon)."""
        return out if self.task == "forecasting" else out.squeeze(-1)

    def unscale(self, values: torch.Tensor) -> torch.Tensor:
        return values.double() * self.target_std + self.target_mean

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if len(y) == 0:
            return {}
        if self.task == "classification":
            assert self.num_classes is not None
            return classification_metrics(y.cpu(), self.probabilities(out).cpu(), self.num_classes)
        return regression_metrics(self.unscale(y).cpu(), self.unscale(self.values(out)).cpu())


@torch.inference_mode()
def forward_all(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's outputs for every row of `x`, in eval mode, in passes of
    `eval_rows` rows."""
    was_training = network.training
    if was_training:  # a served network is in eval mode already: no walk over its modules
        network.eval()
    rows = eval_rows(network, x)
    if len(x) <= rows:  # one pass: most predict calls
        out = network(x) if len(x) else x.new_zeros((0, 1))
    else:
        out = torch.cat([network(x[i : i + rows]) for i in range(0, len(x), rows)])
    if was_training:
        network.train()
    return out


def eval_rows(network: nn.Module, x: torch.Tensor) -> int:
    """Rows per scoring pass over `x`: on a CPU, as many as keep the widest activation of a
    pass within EVAL_BYTES (between MIN_EVAL_BATCH and EVAL_BATCH), found by one example's
    forward pass once per network and example shape; few rows go in one pass unprobed."""
    if x.device.type != "cpu" or len(x) <= 8 * MIN_EVAL_BATCH:
        return EVAL_BATCH
    known = _eval_rows.setdefault(network, {})
    shape = tuple(x.shape[1:])
    if shape not in known:
        widest = _widest_activation(network, x[:1])
        fit = EVAL_BYTES // max(widest * x.element_size(), 1)
        known[shape] = int(min(max(fit, MIN_EVAL_BATCH), EVAL_BATCH))
    return known[shape]


def _widest_activation(network: nn.Module, example: torch.Tensor) -> int:
    """The most values any module of `network` outputs for one example."""
    sizes = [example.numel()]

    def record(_: nn.Module, __: Any, output: Any) -> None:
        for value in output if isinstance(output, tuple) else (output,):
            if isinstance(value, torch.Tensor):
                sizes.append(value.numel())

    hooks = [module.register_forward_hook(record) for module in network.modules()]
    try:
        network(example)
    finally:
        for hook in hooks:
            hook.remove()
    return max(sizes)


def evaluate(network: nn.Module, objective: Objective, split: Split | None) -> dict[str, Any]:
    return _scored(network, objective, split)[0]


def _scored(
    network: nn.Module, objective: Objective, split: Split | None
) -> tuple[dict[str, Any], torch.Tensor | None]:
    """The metrics of `split` (none when it is empty or missing) and the outputs scored."""
    if split is None or len(split) == 0:
        return {}, None
    out = forward_all(network, split.x)
    metrics = objective.metrics(out, split.y)
    metrics["loss"] = float(objective.loss(out, split.y)) * objective.loss_scale()
    return metrics, out


def scored_training_part(train: Split, training: TrainingSpec) -> Split:
    """The rows of the training part that are scored after training: all of them, or a
    sample of `training.score_training_rows` drawn with the job's seed when it is larger
    (the final metrics and the gallery of mistakes take the same rows)."""
    limit = training.score_training_rows
    if limit is None or len(train) <= limit:
        return train
    generator = torch.Generator().manual_seed(training.seed)
    rows = torch.randperm(len(train), generator=generator)[:limit].sort().values
    rows = rows.to(train.x.device)
    return Split(train.x[rows], train.y[rows])


def final_metrics(
    network: nn.Module, objective: Objective, data: PreparedData, training: TrainingSpec
) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """The trained network's metrics on each part, the training part's on
    `scored_training_part` (with `scored_rows` when that is a sample); and its outputs on
    each part scored, for what reads them after training (`TrainResult.outputs`)."""
    train = scored_training_part(data.train, training)
    metrics: dict[str, dict[str, Any]] = {}
    outputs: dict[str, torch.Tensor] = {}
    for part, split in (("train", train), ("validation", data.val), ("test", data.test)):
        metrics[part], out = _scored(network, objective, split)
        if out is not None:
            outputs[part] = out
    if len(train) < len(data.train):
        metrics["train"]["scored_rows"] = len(train)
    for part, baseline in data.baselines.items():
        if metrics[part]:
            metrics[part].update(baseline)
    return metrics, outputs


def history_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": metrics[k] for k in HISTORY_METRICS if k in metrics}


class _EpochWatch(Watch):
    """The shared watcher, with the progress and the deadline's wording of epochs."""

    def __init__(self, reporter: Reporter, interval: float, epochs: int) -> None:
        super().__init__(reporter, interval)
        self.epochs = epochs

    def check(
        self, epoch: int, *, finished: bool = False, batch: int = 0, batches: int = 0
    ) -> None:
        """`epoch` is under way (`batch` of `batches` done), or `finished` (the last one
        finished is past any deadline)."""
        if batches:
            self.reporter.progress(batch, batches)
        if not finished:
            if self.past_deadline:
                self.check_deadline(f"in epoch {epoch} of {self.epochs}")
        elif epoch < self.epochs and self.past_deadline:
            self.check_deadline(f"after epoch {epoch} of {self.epochs}")
        self.poll()


def fit(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    data: PreparedData,
    training: TrainingSpec,
    reporter: Reporter,
    config: dict[str, Any],
    *,
    penalty: Callable[[], torch.Tensor] | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generators: Sequence[torch.Generator] = (),
    distiller: Distiller | None = None,
    cancel_poll_seconds: float = 1.0,
) -> TrainResult:
    """Mini-batch training with per-epoch reshuffling, validation, checkpoints, early stopping.

    `penalty` is added to each batch's loss (L1/L2 terms); `batch_transform` maps each
    training batch's inputs before the forward pass (augmentation; never applied to
    validation or test data), drawing from `generators`, which checkpoints carry.
    `distiller`: the loss is a teacher's soft term beside the labels' (`models.distillation`),
    and the history shows both as `train_soft_loss` and `train_hard_loss`.

    Cancelled or released mid-epoch, it checkpoints where it stopped (the batch, the epoch's
    shuffle, the random states, the loss so far) before letting the exception through; a
    job resumed from there trains the rest of that epoch and ends exactly as if it had
    never stopped (on the CPU, same seed).
    """
    device = data.train.x.device
    generator = torch.Generator(device="cpu").manual_seed(training.seed)
    start_epoch = 1
    best_val = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0

    scheduler = LRScheduler(optimizer, training.lr_schedule, training.epochs)  # before resume
    clip = training.clip_grad_norm
    skip = 0  # batches of `start_epoch` already trained (resumed from a mid-epoch checkpoint)
    # Their summed losses (each batch's mean x its size: the loss, then a distillation's
    # soft and hard terms) and examples.
    carried: tuple[list[float], int] = ([], 0)
    resumed = reporter.resume()
    if resumed is not None:
        state, meta = resumed.model_state, resumed.meta
        network.load_state_dict(prefixed(state, "net.", device))
        best_state = prefixed(state, "best.", device) or None
        _restore_random_state(state, generator, generators, device)
        if resumed.optimizer_tensors or meta.get("optimizer"):
            restore_optimizer_state(optimizer, resumed.optimizer_tensors, meta)
        start_epoch = int(meta["epoch"]) + 1
        if meta.get("partial"):  # written inside `epoch`: go on from the next batch
            start_epoch, skip = int(meta["epoch"]), int(meta["batch"])
            sums = [float(meta["loss_sum"]), *map(float, meta.get("term_sums", []))]
            carried = (sums, int(meta["seen"]))
        saved_best = meta.get("best_val_loss")
        best_val = math.inf if saved_best is None else float(saved_best)
        bad_epochs = int(meta.get("bad_epochs", 0))

    def save(epoch: int, metrics: dict[str, Any], rng: torch.Tensor, **place: Any) -> None:
        """`rng`: the shuffling generator's state before the next permutation to draw;
        `place`: where inside `epoch` it stopped (none: the epoch is whole)."""
        tensors = {f"net.{k}": v for k, v in network.state_dict().items()}
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        tensors.update(_random_state(rng, generators, device))
        meta = {
            "epoch": epoch,
            "best_val_loss": best_val if math.isfinite(best_val) else None,
            "bad_epochs": bad_epochs,
            **place,
        }
        reporter.checkpoint(epoch, tensors, optimizer, {**meta, "metrics": metrics})
        checkpoints.saved()

    def save_inside(
        epoch: int,
        done: int,
        epoch_rng: torch.Tensor,
        losses: list[torch.Tensor],
        sizes: list[int],
        carried: tuple[list[float], int],
    ) -> None:
        """A checkpoint inside `epoch`, after `done` batches: a resume draws the epoch's
        shuffle again (`epoch_rng`) and goes on from the next batch with the loss so far."""
        sums, seen = _summed(losses, sizes, carried)
        place: dict[str, Any] = {"partial": True, "batch": done, "batches": batches,
                                 "loss_sum": sums[0], "seen": seen}  # fmt: skip
        if len(sums) > 1:
            place["term_sums"] = sums[1:]
        save(epoch, {"batch": done, "batches": batches}, epoch_rng, **place)

    checkpoints = CheckpointClock(training.checkpoint_every, training.checkpoint_seconds)
    watch = _EpochWatch(reporter, cancel_poll_seconds, training.epochs)
    train, n = data.train, len(data.train)
    scale = objective.loss_scale()
    epoch = start_epoch - 1
    stop_early = False
    skip_single = _has_batch_norm(network) and n > 1
    batches = -(-n // training.batch_size)
    # Where a stop would leave it: batches done in `epoch` (None: between epochs), the
    # shuffling state before `epoch`'s permutation, and the last whole epoch's checkpoint.
    done: int | None = None
    epoch_rng = generator.get_state()
    last_epoch = last_saved = start_epoch - 1
    last_metrics: dict[str, Any] = {}
    losses: list[torch.Tensor] = []
    sizes: list[int] = []
    if distiller is not None and batch_transform is None:
        distiller.cache(train.x)  # the inputs never change: the teacher's logits once
    try:
        for epoch in range(start_epoch, training.epochs + 1):
            started = time.perf_counter()
            network.train()
            epoch_rng = generator.get_state()
            perm = torch.randperm(n, generator=generator).to(device)
            # Detached batch losses, summed once at the end of the epoch: no kernel and no
            # host synchronisation per batch beyond the step itself.
            losses, sizes = [], []
            done, skip = skip, 0
            for i in range(done * training.batch_size, n, training.batch_size):
                scheduler.update(epoch, i // training.batch_size, batches)
                idx = perm[i : i + training.batch_size]
                done = i // training.batch_size + 1
                if skip_single and len(idx) < 2:
                    continue  # BatchNorm cannot normalise a batch of one
                xb, yb = train.x[idx], train.y[idx]
                if batch_transform is not None:  # training-time augmentation, on the device
                    xb = batch_transform(xb)
                with torch.autocast(device.type, torch.bfloat16, enabled=training.mixed_precision):
                    out = network(xb)
                    loss = objective.loss(out, yb)
                terms = loss.detach().reshape(1)
                if distiller is not None:  # the labels' loss is the hard term
                    soft = distiller.soft_loss(out, distiller.batch_logits(xb, idx))
                    loss = distiller.alpha * soft + (1 - distiller.alpha) * loss
                    terms = torch.stack([loss, soft, terms[0]]).detach()
                objective_value = loss + penalty() if penalty is not None else loss
                optimizer.zero_grad(set_to_none=True)
                objective_value.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(network.parameters(), clip)
                optimizer.step()
                losses.append(terms)
                sizes.append(len(idx))
                watch.check(epoch, batch=done, batches=batches)
                if checkpoints.overdue() and done < batches:  # a long epoch: save inside it
                    save_inside(epoch, done, epoch_rng, losses, sizes, carried)

            sums, seen = _summed(losses, sizes, carried)
            carried = ([], 0)
            train_loss = sums[0] / max(seen, 1) * scale
            if not math.isfinite(train_loss):
                raise DivergedError(
                    f"training diverged at epoch {epoch}: the training loss is {train_loss} "
                    "(try a smaller learning rate or standardised inputs)"
                )
            val = evaluate(network, objective, data.val)
            metrics = history_metrics("val", val)
            if len(sums) == 3:  # distillation: the loss's two terms
                metrics["train_soft_loss"] = sums[1] / max(seen, 1)
                metrics["train_hard_loss"] = sums[2] / max(seen, 1)
            if training.lr_schedule is not None:
                metrics["lr"] = scheduler.lr
            val_loss = val.get("loss")
            reporter.epoch_end(
                EpochRecord(epoch, train_loss, val_loss, metrics, time.perf_counter() - started)
            )

            if training.early_stopping is not None and val_loss is not None:
                if val_loss < best_val - training.early_stopping.min_delta:
                    best_val, bad_epochs = val_loss, 0
                    if training.early_stopping.restore_best:
                        best_state = copy.deepcopy(network.state_dict())
                else:
                    bad_epochs += 1
                    stop_early = bad_epochs >= training.early_stopping.patience
            done = None
            last_epoch = epoch
            last_metrics = {"train_loss": train_loss, "val_loss": val_loss, **metrics}
            if checkpoints.due(epoch) or epoch == training.epochs or stop_early:
                save(epoch, last_metrics, generator.get_state())
                last_saved = epoch
            if stop_early:
                break
            watch.check(epoch, finished=True)
    except Cancelled as stop:
        if stop.keeps_state:
            if done is not None:
                save_inside(epoch, done, epoch_rng, losses, sizes, carried)
            elif last_saved != last_epoch:
                save(last_epoch, last_metrics, generator.get_state())
        raise

    if best_state is not None:
        network.load_state_dict(best_state)
    metrics, outputs = final_metrics(network, objective, data, training)
    return TrainResult(network, config, metrics, epoch, outputs=outputs)


def train_network(
    build: Callable[[dict[str, Any]], nn.Module],
    config: dict[str, Any],
    spec: JobSpec,
    data: PreparedData,
    reporter: Reporter,
    *,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    generators: Sequence[torch.Generator] = (),
    distiller: Distiller | None = None,
    cancel_poll_seconds: float = 1.0,
) -> TrainResult:
    """Seed, build the network from `config` on the data's device, and `fit` it with the
    spec's optimizer and the task's objective (and `distiller`'s teacher)."""
    torch.manual_seed(spec.training.seed)
    net = build(config).to(data.train.x.device)
    optimizer = build_optimizer(spec.optimizer, net.parameters())
    objective = Objective(data.task, data.num_classes, data.target_std, data.target_mean)
    return fit(
        net,
        optimizer,
        objective,
        data,
        spec.training,
        reporter,
        config,
        batch_transform=batch_transform,
        generators=generators,
        distiller=distiller,
        cancel_poll_seconds=cancel_poll_seconds,
    )


def _summed(
    losses: list[torch.Tensor], sizes: list[int], carried: tuple[list[float], int]
) -> tuple[list[float], int]:
    """The epoch's losses so far (batch means weighted by batch size, summed; each batch's
    entry holds the loss, then any terms it is made of) and examples."""
    sums, seen = list(carried[0]), carried[1]
    if losses:
        weights = torch.tensor(sizes, dtype=torch.float64, device=losses[0].device)
        totals = (torch.stack(losses).double().T @ weights).tolist()
        sums += [0.0] * (len(totals) - len(sums))
        sums = [a + b for a, b in zip(sums, totals, strict=False)]
    return sums or [0.0], seen + sum(sizes)


def _random_state(
    shuffle: torch.Tensor, generators: Sequence[torch.Generator], device: torch.device
) -> dict[str, torch.Tensor]:
    """What a resume needs to draw the same numbers: the shuffling generator's state, the
    global generators (dropout) and the kind's own (augmentation)."""
    tensors = {"rng": shuffle, "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda_rng"] = torch.cuda.get_rng_state(device)
    tensors.update({f"aux_rng.{i}": g.get_state() for i, g in enumerate(generators)})
    return tensors


def _restore_random_state(
    state: dict[str, torch.Tensor],
    shuffle: torch.Generator,
    generators: Sequence[torch.Generator],
    device: torch.device,
) -> None:
    """The inverse of `_random_state`; a checkpoint from before these were kept has only
    `rng`, and the rest stay as seeded."""
    shuffle.set_state(state["rng"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    for i, generator in enumerate(generators):
        if f"aux_rng.{i}" in state:
            generator.set_state(state[f"aux_rng.{i}"])


def _has_batch_norm(network: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())
