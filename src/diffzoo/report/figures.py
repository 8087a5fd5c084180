"""Sample grids a person can read: one row per class with the class written beside it, the real
images' panel beside the samples', and one overview of every run of the params file.

The sample stage draws results/samples/<run>.png; the report draws results/plots/samples.png
(OVERVIEW) from the same images (the first of each class), so DVC can track it through the grids.

A panel holds `per_class` images of each of its classes (the first ones in file order: samples are
seeded by index, so the same settings always show the same samples), scaled by an integer factor
so that the panel is at least MIN_SIDE pixels tall (nearest neighbour: no invented detail). A class
with fewer images than `per_class` leaves its places blank.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import DiffzooError
from ..evaluate.images import open_images
from ..utils import atomic_path

MIN_SIDE = 512
GAP = 2          # pixels between images (before scaling)
BACKGROUND = 255


def _font(size: int):
    return ImageFont.load_default(size=size)


def first_per_class(batches, labels: np.ndarray, classes: list[int], per_class: int) -> dict[int, np.ndarray]:
    """The first `per_class` images of each class in `classes`, read batch by batch from an iterator
    of uint8 (B, H, W, C) batches whose labels are `labels`; stops reading once every class is full."""
    want = {c: [] for c in classes}
    start = 0
    for batch in batches:
        for i, y in enumerate(labels[start:start + len(batch)]):
            y = int(y)
            if y in want and len(want[y]) < per_class:
                want[y].append(batch[i])
        start += len(batch)
        if all(len(v) == per_class for v in want.values()):
            break
    return {c: np.stack(v) if v else np.zeros((0,), np.uint8) for c, v in want.items()}


def shown_classes(labels: np.ndarray, rows: int) -> list[int]:
    """The classes a grid shows: the `rows` smallest class indices present in `labels`."""
    return sorted(int(c) for c in np.unique(labels))[:rows]


def _panel(title: str, per_class: dict[int, np.ndarray], names: list[str], cols: int, shape: tuple,
           scale: int, label_width: int) -> Image.Image:
    h, w = shape[:2]
    cell_h, cell_w = (h + GAP) * scale, (w + GAP) * scale
    title_h = max(24, scale * 4)
    width = label_width + cols * cell_w + GAP * scale
    height = title_h + len(per_class) * cell_h + GAP * scale
    canvas = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(14, min(cell_h // 2, 28)))
    draw.text((width // 2, title_h // 2), title, fill=(0, 0, 0), font=_font(max(16, min(title_h - 6, 28))), anchor="mm")
    for r, (cls, images) in enumerate(per_class.items()):
        top = title_h + r * cell_h + GAP * scale
        draw.text((label_width - 8, top + h * scale // 2), names[cls], fill=(0, 0, 0), font=font, anchor="rm")
        for k, img in enumerate(images[:cols]):
            tile = Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).convert("RGB")
            tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_width + GAP * scale + k * cell_w, top))
    return canvas


def class_grid(panels: list[tuple[str, dict[int, np.ndarray]]], class_names: list[str], cols: int,
               wrap: int | None = None) -> Image.Image:
    """Panels side by side (`wrap` panels per line): each a title and {class index: images}, one row
    per class with its name beside it. Every panel shows the same classes at the same scale."""
    shapes = [imgs.shape[1:] for _, rows in panels for imgs in rows.values() if len(imgs)]
    if not shapes:
        raise ValueError("no images to draw")
    shape = shapes[0]
    n_rows = max(len(rows) for _, rows in panels)
    scale = max(1, math.ceil(MIN_SIDE / (n_rows * (shape[0] + GAP))))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font(max(14, min((shape[0] + GAP) * scale // 2, 28)))
    label_width = 16 + max(int(probe.textlength(class_names[c], font=font)) for _, rows in panels for c in rows)
    images = [_panel(title, rows, class_names, cols, shape, scale, label_width) for title, rows in panels]
    wrap = wrap or len(images)
    lines = [images[i:i + wrap] for i in range(0, len(images), wrap)]
    width = max(sum(im.width for im in line) for line in lines)
    height = sum(max(im.height for im in line) for line in lines)
    out = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
    y = 0
    for line in lines:
        x = 0
        for im in line:
            out.paste(im, (x, y))
            x += im.width
        y += max(im.height for im in line)
    return out


def save_png(image: Image.Image, path: str | Path) -> None:
    with atomic_path(Path(path)) as tmp:
        image.save(tmp, format="PNG")


GRID_CLASSES = 10   # rows of a grid: the first classes of the data set
OVERVIEW = Path("plots") / "samples.png"   # under results/
OVERVIEW_COLS = 6   # images per class in the overview (at most the runs' sample.grid)
OVERVIEW_WRAP = 4   # panels per line


def _class_names(source) -> list[str]:
    """The rows' labels: the data set's human names (Fashion-MNIST's "Ankle boot"), else its class ids."""
    names = getattr(source, "class_names", None) or [c.removeprefix("digit_") for c in getattr(source, "classes", [])]
    return names or [str(c) for c in range(int(source.labels.max()) + 1)]


def data_class_names(images_dir: Path | None, classes: list[str]) -> list[str]:
    """The rows' labels of a grid of a data set's classes: its images' names where the images stage's
    output is there, else the class ids (digit_3 -> 3)."""

    if images_dir is not None and Path(images_dir).is_dir():
        return _class_names(open_images(images_dir))
    return [c.removeprefix("digit_") for c in classes]


def _rows(source, classes: list[int], per_class: int) -> dict[int, np.ndarray]:
    if source.labels is None:
        raise DiffzooError(f"{source.path} holds no labels: a class grid needs them")
    return first_per_class(source.batches(1024), source.labels, classes, per_class)


def _real(images_dir: Path, per_class: int):
    """(class names, the rows shown, the real images' rows) from the images stage's shards."""

    real = open_images(images_dir)
    names = _class_names(real)
    shown = list(range(min(GRID_CLASSES, len(names))))
    return names, shown, _rows(real, shown, per_class)


def _panels(images_dir: Path | None, runs: dict[str, Path], per_class: int):
    """(class names, panels): the real images' first (when `images_dir` is given), then each run's."""

    sources = {r: open_images(path) for r, path in runs.items()}
    panels = []
    if images_dir is not None:
        names, shown, real_rows = _real(images_dir, per_class)
        panels.append(("real data", real_rows))
    else:  # released weights without the data set: the samples' own classes, by index
        first = next(iter(sources.values()))
        names = _class_names(first)
        shown = sorted(int(c) for c in set(first.labels.tolist()))[:GRID_CLASSES]
    return names, panels + [(r, _rows(src, shown, per_class)) for r, src in sources.items()]


def save_run_grid(images_dir: Path | None, samples: Path, run_id: str, per_class: int, out: Path) -> None:
    """A run's grid: the real images' panel beside its samples', `per_class` images per class."""
    names, panels = _panels(images_dir, {run_id: samples}, per_class)
    save_png(class_grid(panels, names, per_class), out)


def save_sources_grid(images_dir: Path, sources: dict, per_class: int, out: Path) -> None:
    """Labelled image sources (title -> ImageSource) side by side, rows named by the data set's
    classes: e.g. held-out originals beside their reconstructions."""

    names = _class_names(open_images(images_dir))
    shown = list(range(min(GRID_CLASSES, len(names))))
    panels = [(title, _rows(src, shown, per_class)) for title, src in sources.items()]
    save_png(class_grid(panels, names, per_class), out)


def save_overview(images_dir: Path | None, runs: dict[str, Path], per_class: int, out: Path) -> None:
    """Every run (id -> samples file) side by side, after the real images."""
    cols = min(OVERVIEW_COLS, per_class)
    names, panels = _panels(images_dir, runs, cols)
    save_png(class_grid(panels, names, cols, wrap=OVERVIEW_WRAP), out)
