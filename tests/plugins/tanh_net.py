"""A model kind from outside Keiko, as a user's plugin module would define it: its spec and
its network, nothing else. `KEIKO_KINDS=tests.plugins.tanh_net` makes the API and the
worker import it (tests/e2e/test_plugin_kind.py)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import nn

from models.base import DataShape
from models.kind import ModelKind, Sizing
from models.registry import register
from models.specs import JobSpec, StrictModel


class TanhNetSpec(StrictModel):
    """One hidden layer of tanh units."""

    kind: Literal["tanh_net"]
    width: int = Field(8, ge=1, le=256, description="Hidden units.")


class TanhNet(ModelKind):
    name = "tanh_net"
    spec = TanhNetSpec
    example: ClassVar[dict[str, Any]] = {"kind": "tanh_net"}

    def config(self, spec: JobSpec, shape: Sizing) -> dict[str, Any]:
        model = spec.model
        assert isinstance(model, TanhNetSpec) and isinstance(shape, DataShape)
        return {"inputs": shape.features, "width": model.width, "outputs": shape.outputs}

    def build(self, config: dict[str, Any]) -> nn.Module:
        width = config["width"]
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(config["inputs"], width),
            nn.Tanh(),
            nn.Linear(width, config["outputs"]),
        )


register(TanhNet())
