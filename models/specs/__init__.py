"""Job specifications: what a user posts to `POST /jobs`, validated before any code runs.

Every model kind is one member of the discriminated union `ModelSpec` (on `kind`), and
every optimizer one member of `OptimizerSpec` (on `name`), so a field that does not
belong to the chosen variant is refused instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from models.specs.base import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_HORIZON,
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    MAX_POLY_DEGREE,
    MAX_WINDOW,
    Activation,
    DistillationSpec,
    Identifier,
    Name,
    StrictModel,
    Task,
)
from models.specs.cnn import (
    MAX_CHANNELS,
    MAX_CNN_LAYERS,
    MAX_KERNEL,
    MAX_PADDING,
    ActivationLayerSpec,
    AugmentationSpec,
    BatchNormLayerSpec,
    CNNSpec,
    ConvLayerSpec,
    DropoutLayerSpec,
    ElasticSpec,
    GlobalAvgPoolLayerSpec,
    LayerSpec,
    NormalizeSpec,
    PoolLayerSpec,
)
from models.specs.networks import LinearSpec, MLPSpec, RNNSpec
from models.specs.optimizers import (
    AdaGradSpec,
    AdamSpec,
    Eps,
    LearningRate,
    MomentumSpec,
    NesterovSpec,
    OptimizerSpec,
    RMSPropSpec,
    SGDSpec,
    WeightDecay,
)
from models.specs.presets import DQN_DEFAULTS, with_environment_defaults
from models.specs.recipes import RECIPES, Recipe, expand_recipe
from models.specs.rl import (
    GRID_CELLS,
    MAX_REPLAY_BUFFER,
    RL_KINDS,
    DQNSpec,
    ExplorationSpec,
    GridWorldOptions,
    TabularSpec,
)
from models.specs.training import (
    MAX_TOTAL_STEPS,
    RL_TRAINING_FIELDS,
    SUPERVISED_TRAINING_FIELDS,
    EarlyStoppingSpec,
    LRScheduleSpec,
    TrainingSpec,
)

__all__ = [
    "DQN_DEFAULTS",
    "GRID_CELLS",
    "MAX_BATCH_SIZE",
    "MAX_CHANNELS",
    "MAX_CNN_LAYERS",
    "MAX_EPOCHS",
    "MAX_HORIZON",
    "MAX_KERNEL",
    "MAX_LAYERS",
    "MAX_LAYER_WIDTH",
    "MAX_PADDING",
    "MAX_POLY_DEGREE",
    "MAX_REPLAY_BUFFER",
    "MAX_TOTAL_STEPS",
    "MAX_WINDOW",
    "MODEL_FIELD",
    "MODEL_SPECS",
    "RECIPES",
    "RL_KINDS",
    "RL_TRAINING_FIELDS",
    "SUPERVISED_TRAINING_FIELDS",
    "Activation",
    "ActivationLayerSpec",
    "AdaGradSpec",
    "AdamSpec",
    "AugmentationSpec",
    "BatchNormLayerSpec",
    "CNNSpec",
    "ConvLayerSpec",
    "DQNSpec",
    "DistillationSpec",
    "DropoutLayerSpec",
    "EarlyStoppingSpec",
    "ElasticSpec",
    "Eps",
    "ExplorationSpec",
    "GlobalAvgPoolLayerSpec",
    "GridWorldOptions",
    "Identifier",
    "JobSpec",
    "LRScheduleSpec",
    "LayerSpec",
    "LearningRate",
    "LinearSpec",
    "MLPSpec",
    "ModelSpec",
    "MomentumSpec",
    "Name",
    "NesterovSpec",
    "NormalizeSpec",
    "OptimizerSpec",
    "PoolLayerSpec",
    "RMSPropSpec",
    "RNNSpec",
    "Recipe",
    "SGDSpec",
    "StrictModel",
    "TabularSpec",
    "Task",
    "TrainingSpec",
    "WeightDecay",
    "add_model_spec",
]


MODEL_FIELD = Field(discriminator="kind", description="The model, chosen by `kind`.")
ModelSpec = Annotated[LinearSpec | MLPSpec | CNNSpec | RNNSpec | DQNSpec | TabularSpec, MODEL_FIELD]
# The union's members at run time: Keiko's own, then those of kinds registered from outside
# (`add_model_spec`), which static types do not know of.
MODEL_SPECS: list[type[BaseModel]] = list(get_args(get_args(ModelSpec)[0]))


class JobSpec(StrictModel):
    """Everything a training job needs; stored verbatim with the job."""

    dataset_id: Identifier | None = Field(
        None, description="Dataset to train on (none for dqn, q_learning and sarsa)."
    )
    test_dataset_id: Identifier | None = Field(
        None, description="Separate dataset used only for the final test."
    )
    task: Task = Field(
        description="`regression`, `classification`, `forecasting` (a table time series) or "
        "`reinforcement` (dqn, q_learning and sarsa; the default for them)."
    )
    target: Name | None = Field(
        None,
        description="Target column (tables). Arrays (NPZ) use `y` and leave this empty.",
    )
    features: list[Name] | None = Field(
        None,
        max_length=100_000,
        description="Input columns (default: every column but the target).",
    )
    window: int | None = Field(
        None, ge=1, le=MAX_WINDOW, description="Forecasting: past steps the model sees."
    )
    horizon: int | None = Field(
        None, ge=1, le=MAX_HORIZON, description="Forecasting: steps ahead to predict (default 1)."
    )
    time_column: Name | None = Field(
        None,
        description="Forecasting: column giving the time order (numbers or dates); default: the "
        "file's row order. It is not an input.",
    )
    seasonal_period: int | None = Field(
        None,
        ge=1,
        le=MAX_WINDOW,
        description="Forecasting: season length in steps, for the seasonal-naive baseline metric.",
    )
    recipe: Name | None = Field(
        None,
        description="A recipe's name (`GET /recipes`): the job is the recipe's spec with this "
        "request's other fields on top (objects field by field; a model of another `kind` or "
        "an optimizer of another `name` replaces the recipe's). The stored spec is the result.",
    )
    model: ModelSpec
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: AdamSpec(name="adam"), description="Default: Adam, lr 0.001."
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @model_validator(mode="before")
    @classmethod
    def _reinforcement_task_by_default(cls, data: object) -> object:
        if isinstance(data, dict):
            data = expand_recipe(data)
        if isinstance(data, dict) and "task" not in data:
            model = data.get("model")
            if isinstance(model, dict) and model.get("kind") in RL_KINDS:
                data = {**data, "task": "reinforcement"}
        if isinstance(data, dict):
            model = data.get("model")
            if isinstance(model, dict) and model.get("kind") == "dqn":
                default_env = DQNSpec.model_fields["env"].default
                data = with_environment_defaults(data, default_env)
        return data

    @model_serializer(mode="wrap")
    def _only_what_applies(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        """A job's stored (and answered) spec holds only the training settings of its kind's
        family: no `total_steps` on a supervised job, no `epochs` on an RL one. Validating
        it again gives the same spec (the others are at their defaults, which is all either
        family allows). The schema is unchanged: every field may still be sent, and with no
        return annotation pydantic documents the answer with the model's own schema."""
        data = handler(self)
        training = data.get("training") if isinstance(data, dict) else None
        if isinstance(training, dict):
            unused = (
                SUPERVISED_TRAINING_FIELDS if self.task == "reinforcement" else RL_TRAINING_FIELDS
            )
            for name in unused:
                training.pop(name, None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        model = self.model
        closed_form = isinstance(model, LinearSpec) and model.solver == "normal_equation"
        if closed_form and self.task == "classification":
            raise ValueError(
                "logistic/softmax regression has no closed form: use solver 'sgd' "
                "for classification"
            )
        if isinstance(model, MLPSpec) and model.batch_norm and self.training.batch_size < 2:
            raise ValueError("batch_norm needs batch_size of at least 2")
        if isinstance(model, CNNSpec) and model.uses_batch_norm() and self.training.batch_size < 2:
            raise ValueError("batch_norm (and resnet) needs batch_size of at least 2")
        distillation = getattr(model, "distillation", None)
        if distillation is not None and self.task != "classification":
            raise ValueError(
                f"model.distillation: a teacher's class probabilities train a classifier; "
                f"this job's task is {self.task!r}"
            )
        self._check_forecasting()
        self._check_reinforcement()
        if self.features is not None:
            if len(set(self.features)) != len(self.features):
                raise ValueError("features contains a column twice")
            if self.target is not None and self.target in self.features:
                raise ValueError(f"target {self.target!r} cannot also be a feature")
        return self

    def _check_forecasting(self) -> None:
        forecast_fields = {
            "window": self.window,
            "horizon": self.horizon,
            "time_column": self.time_column,
            "seasonal_period": self.seasonal_period,
        }
        if self.task != "forecasting":
            given = [name for name, value in forecast_fields.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} belong to task 'forecasting' only")
            return
        if self.window is None or self.target is None:
            raise ValueError("task 'forecasting' needs 'target' (the column) and 'window'")
        if not isinstance(self.model, RNNSpec | MLPSpec):
            raise ValueError(
                f"task 'forecasting' trains an rnn or an mlp on windows, not {self.model.kind}"
            )
        if self.time_column is not None and self.time_column in (
            self.target,
            *(self.features or []),
        ):
            raise ValueError(f"time_column {self.time_column!r} cannot also be an input")
        if self.seasonal_period is not None and self.seasonal_period > self.window:
            raise ValueError(
                f"seasonal_period ({self.seasonal_period}) cannot exceed window ({self.window}): "
                "the seasonal-naive baseline reads one season back from the window"
            )

    def _check_reinforcement(self) -> None:
        if not isinstance(self.model, DQNSpec | TabularSpec):
            if self.dataset_id is None:
                raise ValueError(f"dataset_id is required for the {self.model.kind} kind")
            if self.task == "reinforcement":
                raise ValueError("task 'reinforcement' needs kind dqn, q_learning or sarsa")
            given = self.training.changed(RL_TRAINING_FIELDS)
            if given:
                raise ValueError(
                    f"training.{', training.'.join(given)} belong to reinforcement learning "
                    "(kinds dqn, q_learning, sarsa)"
                )
            return
        kind = self.model.kind
        if self.task != "reinforcement":
            raise ValueError(f"kind {kind} learns from an environment: task is 'reinforcement'")
        if self.dataset_id is not None or self.test_dataset_id is not None:
            raise ValueError(f"kind {kind} learns from its environment and takes no dataset")
        given = self.training.changed(SUPERVISED_TRAINING_FIELDS)
        if given:
            raise ValueError(
                f"training.{', training.'.join(given)} do not apply to kind {kind}: it counts "
                "training.total_steps (DQN's batch_size is model.batch_size)"
            )
        if isinstance(self.model, TabularSpec) and self.optimizer != AdamSpec(name="adam"):
            raise ValueError(f"kind {kind} updates its Q-table with model.alpha, not an optimizer")
        if self.training.eval_interval is not None and (
            self.training.eval_interval > self.training.total_steps
        ):
            raise ValueError("training.eval_interval cannot exceed training.total_steps")

    @property
    def resolved_eval_interval(self) -> int:
        """Environment steps between evaluations: as given, or a 20th of the run."""
        training = self.training
        return training.eval_interval or max(1, training.total_steps // 20)

    @property
    def resolved_horizon(self) -> int:
        return self.horizon or 1


def add_model_spec(spec: type[BaseModel]) -> None:
    """Make `spec` (a model kind's, with a `kind: Literal[...]` field) one more member of
    `JobSpec.model`'s union, for a kind registered from outside Keiko (`models.registry`).
    Rebuilds `JobSpec` in place, so every later validation and the OpenAPI schema know it;
    an API route built before this call would not, which is why plugins load first."""
    if spec in MODEL_SPECS:
        return
    kind = spec.model_fields["kind"].annotation
    taken = {get_args(m.model_fields["kind"].annotation)[0] for m in MODEL_SPECS}
    if not get_args(kind) or get_args(kind)[0] in taken:
        raise ValueError(f"{spec.__name__}.kind must be a Literal naming a new kind")
    MODEL_SPECS.append(spec)
    members: Any = Union.__getitem__(tuple(MODEL_SPECS))
    annotation: Any = Annotated[members, MODEL_FIELD]
    JobSpec.model_fields["model"] = FieldInfo.from_annotation(annotation)
    JobSpec.model_rebuild(force=True)
