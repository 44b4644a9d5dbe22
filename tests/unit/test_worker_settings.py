"""Worker start-up settings."""

from __future__ import annotations

import torch

from service.settings import Settings
from workers.tasks import apply_torch_threads


def test_torch_threads_are_set_only_when_asked() -> None:
    before = torch.get_num_threads()
    try:
        apply_torch_threads(Settings(torch_threads=before + 1))
        assert torch.get_num_threads() == before + 1
        torch.set_num_threads(before)
        apply_torch_threads(Settings())
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
