"""The TF FID Inception wrapper: TF 1.x resize, the eager network (folded batch norms) equal to the scripted one,
batch independence."""

import warnings

import numpy as np
import pytest
import torch

from raedit.core.errors import RaeditError
from raedit.eval.inception import InceptionFeatures, inception_file, resize_bilinear_tf1


@pytest.fixture(scope="module")
def extractor() -> InceptionFeatures:
    return InceptionFeatures()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, 32, 40, 3), dtype=np.uint8)


def test_tf1_resize_samples_at_i_times_scale_and_clamps_the_border():
    row = torch.tensor([[[[0.0, 10.0]]]])
    # output i reads input i * 2 / 4 = 0, 0.5, 1, 1.5 (the last clamps to the border pixel)
    np.testing.assert_allclose(resize_bilinear_tf1(row.expand(1, 1, 2, 2), 4)[0, 0, 0].numpy(), [0, 5, 10, 10])
    column = torch.arange(3.0).view(1, 1, 3, 1).expand(1, 1, 3, 3)
    np.testing.assert_allclose(resize_bilinear_tf1(column, 2)[0, 0, :, 0].numpy(), [0.0, 1.5])


def test_eager_network_equals_the_scripted_model(extractor, images):
    with warnings.catch_warnings():  # torch.jit.load is deprecated; the weights exist only as TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(inception_file()))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    prepared = (resize_bilinear_tf1(pixels, 299) - 128) / 128
    with torch.no_grad():
        expected_pool = scripted(prepared)
        x = prepared
        for name, layer in scripted.net.layers.named_children():
            if name == "mixed_6":
                expected_conv = layer.conv(x)
            x = layer(x)
    features = extractor(images)
    # folding the batch norms into the convolutions changes float rounding only (features reach about 10)
    torch.testing.assert_close(features["pool"], expected_pool, rtol=1e-4, atol=1e-4)
    assert features["spatial"].shape == (4, 17 * 17 * 7)
    # ADM flattens mixed_6/conv[..., :7] in TF's H, W, C order
    torch.testing.assert_close(features["spatial"].view(4, 17, 17, 7), expected_conv[:, :7].permute(0, 2, 3, 1),
                               rtol=1e-4, atol=1e-4)
    assert float(features["spatial"].min()) >= 0.0  # after the conv's ReLU


def test_features_do_not_depend_on_the_batch_size(extractor, images):
    together = extractor(images)
    one_by_one = [extractor(images[i : i + 1]) for i in range(len(images))]
    for name in ("pool", "spatial"):
        torch.testing.assert_close(torch.cat([f[name] for f in one_by_one]), together[name], rtol=1e-4, atol=1e-5)


def test_channels_first_uint8_tensors_give_the_same_features(extractor, images):
    from_tensor = extractor(torch.from_numpy(images[:1]).permute(0, 3, 1, 2))
    torch.testing.assert_close(from_tensor["pool"], extractor(images[:1])["pool"])


def test_float_input_is_refused(extractor):
    with pytest.raises(RaeditError, match="need uint8 images"):
        extractor(torch.rand(1, 3, 8, 8))
