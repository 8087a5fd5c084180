"""ADM center crop against hand-computed sizes and independent numpy computations."""
import numpy as np
import pytest
from PIL import Image

from diffzoo.data.crop import adm_resize_plan, center_crop_adm


def test_plan_600x400_to_64_by_hand():
    # short side 400 >= 128 -> 300x200; 200 >= 128 -> 150x100; 100 < 128 stop;
    # bicubic by 64/100: 150*0.64 = 96, 100*0.64 = 64; crop left = (96 - 64) // 2 = 16
    plan = adm_resize_plan(600, 400, 64)
    assert plan["halvings"] == [(300, 200), (150, 100)]
    assert plan["resized"] == (96, 64)
    assert plan["box"] == (16, 0, 80, 64)


def test_plan_odd_and_portrait():
    # 257x130 -> 128x65 (integer halving), 65 < 128; 128 * 64/65 = 126.03 -> 126; left = 31
    assert adm_resize_plan(257, 130, 64) == {"halvings": [(128, 65)], "resized": (126, 64), "box": (31, 0, 95, 64)}
    # portrait, no halving: 100x300 to 64 -> 64x192, top = 64
    assert adm_resize_plan(100, 300, 64) == {"halvings": [], "resized": (64, 192), "box": (0, 64, 64, 128)}
    # upscaling a small image: 20x10 to 32 -> 64x32, left = 16
    assert adm_resize_plan(20, 10, 32)["resized"] == (64, 32)


@pytest.mark.parametrize("w,h,size", [(600, 400, 64), (257, 130, 64), (100, 300, 64), (20, 10, 32), (64, 64, 64)])
def test_output_size_and_mode(w, h, size):
    img = Image.new("RGB", (w, h), (10, 20, 30))
    out = center_crop_adm(img, size)
    assert out.size == (size, size) and out.mode == "RGB"
    assert np.all(np.asarray(out) == (10, 20, 30))  # a flat image stays flat through every filter


def test_two_box_halvings_and_centred_crop_exact():
    # 768x512 to 128: 384x256, 192x128 (two BOX halvings), bicubic at scale 1 is the identity,
    # crop columns 32..160. The image is made of constant 4x4 blocks, so BOX averaging is exact
    # (any filter reaching past a 2x2 cell would blend neighbouring blocks): the output must be the
    # block values themselves, columns 32..160, by numpy slicing alone.
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(128, 192, 3), dtype=np.uint8)
    a = blocks.repeat(4, axis=0).repeat(4, axis=1)
    assert a.shape == (512, 768, 3)
    out = np.asarray(center_crop_adm(Image.fromarray(a), 128))
    np.testing.assert_array_equal(out, blocks[:, 32:160])


def test_one_box_halving_is_a_2x2_mean():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(260, 300, 3), dtype=np.uint8)  # 300x260 to 128: one halving, 150x130
    assert adm_resize_plan(300, 260, 128)["halvings"] == [(150, 130)]
    half = np.asarray(Image.fromarray(a).resize((150, 130), Image.BOX)).astype(float)
    mean = a.astype(float).reshape(130, 2, 150, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - mean).max() <= 1.0  # PIL's fixed-point rounding


def test_bicubic_crop_is_centred_on_a_ramp():
    # 300x100 to 64: no halving, 192x64 after bicubic (scale 0.64), crop left = 64.
    # On a horizontal ramp v(x) = x (0..255 over x = 0..299 stretched), output column j samples
    # source x = (64 + j + 0.5) / 0.64 - 0.5 (pixel-centre convention).
    x = np.arange(300, dtype=np.float64)
    ramp = np.tile((x * 255 / 299)[None, :], (100, 1))
    img = Image.fromarray(np.rint(ramp).astype(np.uint8), "L")
    out = np.asarray(center_crop_adm(img, 64)).astype(float)
    src_x = (64 + np.arange(64) + 0.5) / 0.64 - 0.5
    expect = src_x * 255 / 299
    assert np.abs(out[32] - expect).max() < 2.0
    # centred: the crop's mean equals the ramp value at the image centre
    assert abs(out.mean() - 255 / 2) < 1.5
