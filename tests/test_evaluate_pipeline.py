"""The default data set path: shard reader, classifier training, reference statistics, `diffzoo evaluate`."""
import json
import sys
from argparse import ArgumentParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from diffzoo.cli import main
from diffzoo.commands import reference_stats as reference_command
from diffzoo.commands import train_classifier as classifier_command
from diffzoo.evaluate.classifier import ClassifierExtractor, train_classifier
from diffzoo.evaluate.images import ArrayImages, NpzImages, open_images
from diffzoo.evaluate.metrics import frechet_distance, precision_recall
from diffzoo.evaluate.reference import load_reference, reference_subset

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_metrics import _adm_is, _brute_force_pr  # noqa: E402  (shared independent references)

RES = 16


def _digits():
    d = load_digits()
    img = (d.images / 16 * 255).round().astype(np.uint8)
    img = np.kron(img, np.ones((1, RES // 8, RES // 8), np.uint8))
    return np.repeat(img[..., None], 3, -1), d.target.astype(np.int64)


def _run(module, argv):
    p = ArgumentParser()
    module.add_arguments(p)
    return module.run(p.parse_args(argv))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The images stage's form: index.json + shards of (images, labels)."""
    images, labels = _digits()
    d = tmp_path_factory.mktemp("digits")
    shards = []
    for i, start in enumerate(range(0, len(images), 1000)):
        name = f"shard-{i:05d}.npz"
        np.savez(d / name, images=images[start:start + 1000], labels=labels[start:start + 1000])
        shards.append(name)
    (d / "index.json").write_text(json.dumps({"num_images": len(images), "resolution": RES,
                                              "classes": [str(c) for c in range(10)], "shards": shards}))
    return d, images, labels


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "classifier.safetensors"
    assert _run(classifier_command, [str(data[0]), "--out", str(out), "--epochs", "8", "--noise-aug", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def reference(data, trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    argv = [str(data[0]), "--out", str(d / "ref.npz"), "--extractor", "classifier",
            "--classifier-weights", str(trained), "--num-ref", "1000", "--cache-dir", str(d / "cache")]
    assert _run(reference_command, argv) == 0
    return d / "ref.npz", argv


def test_shard_reader_streams_images_and_labels(data):
    src = open_images(data[0])
    assert (src.num_images, src.resolution) == (len(data[1]), (RES, RES))
    np.testing.assert_array_equal(np.concatenate(list(src.batches(333))), data[1])
    np.testing.assert_array_equal(src.labels, data[2])


def test_npz_streaming_reader_stored_and_compressed(tmp_path, data):
    images, labels = data[1][:250], data[2][:250]
    for save in (np.savez, np.savez_compressed):
        save(tmp_path / "s.npz", arr_0=images, labels=labels)
        src = NpzImages(tmp_path / "s.npz")
        np.testing.assert_array_equal(np.concatenate(list(src.batches(64))), images)
        np.testing.assert_array_equal(src.labels, labels)
        np.testing.assert_array_equal(src.take(np.array([0, 63, 64, 249]), 64), images[[0, 63, 64, 249]])


def test_image_folder_reader_with_class_folders(tmp_path, data):
    images, labels = data[1][:12], data[2][:12]
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / f"c{lab}").mkdir(exist_ok=True)
        Image.fromarray(im).save(tmp_path / f"c{lab}" / f"{i:03d}.png")
    src = open_images(tmp_path)
    order = sorted(range(12), key=lambda i: (f"c{labels[i]}", i))
    np.testing.assert_array_equal(np.concatenate(list(src.batches(5))), images[order])
    class_index = {name: k for k, name in enumerate(sorted({f"c{lab}" for lab in labels}))}
    np.testing.assert_array_equal(src.labels, [class_index[f"c{labels[i]}"] for i in order])


def test_classifier_trains_to_high_heldout_accuracy(trained):
    cfg = json.loads(trained.with_suffix(".json").read_text())
    assert cfg["heldout_accuracy"] > 0.9 and cfg["num_heldout"] == 360  # 1797 images, every 5th held out
    assert cfg["resolution"] == [RES, RES] and len(cfg["weights_sha256"]) == 64


def test_classifier_training_is_deterministic(data, tmp_path):
    src = ArrayImages(data[1][:400], data[2][:400])
    a = train_classifier(src, tmp_path / "a.safetensors", epochs=2, seed=3)
    b = train_classifier(src, tmp_path / "b.safetensors", epochs=2, seed=3)
    c = train_classifier(src, tmp_path / "c.safetensors", epochs=2, seed=4)
    assert a["weights_sha256"] == b["weights_sha256"] != c["weights_sha256"]


def test_reference_stats_match_direct_computation_and_cache(data, trained, reference, capsys):
    path, argv = reference
    ext = ClassifierExtractor(trained)
    feats = ext(data[1])["pool"].double().numpy()
    ref = load_reference(path)
    np.testing.assert_allclose(ref.mu, feats.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ref.sigma, np.cov(feats, rowvar=False), rtol=1e-7, atol=1e-9)
    keep = reference_subset(len(data[1]), 1000, 0)
    assert len(keep) == 1000 and np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(np.concatenate(list(ref.images.batches(500))), data[1][keep])
    np.testing.assert_allclose(ref.pool, feats[keep], rtol=1e-5, atol=1e-5)
    assert ref.extractor["name"] == "classifier" and ref.extractor["weights_sha256"] == ext.weights_sha256
    assert ref.mu_s is None  # sFID needs Inception's spatial features
    capsys.readouterr()
    assert _run(reference_command, argv) == 0
    assert '"cache": "hit"' in capsys.readouterr().out


def _evaluate(tmp_path, samples, ref, weights, *extra):
    out = tmp_path / "metrics.json"
    rc = main(["evaluate", str(samples), "--ref", str(ref), "--classifier-weights", str(weights),
               "--out", str(out), "--cache-dir", "", "--kid-subset-size", "100", "--is-split", "150", *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_evaluate_real_heldout_images_against_reference(tmp_path, data, trained, reference, capsys):
    images, labels = data[1][::5], data[2][::5]  # the classifier's held-out images, in file order
    np.savez(tmp_path / "samples.npz", arr_0=images, labels=labels)
    m = _evaluate(tmp_path, tmp_path / "samples.npz", reference[0], trained)  # classifier default: float32
    printed = capsys.readouterr().out
    for name in ("Inception Score:", "FID:", "sFID: n/a", "Precision:", "Recall:", "Class accuracy:"):
        assert name in printed
    cfg = json.loads(trained.with_suffix(".json").read_text())
    assert m["feature_extractor"]["name"] == "classifier"
    assert m["feature_extractor"]["weights_sha256"] == cfg["weights_sha256"]
    assert m["class_accuracy"] == pytest.approx(cfg["heldout_accuracy"])
    # independent recomputation from the extractor's raw outputs
    ext = ClassifierExtractor(trained)
    out = ext(images)
    feats, logits = out["pool"].double().numpy(), out["logits"].double().numpy()
    ref = load_reference(reference[0])
    fid = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), ref.mu, ref.sigma)
    assert m["fid"] == pytest.approx(fid, rel=1e-6)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert m["inception_score"] == pytest.approx(_adm_is(probs, 150), rel=1e-6)
    bp, br = _brute_force_pr(ref.pool.astype(np.float64), feats.astype(np.float32))
    assert (m["precision"], m["recall"]) == (bp, br)
    assert m["settings"]["distance_dtype"] == "float32"
    # why float32 is the classifier's default: its features have squared norms of thousands, where
    # float16 steps are 2-4, and ADM's float16 distances move recall by several points per thousand
    p16, r16 = precision_recall(ref.pool, feats.astype(np.float32), dtype="float16")
    assert abs(p16 - bp) <= 0.01 and abs(r16 - br) <= 0.01
    assert m["fid"] < 15 and m["precision"] > 0.8 and m["recall"] > 0.5
    assert m["kid"]["subset_size"] == 100


def test_evaluate_noise_is_far_from_reference(tmp_path, data, trained, reference, capsys):
    noise = np.random.default_rng(0).integers(0, 256, size=(300, RES, RES, 3), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", arr_0=noise, labels=np.arange(300) % 10)
    real = _evaluate(tmp_path, tmp_path / "noise.npz", reference[0], trained)
    assert real["precision"] < 0.05 and real["class_accuracy"] < 0.3 and real["fid"] > 50


def test_mixing_extractors_is_refused(tmp_path, data, trained, reference, capsys):
    np.savez(tmp_path / "s.npz", arr_0=data[1][:20])
    other = tmp_path / "other.safetensors"
    train_classifier(ArrayImages(data[1][:200], data[2][:200]), other, epochs=1)
    rc = main(["evaluate", str(tmp_path / "s.npz"), "--ref", str(reference[0]), "--classifier-weights", str(other)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "must not be mixed" in err
    # an ADM batch (no provenance) holds Inception statistics: not usable with the classifier
    np.savez(tmp_path / "adm.npz", arr_0=data[1][:20], mu=np.zeros(128), sigma=np.eye(128))
    rc = main(["evaluate", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "adm.npz"),
               "--extractor", "classifier", "--classifier-weights", str(trained)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Inception statistics" in err
    # samples at another resolution than the classifier's training images
    np.savez(tmp_path / "big.npz", arr_0=np.zeros((20, 32, 32, 3), np.uint8))
    np.savez(tmp_path / "ref32.npz", mu=np.zeros(128), sigma=np.eye(128),
             meta=np.array(json.dumps({"feature_extractor": load_reference(reference[0]).extractor})))
    rc = main(["evaluate", str(tmp_path / "big.npz"), "--ref", str(tmp_path / "ref32.npz"),
               "--classifier-weights", str(trained), "--cache-dir", ""])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "trained on 16x16" in err


def test_adm_argument_order_gives_the_same_numbers(tmp_path, data, trained, reference, capsys):
    """`diffzoo evaluate REF_BATCH SAMPLE_BATCH`, as ADM's evaluator.py takes them, equals the
    `SAMPLES --ref REF` form and prints ADM's five lines."""
    np.savez(tmp_path / "samples.npz", arr_0=data[1][:200], labels=data[2][:200])
    ours = _evaluate(tmp_path, tmp_path / "samples.npz", reference[0], trained)
    capsys.readouterr()
    out = tmp_path / "adm.json"
    assert main(["evaluate", str(reference[0]), str(tmp_path / "samples.npz"), "--classifier-weights", str(trained),
                 "--out", str(out), "--cache-dir", "", "--kid-subset-size", "100", "--is-split", "150"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed[:5]] == ["Inception Score", "FID", "sFID", "Precision", "Recall"]
    adm = json.loads(out.read_text())
    assert {k: adm[k] for k in ("fid", "precision", "recall", "inception_score")} == \
        {k: ours[k] for k in ("fid", "precision", "recall", "inception_score")}


def test_a_broken_reference_feature_cache_is_recomputed_not_used(tmp_path, data, trained, capsys):
    """The reference-pool cache (an ADM batch's arr_0 through our extractor) is written atomically, and a
    cache file cut short or forged is reported and recomputed, not trusted or fatal."""
    from diffzoo.evaluate.reference import reference_features

    images = data[1][:300]
    feats = ClassifierExtractor(trained)(images)["pool"].double().numpy()
    np.savez(tmp_path / "adm.npz", arr_0=images, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    ref, ext, cache = load_reference(tmp_path / "adm.npz"), ClassifierExtractor(trained), tmp_path / "cache"
    first = reference_features(ref, ext, cache_dir=cache)
    (cached,) = cache.glob("refpool-*.npy")
    assert not list(cache.glob("*.tmp"))
    np.testing.assert_allclose(first, feats, rtol=1e-5, atol=1e-5)
    for broken in (cached.read_bytes()[:200], b"garbage", b""):
        cached.write_bytes(broken)
        capsys.readouterr()
        np.testing.assert_array_equal(reference_features(ref, ext, cache_dir=cache), first)
        assert "recomputed" in capsys.readouterr().err
    np.save(cached, first[:10])  # a readable file of another reference's size
    np.testing.assert_array_equal(reference_features(ref, ext, cache_dir=cache), first)
    np.testing.assert_array_equal(np.load(cached), first)


def test_evaluate_cli_bootstraps_each_metric_over_the_samples(tmp_path, data, trained, reference, capsys):
    images, labels = data[1][::3], data[2][::3]
    np.savez(tmp_path / "samples.npz", arr_0=images, labels=labels)
    m = _evaluate(tmp_path, tmp_path / "samples.npz", reference[0], trained, "--bootstrap", "60")
    assert "Bootstrap over the samples (60 resamples" in capsys.readouterr().out
    b = m["bootstrap"]
    assert b["replicates"] == 60 and set(b["metrics"]) == {"fid", "precision", "recall", "inception_score",
                                                             "class_accuracy"}
    p, n = m["class_accuracy"], len(images)  # a proportion's standard error, sqrt(p (1 - p) / n)
    assert b["metrics"]["class_accuracy"]["se"] == pytest.approx(np.sqrt(p * (1 - p) / n), rel=0.4)
    assert b["metrics"]["precision"]["lo"] <= m["precision"] <= b["metrics"]["precision"]["hi"]
