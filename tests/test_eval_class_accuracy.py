"""Class accuracy: a linear probe on frozen EfficientNet-Lite2 features, fitted on real labelled images, judges
each sample against the label it was drawn for."""

import json

import numpy as np
import pytest
from PIL import Image

from raedit.cli import main
from raedit.core.errors import RaeditError
from raedit.eval import class_accuracy
from raedit.eval.class_accuracy import ProbeFeatures, class_probe, labelled_images
from raedit.eval.reference import builtin_reference_images


def _test_images_as_samples(path, count, labels=None):
    from raedit.data.fashion_mnist import load_fashion_mnist

    images = builtin_reference_images("fashion-mnist-test", 32, count)
    labels = load_fashion_mnist("test")[1][:count] if labels is None else labels
    np.savez(path, arr_0=images, labels=labels)
    return labels


def test_real_test_images_score_the_ceiling_and_wrong_labels_score_chance(tmp_path):
    """Samples that are the reference's own test images with their labels score exactly the ceiling (the probe's
    test accuracy); the same images with labels shifted by one class score near zero."""
    labels = _test_images_as_samples(tmp_path / "real.npz", 300)
    _test_images_as_samples(tmp_path / "wrong.npz", 300, (labels + 1) % 10)
    scores = {}
    for name in ("real", "wrong"):
        main(["eval", "--samples", str(tmp_path / f"{name}.npz"), "--ref", "fashion-mnist-test", "--ref-limit", "300",
              "--metrics", "class_acc", "--probe-train-limit", "1000", "--cache-dir", str(tmp_path / "cache"),
              "--json", str(tmp_path / f"{name}.json")])
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    real = scores["real"]["metrics"]
    assert real["class_acc"] == real["class_acc_real"] and 0.75 < real["class_acc"] < 0.95
    assert scores["wrong"]["metrics"]["class_acc"] < 0.1
    assert "effnet-lite2" in scores["real"]["notes"][0] and "1000 real training images" in scores["real"]["notes"][0]
    assert len(list((tmp_path / "cache").glob("class-probe-*.npz"))) == 1  # fitted once, then read


def test_the_probe_is_cached_and_read_back(tmp_path, monkeypatch):
    features = ProbeFeatures()
    first = class_probe("fashion-mnist-train", "fashion-mnist-test", 32, features, tmp_path, 400, 100)

    def no_features(*args, **kwargs):
        raise AssertionError("features computed again")

    monkeypatch.setattr(class_accuracy, "labelled_images", no_features)
    again = class_probe("fashion-mnist-train", "fashion-mnist-test", 32, features, tmp_path, 400, 100)
    assert again.test_accuracy == first.test_accuracy and (again.num_train, again.num_test) == (400, 100)
    assert np.array_equal(again.probe.weight.numpy(), first.probe.weight.numpy())


def test_labelled_images_from_an_npz_and_a_class_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=images, labels=np.array([0, 1, 1, 2]))
    loaded, labels = labelled_images(str(tmp_path / "s.npz"), 16)
    assert np.array_equal(loaded, images) and labels.tolist() == [0, 1, 1, 2]
    assert labelled_images(str(tmp_path / "s.npz"), 8)[0].shape == (4, 8, 8, 3)
    for name, label in (("cat", 0), ("dog", 1)):
        (tmp_path / "folder" / name).mkdir(parents=True)
        Image.fromarray(images[label]).save(tmp_path / "folder" / name / "a.png")
    folder_images, folder_labels = labelled_images(str(tmp_path / "folder"), 16)
    assert np.array_equal(folder_images, images[:2]) and folder_labels.tolist() == [0, 1]
    np.savez(tmp_path / "unlabelled.npz", arr_0=images)
    with pytest.raises(RaeditError, match="no labelled images"):
        labelled_images(str(tmp_path / "unlabelled.npz"), 16)


def test_class_acc_needs_sample_labels_and_a_training_set(tmp_path, capsys):
    np.savez(tmp_path / "s.npz", arr_0=builtin_reference_images("fashion-mnist-test", 32, 10))
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--ref", "fashion-mnist-test", "--metrics",
                 "class_acc"]) == 2
    assert "class_acc needs the samples' labels" in capsys.readouterr().err
    _test_images_as_samples(tmp_path / "l.npz", 10)
    assert main(["eval", "--samples", str(tmp_path / "l.npz"), "--ref", str(tmp_path / "l.npz"), "--metrics",
                 "class_acc"]) == 2
    assert "class_acc needs labelled training images" in capsys.readouterr().err
