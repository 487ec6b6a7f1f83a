"""Guidance algebra: CFG on an interval in one batched forward, AutoGuidance without null labels."""

import pytest
import torch

from raedit.core.errors import RaeditError
from raedit.diffusion import auto_guidance, classifier_free_guidance, guided_velocity, sample
from raedit.models import DiTDH, DiTDHConfig

NULL = 10


class RecordingModel:
    """v = gain * x * (1 + t) + label: distinct per label, and every call (batch, labels) is recorded."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, x, t, labels):
        self.calls.append((x.shape[0], labels.tolist()))
        return self.gain * x * (1 + t.view(-1, 1, 1, 1)) + labels.view(-1, 1, 1, 1).float()


def test_cfg_inside_interval_is_one_batched_forward():
    model = RecordingModel()
    labels = torch.tensor([1, 2, 3])
    x, t = torch.randn(3, 2, 2, 2), torch.full((3,), 0.5)
    v = classifier_free_guidance(model, labels, NULL, scale=4.0, interval=(0.2, 0.8))(x, t)
    assert model.calls == [(6, [1, 2, 3, NULL, NULL, NULL])]
    cond = x * 1.5 + labels.view(-1, 1, 1, 1)
    uncond = x * 1.5 + NULL
    torch.testing.assert_close(v, uncond + 4.0 * (cond - uncond))


def test_cfg_outside_interval_is_conditional_only():
    model = RecordingModel()
    labels = torch.tensor([1, 2])
    x, t = torch.randn(2, 2, 2, 2), torch.full((2,), 0.9)
    v = classifier_free_guidance(model, labels, NULL, scale=4.0, interval=(0.2, 0.8))(x, t)
    assert model.calls == [(2, [1, 2])]
    torch.testing.assert_close(v, x * 1.9 + labels.view(-1, 1, 1, 1).float())


def test_cfg_interval_is_per_sample_and_closed():
    model = RecordingModel()
    labels = torch.tensor([0, 0, 0])
    x, t = torch.randn(3, 2, 2, 2), torch.tensor([0.1, 0.2, 0.8])
    v = classifier_free_guidance(model, labels, NULL, scale=3.0, interval=(0.2, 0.8))(x, t)
    cond = x * (1 + t.view(-1, 1, 1, 1))
    guided = (cond + NULL) + 3.0 * (cond - (cond + NULL))
    torch.testing.assert_close(v[0], cond[0])
    torch.testing.assert_close(v[1:], guided[1:])


def test_autoguidance_uses_no_null_labels():
    main, guide = RecordingModel(gain=2.0), RecordingModel(gain=1.0)
    labels = torch.tensor([4, 5])
    x, t = torch.randn(2, 2, 2, 2), torch.full((2,), 0.5)
    v = auto_guidance(main, guide, labels, scale=1.42)(x, t)
    assert main.calls == [(2, [4, 5])] and guide.calls == [(2, [4, 5])]
    v_main = 2.0 * x * 1.5 + labels.view(-1, 1, 1, 1)
    v_guide = x * 1.5 + labels.view(-1, 1, 1, 1)
    torch.testing.assert_close(v, v_guide + 1.42 * (v_main - v_guide))
    # Outside its interval the guide is not run.
    v_outside = auto_guidance(main, guide, labels, scale=1.42, interval=(0.0, 0.3))(x, t)
    assert len(guide.calls) == 1
    torch.testing.assert_close(v_outside, v_main)


def test_guided_velocity_dispatch_and_errors():
    model, guide = RecordingModel(), RecordingModel()
    labels = torch.tensor([1])
    x, t = torch.randn(1, 2, 2, 2), torch.full((1,), 0.5)
    guided_velocity(model, labels, NULL)(x, t)
    assert model.calls == [(1, [1])]  # no guidance: conditional only
    with pytest.raises(RaeditError, match="AutoGuidance goes alone"):
        guided_velocity(model, labels, NULL, cfg_scale=2.0, guide=guide, ag_scale=1.5)
    with pytest.raises(RaeditError, match="needs a guide"):
        guided_velocity(model, labels, NULL, ag_scale=1.5)
    with pytest.raises(RaeditError, match="interval"):
        classifier_free_guidance(model, labels, NULL, 2.0, interval=(0.8, 0.2))


def test_batched_cfg_on_a_model_equals_separate_forwards():
    torch.manual_seed(0)
    model = DiTDH(
        DiTDHConfig((8, 4, 4), depth=1, width=32, num_heads=2, head_depth=1, head_width=32, head_num_heads=2,
                    num_classes=5)
    )
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    model.eval()
    labels = torch.tensor([0, 3])
    x, t = torch.randn(2, 8, 4, 4), torch.full((2,), 0.6)
    with torch.no_grad():
        v = classifier_free_guidance(model, labels, model.null_label, scale=2.5)(x, t)
        cond = model(x, t, labels)
        uncond = model(x, t, torch.full_like(labels, model.null_label))
        assert (cond - uncond).abs().mean() > 0.1
        torch.testing.assert_close(v, uncond + 2.5 * (cond - uncond), rtol=1e-3, atol=1e-3)
        samples = sample(classifier_free_guidance(model, labels, model.null_label, 2.5, (0.0, 0.5)), x, "euler", 4)
    assert samples.shape == x.shape and torch.isfinite(samples).all()


def test_the_whole_interval_never_reads_t_on_the_host():
    """On the meta device a tensor has no values: reading one on the host (a device sync on a GPU) fails."""
    model = lambda x, t, labels: x * 2  # noqa: E731
    labels = torch.zeros(3, dtype=torch.long, device="meta")
    x, t = torch.ones(3, 4, device="meta"), torch.ones(3, device="meta")
    assert classifier_free_guidance(model, labels, 10, 1.5)(x, t).shape == (3, 4)
    assert auto_guidance(model, model, labels, 1.42)(x, t).shape == (3, 4)
    with pytest.raises(RuntimeError):  # an interval must be decided from the values of t
        classifier_free_guidance(model, labels, 10, 1.5, (0.2, 1.0))(x, t)
