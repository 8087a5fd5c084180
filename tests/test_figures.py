"""Sample grids: one row per class (in class order), every image shown pixel for pixel at an integer
scale, at least 512 px tall, panels side by side, the first images of each class."""
import numpy as np
from PIL import Image

from diffzoo.report.figures import MIN_SIDE, class_grid, first_per_class


def _tiles(classes, cols, side=8):
    """Constant-colour images, a colour per (class, column) that anti-aliased black text never makes."""
    return {c: np.stack([np.full((side, side, 3), (40 + 20 * c, 200 - 10 * k, 90), np.uint8) for k in range(cols)])
            for c in classes}


def test_class_grid_rows_scale_and_panels():
    names = [f"digit {c}" for c in range(10)]
    rows = _tiles([0, 1, 2], cols=4)
    one = np.asarray(class_grid([("a", rows)], names, cols=4))
    two = np.asarray(class_grid([("real data", rows), ("samples", rows)], names, cols=4))
    assert one.shape[0] >= MIN_SIDE and two.shape[0] == one.shape[0]
    assert two.shape[1] == 2 * one.shape[1]  # same classes, same scale: two equal panels
    scale = None
    centre_rows = []
    for c in range(3):
        for k in range(4):
            mask = (one == np.array((40 + 20 * c, 200 - 10 * k, 90), np.uint8)).all(-1)
            ys, xs = np.nonzero(mask)
            side = ys.max() - ys.min() + 1
            assert xs.max() - xs.min() + 1 == side and mask.sum() == side * side  # one solid square
            assert side % 8 == 0
            scale = scale or side // 8
            assert side == 8 * scale  # every tile at the same integer scale
            centre_rows.append((c, ys.mean()))
            assert (two == np.array((40 + 20 * c, 200 - 10 * k, 90), np.uint8)).all(-1).sum() == 2 * side * side
    means = [np.mean([y for cc, y in centre_rows if cc == c]) for c in range(3)]
    assert means == sorted(means)  # class 0 on top, one row per class


def test_first_per_class_takes_the_first_images_in_file_order_and_stops_early():
    labels = np.array([1, 0, 1, 1, 2, 0, 1, 2, 2])
    images = np.arange(9, dtype=np.uint8).reshape(9, 1, 1, 1).repeat(3, -1)
    read = []

    def batches():
        for i in range(0, 9, 2):
            read.append(i)
            yield images[i:i + 2]

    got = first_per_class(batches(), labels, [0, 1], per_class=2)
    assert got[0][:, 0, 0, 0].tolist() == [1, 5] and got[1][:, 0, 0, 0].tolist() == [0, 2]
    assert read == [0, 2, 4]  # both classes full after the third batch: nothing more is read


def test_a_class_with_fewer_images_leaves_blank_places(tmp_path):
    rows = _tiles([0, 1], cols=3)
    rows[1] = rows[1][:1]
    img = class_grid([("x", rows)], ["zero", "one"], cols=3)
    Image.Image.save(img, tmp_path / "g.png")
    arr = np.asarray(img)
    present = [(arr == np.array((60, 200 - 10 * k, 90), np.uint8)).all(-1).any() for k in range(3)]
    assert present == [True, False, False]
