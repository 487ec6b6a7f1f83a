"""DiffAugment: translation (consistent per image, zero fill) and color ops (ranges and semantics)."""

from __future__ import annotations

import pytest
import torch

from raedit.losses.diffaugment import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    diff_augment,
    sample_augment_params,
    translate,
)


def test_translate_by_known_shifts():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = translate(x, torch.tensor([1, 0]), torch.tensor([-2, 0]))
    assert out.shape == x.shape
    assert torch.equal(out[1], x[1])
    expected = torch.zeros(3, 4, 5)
    expected[:, :3, 2:] = x[0, :, 1:, :3]  # out[i, j] = x[i + 1, j - 2]
    assert torch.equal(out[0], expected)


def test_translation_is_one_shift_per_image_within_one_eighth():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 16, 16, generator=generator)
    out = diff_augment(x, translation=0.125, color=False, generator=generator)
    assert out.shape == x.shape
    for image, augmented in zip(x, out):
        matches = [
            (dh, dw) for dh in range(-2, 3) for dw in range(-2, 3)
            if torch.equal(translate(image[None], torch.tensor([dh]), torch.tensor([dw]))[0], augmented)
        ]
        assert len(matches) == 1  # all channels moved together by one shift within +-16/8 pixels


def test_same_seed_same_transform_and_gradients_flow():
    x = torch.randn(3, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, generator=torch.Generator().manual_seed(5))
    b = diff_augment(x, generator=torch.Generator().manual_seed(5))
    c = diff_augment(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_parameter_ranges():
    params = sample_augment_params(20_000, 32, 24, translation=0.125, generator=torch.Generator().manual_seed(1))
    assert params.shift_h.dtype == torch.long
    assert params.shift_h.min() == -4 and params.shift_h.max() == 4
    assert params.shift_w.min() == -3 and params.shift_w.max() == 3
    assert -0.5 <= params.brightness.min() and params.brightness.max() < 0.5
    assert 0.0 <= params.saturation.min() and params.saturation.max() < 2.0
    assert 0.5 <= params.contrast.min() and params.contrast.max() < 1.5
    assert params.saturation.mean().item() == pytest.approx(1.0, abs=0.03)


def test_color_ops_semantics():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    delta = torch.tensor([0.3, -0.5])
    assert torch.allclose(adjust_brightness(x, delta) - x, delta.view(2, 1, 1, 1).expand_as(x))

    gray = adjust_saturation(x, torch.zeros(2))
    assert torch.allclose(gray, gray[:, :1].expand_as(gray))  # factor 0: all channels equal
    assert torch.allclose(adjust_saturation(x, torch.ones(2)), x, atol=1e-6)

    factor = torch.tensor([0.5, 1.5])
    contrasted = adjust_contrast(x, factor)
    assert torch.allclose(contrasted.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(contrasted.std(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)) * factor, atol=1e-5)



def test_diff_augment_applies_translation_then_brightness_saturation_contrast():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    augmented = diff_augment(x, translation=0.125, generator=torch.Generator().manual_seed(3))
    p = sample_augment_params(4, 16, 16, 0.125, generator=torch.Generator().manual_seed(3))
    expected = adjust_contrast(adjust_saturation(adjust_brightness(translate(x, p.shift_h, p.shift_w), p.brightness),
                                                 p.saturation), p.contrast)
    assert torch.allclose(augmented, expected, atol=1e-6)
