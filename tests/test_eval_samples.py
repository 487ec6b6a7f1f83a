"""Sample inputs: ADM npz files, image folders, generator batches; bad inputs give clear RaeditErrors."""

import numpy as np
import pytest
import torch
from PIL import Image

from raedit.core.errors import RaeditError
from raedit.eval.image_sets import (
    NpzImages,
    iterate_batches,
    load_image_folder,
    load_images,
    load_npz_images,
    open_npz_images,
    to_uint8_batch,
)


def _images(count: int = 5, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_adm_npz_round_trip(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=_images())
    np.testing.assert_array_equal(load_npz_images(path), _images())
    np.testing.assert_array_equal(np.concatenate(list(iterate_batches(load_images(path), 2))), _images())


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_is_streamed_in_batches(tmp_path, save):
    images = _images(7)
    save(tmp_path / "samples.npz", arr_0=images, other=np.zeros(3))
    lazy = load_images(tmp_path / "samples.npz")
    assert isinstance(lazy, NpzImages) and lazy.shape == (7, 8, 8, 3) and len(lazy) == 7
    batches = list(iterate_batches(lazy, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(batches), images)


def test_wrong_key(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, images=_images())
    for loader in (load_npz_images, open_npz_images):
        with pytest.raises(RaeditError, match="no array 'arr_0' \\(found: images\\)"):
            loader(path)


def test_float_dtype_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=_images().astype(np.float32) / 255)
    with pytest.raises(RaeditError, match="expected uint8 pixels, got float32"):
        load_images(path)


def test_channels_first_shape_is_refused(tmp_path):
    path = tmp_path / "samples.npz"
    np.savez(path, arr_0=_images().transpose(0, 3, 1, 2))
    for loader in (load_npz_images, open_npz_images):
        with pytest.raises(RaeditError, match="N x H x W x 3, got \\(5, 3, 8, 8\\) \\(channels first"):
            loader(path)


def test_value_range_of_integer_arrays(tmp_path):
    path = tmp_path / "samples.npz"
    bad = _images().astype(np.int16)
    bad[0, 0, 0, 0] = 300
    np.savez(path, arr_0=bad)
    with pytest.raises(RaeditError, match="0..255, found 0..300"):
        load_images(path)
    np.savez(path, arr_0=_images().astype(np.int64))
    assert load_images(path).dtype == np.uint8


def test_not_an_npz_and_missing_files(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    for loader in (load_npz_images, open_npz_images):
        with pytest.raises(RaeditError, match="not a readable npz"):
            loader(path)
    with pytest.raises(RaeditError, match="not found"):
        load_npz_images(tmp_path / "missing.npz")
    with pytest.raises(RaeditError, match="expected an .npz file"):
        load_images(tmp_path / "samples.txt")


def test_image_folder(tmp_path):
    images = _images(3)
    for index, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{index}.png")
    np.testing.assert_array_equal(load_image_folder(tmp_path), images)
    Image.fromarray(_images(1, size=9)[0]).save(tmp_path / "9.png")
    with pytest.raises(RaeditError, match="images of different sizes"):
        load_image_folder(tmp_path)


def test_generator_batches_are_quantized_and_rebatched():
    unit = torch.rand(6, 3, 4, 4)
    batches = list(iterate_batches(iter([unit[:4], unit[4:]]), batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 1, 2]
    joined = np.concatenate(batches)
    np.testing.assert_array_equal(joined, (unit.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1))  # truncated
    with pytest.raises(RaeditError, match="must lie in \\[0, 1\\]"):
        to_uint8_batch(unit * 2)
