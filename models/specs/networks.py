"""Specs of the dense and recurrent kinds: linear, mlp and rnn."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from models.specs.base import (
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    MAX_POLY_DEGREE,
    Activation,
    DistillationSpec,
    StrictModel,
    Task,
    _finite,
)


class LinearSpec(StrictModel):
    """Linear, logistic (two classes) or softmax regression."""

    kind: Literal["linear"]
    solver: Literal["normal_equation", "sgd"] | None = Field(
        None,
        description="`normal_equation` solves (XᵀX + λI)w = Xᵀy in closed form (regression only, "
        "no l1); `sgd` is mini-batch gradient descent with the chosen optimizer. "
        "Default: normal_equation for regression without l1, else sgd.",
    )
    degree: int = Field(1, ge=1, le=MAX_POLY_DEGREE, description="Polynomial feature degree.")
    l1: float = Field(0.0, ge=0, description="L1 (lasso) penalty coefficient.")
    l2: float = Field(0.0, ge=0, description="L2 (ridge) penalty coefficient.")
    fit_intercept: bool = Field(True, description="Learn a bias term (never penalised).")

    @model_validator(mode="after")
    def _finite_penalties(self) -> LinearSpec:
        _finite(self.l1, "l1")
        _finite(self.l2, "l2")
        if self.solver == "normal_equation" and self.l1 > 0:
            raise ValueError(
                "l1 has no closed-form solution: use solver 'sgd' for lasso/elastic net"
            )
        return self

    def resolved_solver(self, task: Task) -> Literal["normal_equation", "sgd"]:
        if self.solver is not None:
            return self.solver
        return "normal_equation" if task == "regression" and self.l1 == 0 else "sgd"


class MLPSpec(StrictModel):
    """Multi-layer perceptron: Linear -> [BatchNorm] -> activation -> [Dropout], repeated."""

    kind: Literal["mlp"]
    hidden_layers: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=lambda: [64, 32],
        max_length=MAX_LAYERS,
        description="Width of each hidden layer.",
    )
    activation: Activation = "relu"
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout probability after each hidden layer."
    )
    batch_norm: bool = Field(False, description="Batch normalisation before each activation.")
    init: Literal["xavier", "he"] | None = Field(
        None, description="Weight init; default He for relu/leaky_relu, Xavier for sigmoid/tanh."
    )
    distillation: DistillationSpec | None = Field(
        None, description="Learn from a trained teacher's outputs too (classification)."
    )

    @field_validator("dropout")
    @classmethod
    def _finite_dropout(cls, value: float) -> float:
        return _finite(value, "dropout")

    def resolved_init(self) -> Literal["xavier", "he"]:
        if self.init is not None:
            return self.init
        return "he" if self.activation in ("relu", "leaky_relu") else "xavier"


class RNNSpec(StrictModel):
    """Recurrent network over (N, T, F) sequences; the last step's hidden state (both
    directions' when bidirectional) feeds a dense head."""

    kind: Literal["rnn"]
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Elman RNN, LSTM or GRU.")
    hidden_size: int = Field(64, ge=1, le=MAX_LAYER_WIDTH, description="Units per layer.")
    num_layers: int = Field(1, ge=1, le=MAX_LAYERS, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Also read each sequence backwards.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout between stacked layers (needs num_layers > 1)."
    )
    nonlinearity: Literal["tanh", "relu"] = Field(
        "tanh", description="Activation of the plain `rnn` cell (LSTM and GRU have their own)."
    )
    head: list[Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]] = Field(
        default_factory=list, max_length=MAX_LAYERS, description="Hidden widths of the head."
    )
    activation: Activation = Field("relu", description="Activation of the head's layers.")
    distillation: DistillationSpec | None = Field(
        None, description="Learn from a trained teacher's outputs too (classification)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RNNSpec:
        _finite(self.dropout, "dropout")
        if self.dropout > 0 and self.num_layers == 1:
            raise ValueError("dropout acts between stacked layers: it needs num_layers > 1")
        if self.cell != "rnn" and self.nonlinearity != "tanh":
            raise ValueError(f"nonlinearity applies to the plain rnn cell, not {self.cell}")
        return self
