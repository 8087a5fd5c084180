"""The digits judge: independent of the metrics' CNN, right on real scans, at chance on noise, and it
reads a sample at any resolution that is a multiple of 8 as the 8x8 scan it came from."""
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.svm import SVC

from diffzoo.data.dataset import digits_images
from diffzoo.errors import DiffzooError
from diffzoo.evaluate.judge import judge_accuracy, to_scan


def test_the_judges_setting_labels_held_out_scans_correctly():
    """The judge's own setting, fitted on 4/5 of the scans, labels the other 1/5 (never seen)."""
    d = load_digits()
    held = np.arange(len(d.target)) % 5 == 0
    svc = SVC(gamma=0.001, C=1.0).fit(d.data[~held], d.target[~held])
    assert (svc.predict(d.data[held]) == d.target[held]).mean() >= 0.97


def test_samples_at_any_multiple_of_8_read_as_the_original_scan():
    images, labels = digits_images()  # (1797, 32, 32, 3): each scan pixel a 4x4 block, grey in 3 channels
    scan = to_scan(images)
    np.testing.assert_allclose(scan, np.rint(load_digits().data * 255 / 16) * 16 / 255, atol=1e-9)
    assert judge_accuracy(images, labels) >= 0.99
    assert judge_accuracy(images[:, ::4, ::4], labels) == judge_accuracy(images, labels)  # 8x8


def test_noise_and_wrong_labels_score_at_chance():
    images, labels = digits_images()
    noise = np.random.default_rng(0).integers(0, 256, (1000, 8, 8, 3), dtype=np.uint8)
    assert judge_accuracy(noise, np.arange(1000) % 10) <= 0.2
    assert judge_accuracy(images, (labels + 1) % 10) <= 0.02


def test_unreadable_sizes_are_refused():
    with pytest.raises(DiffzooError, match="not a multiple of 8"):
        to_scan(np.zeros((2, 12, 12, 3), np.uint8))
