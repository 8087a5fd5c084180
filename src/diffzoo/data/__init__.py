"""Data stages: `dataset` (canonical ImageNet-style tree + manifest) and `images` (ADM-cropped shards).

Later stages read the shards only through `diffzoo.data.shards`.
"""

SOURCES = ("digits", "imagenet-tar", "imagenet-folder", "imagenet-parquet")  # `data.source`; dataset.py reads each
