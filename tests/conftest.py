import pytest
import torch
from torch import nn

from raedit.encoders import Encoder


class PatchEncoder(Encoder):
    """A small deterministic stand-in for a frozen encoder: a fixed random patch projection."""

    name = "patch-test"
    resize_mode = "bilinear"

    def __init__(self, input_size: int = 32, patch_size: int = 8, channels: int = 12) -> None:
        super().__init__(pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25))
        self.input_size, self.patch_size, self.channels = input_size, patch_size, channels
        generator = torch.Generator().manual_seed(0)
        self.projection = nn.Conv2d(3, channels, patch_size, stride=patch_size)
        with torch.no_grad():
            self.projection.weight.copy_(torch.randn(self.projection.weight.shape, generator=generator) * 0.1)
            self.projection.bias.copy_(torch.randn(channels, generator=generator))
        self.requires_grad_(False)

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        return self.projection(normalized).flatten(2).transpose(1, 2)


@pytest.fixture
def patch_encoder() -> PatchEncoder:
    return PatchEncoder().eval()


def pytest_configure(config: pytest.Config) -> None:
    # One thread per test process (`make test` runs two with pytest-xdist): small tensor work with two threads
    # on a loaded 2-core machine is many times slower than with one.
    torch.set_num_threads(1)
