"""The Inception path: the mixed_6/conv hook, the sFID H,W,C layout, shapes, weight-file errors.

The real weights cannot be downloaded here. These tests build torch-fidelity's inception-v3-compat
network with a weights file of RANDOM values saved by the test itself: they check plumbing (which
layer, which order, which shapes, which messages), never metric values of the real network.
"""
import re

import numpy as np
import pytest
import torch

from diffzoo.cli import main
from diffzoo.errors import DiffzooError
from diffzoo.evaluate.features import (
    INCEPTION_FILE,
    INCEPTION_URL,
    InceptionExtractor,
    adm_spatial_features,
    resolve_inception_weights,
)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _RandomInit(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep PyTorch's random init
            return None

    d = tmp_path_factory.mktemp("inception")
    torch.save({}, d / "empty.pth")
    torch.manual_seed(0)
    net = _RandomInit("probe", ["2048"], feature_extractor_weights_path=str(d / "empty.pth"))
    path = d / "random-inception-NOT-REAL.pth"
    torch.save(net.state_dict(), path)
    return path


def test_sfid_layout_is_h_w_c_of_first_seven_channels():
    b, c, h, w = 2, 9, 3, 4
    # value encodes its coordinates: 1000*b + 100*c + 10*h + w
    idx = np.indices((b, c, h, w))
    fmap = torch.from_numpy((1000 * idx[0] + 100 * idx[1] + 10 * idx[2] + idx[3]).astype(np.float32))
    flat = adm_spatial_features(fmap).numpy()
    assert flat.shape == (b, h * w * 7)
    # ADM: NHWC tensor [..., :7].reshape(N, -1)
    expected = np.transpose(fmap.numpy(), (0, 2, 3, 1))[..., :7].reshape(b, -1)
    np.testing.assert_array_equal(flat, expected)
    # element (h=1, w=2, c=3) of image 1 sits at ((1*w)+2)*7+3
    assert flat[1, (1 * w + 2) * 7 + 3] == 1000 + 300 + 10 + 2
    # channel-first flattening would be a different vector
    assert not np.array_equal(flat, fmap[:, :7].reshape(b, -1).numpy())


def test_inception_extractor_shapes_and_hook(random_inception_weights):
    ext = InceptionExtractor(random_inception_weights, device="cpu")
    seen = []
    ext.model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    out = ext(images)
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert out["spatial"].shape == (2, 17 * 17 * 7) == (2, 2023)
    fmap = seen[0]
    assert fmap.shape == (2, 192, 17, 17) and bool((fmap >= 0).all())  # the branch's ReLU output
    np.testing.assert_array_equal(out["spatial"].numpy(), fmap.permute(0, 2, 3, 1)[..., :7].reshape(2, -1).numpy())
    # logits are pool_3 times the softmax weights without bias
    torch.testing.assert_close(out["logits"], out["pool"] @ ext.model.fc.weight.T)
    desc = ext.describe()
    assert desc["name"] == "inception" and desc["weights_verified"] is False


def _one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    return err


def test_missing_weights_message_names_file_source_and_place(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DIFFZOO_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(DiffzooError) as exc:
        resolve_inception_weights(None, allow_download=False)
    msg = str(exc.value)
    assert INCEPTION_FILE in msg and INCEPTION_URL in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "--inception-weights" in msg and "\n" not in msg
    with pytest.raises(DiffzooError, match="no file"):
        resolve_inception_weights(tmp_path / "nope.pth")

    images = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=images)
    np.savez(tmp_path / "ref.npz", arr_0=images, mu=np.zeros(2048), sigma=np.eye(2048)[:1])
    err = _one_line_error(capsys, ["evaluate", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "ref.npz"),
                                   "--no-download", "--out", str(tmp_path / "m.json")])
    assert INCEPTION_FILE in err and INCEPTION_URL in err


def test_weights_from_env_and_bad_file(tmp_path, monkeypatch, random_inception_weights):
    monkeypatch.setenv("DIFFZOO_INCEPTION_WEIGHTS", str(random_inception_weights))
    assert resolve_inception_weights(None, allow_download=False) == random_inception_weights
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DiffzooError, match="not loadable"):
        InceptionExtractor(bad, device="cpu")


@pytest.mark.parametrize("arr, expect", [
    (np.zeros((4, 8, 8, 3), np.float32), "float32 of shape \\(4, 8, 8, 3\\)"),
    (np.zeros((4, 8, 8), np.uint8), "uint8 of shape \\(4, 8, 8\\)"),
    (np.zeros((4, 3, 8, 8), np.uint8), "\\(4, 3, 8, 8\\)"),
])
def test_bad_sample_files_give_one_line(tmp_path, capsys, arr, expect):
    np.savez(tmp_path / "s.npz", arr_0=arr)
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8), mu=np.zeros(3), sigma=np.eye(3))
    err = _one_line_error(capsys, ["evaluate", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "ref.npz"),
                                   "--no-download"])
    assert "expected uint8 images of shape (N, H, W, 3)" in err
    assert re.search(expect, err)


def test_reference_of_another_resolution_gives_one_line(tmp_path, capsys, random_inception_weights):
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((4, 64, 64, 3), np.uint8), mu=np.zeros(2048), sigma=np.eye(2))
    err = _one_line_error(capsys, ["evaluate", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "ref.npz"),
                                   "--inception-weights", str(random_inception_weights)])
    assert "64x64" in err and "32x32" in err and "resolution" in err
