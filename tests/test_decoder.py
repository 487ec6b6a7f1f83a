import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import ViTMAEConfig
from transformers.models.vit_mae.modeling_vit_mae import ViTMAELayer

from raedit.core.errors import RaeditError
from raedit.decoder import DecoderConfig, ViTDecoder, position_table_with_cls
from raedit.interop.official_decoder import official_decoder_to_raedit

# Key names and shapes of the released checkpoints (copied from shared/reference/official-rae).
OFFICIAL = Path(__file__).resolve().parent / "data" / "official-rae"


def official_layout(size: str) -> dict:
    name = {"B": "ViTB", "L": "ViTL", "XL": "ViTXL"}[size]
    return json.loads((OFFICIAL / f"Decoder-{name}-DINOv2B-256.json").read_text())


@pytest.mark.parametrize("size", ["B", "L", "XL"])
def test_released_decoder_keys_and_shapes_map_by_renaming(size):
    layout = official_layout(size)
    with torch.device("meta"):
        decoder = ViTDecoder(DecoderConfig(size, in_channels=768, grid=(16, 16), patch_size=16))
    ours = {key: tuple(value.shape) for key, value in decoder.state_dict().items()}
    renamed = official_decoder_to_raedit({key: tuple(shape) for key, shape in layout["state_dict"].items()})
    assert renamed == ours
    # The released count includes the frozen position table (an nn.Parameter there, a buffer here).
    count = sum(p.numel() for p in decoder.parameters()) + decoder.pos_embed.numel()
    assert count == layout["num_params"]


def mae_sincos_reference(width: int, grid: int) -> np.ndarray:
    """The MAE/ViT-MAE 2D sin-cos table written from its definition: meshgrid(w, h), first half from grid[0]."""
    grid_w, grid_h = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def one_axis(dim, positions):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([one_axis(width // 2, grid_w), one_axis(width // 2, grid_h)], axis=1)
    return np.concatenate([np.zeros((1, width)), table], axis=0)


def test_position_table_is_the_mae_sincos_table():
    ours = position_table_with_cls(64, (5, 5)).numpy()
    np.testing.assert_allclose(ours, mae_sincos_reference(64, 5), atol=1e-6)
    assert np.all(ours[0] == 0)


class OfficialLayoutDecoder(nn.Module):
    """The released decoder's forward, built from transformers' ViT-MAE layers under the released key names."""

    def __init__(self, in_channels, width, depth, heads, mlp, patch, grid):
        super().__init__()
        config = ViTMAEConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=mlp,
                              layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True)
        self.decoder_embed = nn.Linear(in_channels, width)
        self.decoder_pos_embed = nn.Parameter(
            torch.from_numpy(mae_sincos_reference(width, grid)).float().unsqueeze(0), requires_grad=False)
        self.trainable_cls_token = nn.Parameter(torch.randn(1, 1, width))
        self.decoder_layers = nn.ModuleList(ViTMAELayer(config) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(width, eps=1e-12)
        self.decoder_pred = nn.Linear(width, patch * patch * 3)
        self.patch, self.grid = patch, grid

    def forward(self, tokens):
        x = self.decoder_embed(tokens)
        x = torch.cat([self.trainable_cls_token.expand(len(x), -1, -1), x], 1) + self.decoder_pos_embed
        for layer in self.decoder_layers:
            out = layer(x)
            x = out[0] if isinstance(out, tuple) else out
        logits = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        b, g, p = len(tokens), self.grid, self.patch
        logits = logits.reshape(b, g, g, p, p, 3)
        return torch.einsum("nhwpqc->nchpwq", logits).reshape(b, 3, g * p, g * p)


# transformers 5 renamed the ViT-MAE layer's sub-modules; the released files use the transformers 4 names.
TRANSFORMERS5_TO_RELEASED = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def released_key_names(state_dict):
    renamed = {}
    for key, value in state_dict.items():
        for new, old in TRANSFORMERS5_TO_RELEASED.items():
            key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = value
    return renamed


@pytest.mark.parametrize("patch", [4, 8])
def test_released_layout_computes_the_same_function(patch):
    torch.manual_seed(0)
    reference = OfficialLayoutDecoder(in_channels=24, width=128, depth=2, heads=2, mlp=512, patch=patch, grid=4)
    for parameter in reference.parameters():
        if parameter.requires_grad:
            nn.init.normal_(parameter, std=0.2)
    reference.eval()
    ours = ViTDecoder(DecoderConfig("tiny", in_channels=24, grid=(4, 4), patch_size=patch))
    ours.load_state_dict(official_decoder_to_raedit(released_key_names(reference.state_dict())), strict=True)
    tokens = torch.randn(3, 16, 24)
    expected = reference(tokens)
    got = ours(tokens)
    assert got.shape == (3, 3, 4 * patch, 4 * patch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_patch_size_sets_the_output_resolution():
    tokens = torch.randn(1, 16 * 16, 32)
    assert ViTDecoder(DecoderConfig("tiny", 32, (16, 16), 16))(tokens).shape == (1, 3, 256, 256)
    assert ViTDecoder(DecoderConfig("tiny", 32, (16, 16), 32))(tokens).shape == (1, 3, 512, 512)


def test_unpatchify_places_each_patch_value_in_row_column_channel_order():
    decoder = ViTDecoder(DecoderConfig("tiny", 8, (2, 3), 2))
    # value = 1000*token + 100*row-in-patch + 10*column-in-patch + channel
    token, row, col, channel = torch.meshgrid(torch.arange(6), torch.arange(2), torch.arange(2),
                                              torch.arange(3), indexing="ij")
    patches = (1000 * token + 100 * row + 10 * col + channel).reshape(1, 6, 12).float()
    image = decoder.unpatchify(patches)
    assert image.shape == (1, 3, 4, 6)
    # pixel (y=3, x=4): token row 1, token column 2 -> token 5; inside the patch row 1, column 0
    assert image[0, 2, 3, 4].item() == 1000 * 5 + 100 * 1 + 10 * 0 + 2


def test_wrong_token_shape_is_a_clear_error():
    decoder = ViTDecoder(DecoderConfig("tiny", 16, (4, 4), 4))
    with pytest.raises(RaeditError, match="16 x 16"):
        decoder(torch.randn(2, 9, 16))
    with pytest.raises(RaeditError, match="unknown decoder size"):
        DecoderConfig("huge")
