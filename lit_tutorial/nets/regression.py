"""The tutorial's regression nets: steps 5/5-1/6 (``nn.Sequential``), 7 (``TwoLayerNet``), 8 (``DynamicNet``)."""

import torch
from torch import nn


def two_layer_sequential(d_in: int = 1000, h: int = 100, d_out: int = 10) -> nn.Sequential:
    """Step 5's ``nn.Sequential(Linear, ReLU, Linear)``."""
    return nn.Sequential(nn.Linear(d_in, h), nn.ReLU(), nn.Linear(h, d_out))


class TwoLayerNet(nn.Module):
    """Step 7: the same net as a custom ``nn.Module``."""

    def __init__(self, d_in: int = 1000, h: int = 100, d_out: int = 10) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, h)
        self.linear2 = nn.Linear(h, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_relu = self.linear1(x).clamp(min=0)
        return self.linear2(h_relu)


class DynamicNet(nn.Module):
    """Step 8: reuses ``middle_linear`` 0-3 times per forward pass, drawn at random."""

    def __init__(self, d_in: int = 1000, h: int = 100, d_out: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.input_linear = nn.Linear(d_in, h)
        self.middle_linear = nn.Linear(h, h)
        self.output_linear = nn.Linear(h, d_out)
        # Its own generator, so the depth draws repeat run to run and are saved in checkpoints
        # without touching the global RNG that weight init and shuffling use.
        self.depth_rng = torch.Generator().manual_seed(seed)

    def draw_depth(self) -> int:
        """How many times the next forward pass applies ``middle_linear`` (the tutorial's ``randint(0, 3)``)."""
        return int(torch.randint(0, 4, (1,), generator=self.depth_rng))

    def get_extra_state(self) -> dict:
        return {"depth_rng": self.depth_rng.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.depth_rng.set_state(state["depth_rng"])

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        h_relu = self.input_linear(x).clamp(min=0)
        for _ in range(self.draw_depth() if depth is None else depth):
            h_relu = self.middle_linear(h_relu).clamp(min=0)
        return self.output_linear(h_relu)
