"""Data stages: `dataset` (canonical ImageNet-style tree + manifest) and `images` (ADM-cropped shards).

Later stages read the shards only through `diffzoo.data.shards`.
"""

# `data.source`; dataset.py reads each
SOURCES = ("digits", "fashion_mnist", "imagenet-tar", "imagenet-folder", "imagenet-parquet")
