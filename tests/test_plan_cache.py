"""The plan cache (diffzoo.plan_cache): the code's answers that planning needs, kept for one digest
of the package's source, so that a plan with nothing changed imports no torch."""
import json

import pytest

from diffzoo import plan_cache


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plan_cache, "_state", {})
    return tmp_path


def never():
    raise AssertionError("computed again, although the answer was stored")


def test_an_answer_is_computed_once_and_read_back_by_a_later_process(fresh, monkeypatch):
    assert plan_cache.memo("model-cost", "DiT-S/2 {}", lambda: {"gflops": 6.06}) == {"gflops": 6.06}
    monkeypatch.setattr(plan_cache, "_state", {})  # a new process
    assert plan_cache.memo("model-cost", "DiT-S/2 {}", never) == {"gflops": 6.06}
    assert plan_cache.memo("model-name", "DiT-S/2", lambda: None) is None  # None is an answer too
    monkeypatch.setattr(plan_cache, "_state", {})
    assert plan_cache.memo("model-name", "DiT-S/2", never) is None


def test_other_code_starts_afresh(fresh, monkeypatch):
    plan_cache.memo("model-build", "x", lambda: "an old error")
    monkeypatch.setattr(plan_cache, "_state", {})
    monkeypatch.setattr(plan_cache, "code_digest", lambda: "another digest")
    assert plan_cache.memo("model-build", "x", lambda: None) is None
    assert json.loads((fresh / plan_cache.PATH).read_text())["code"] == "another digest"


def test_an_unreadable_file_is_recomputed_and_rewritten(fresh, monkeypatch):
    (fresh / ".diffzoo").mkdir()
    (fresh / plan_cache.PATH).write_text('{"code": "trunc')
    assert plan_cache.memo("respaced-steps", "ddim25", lambda: 25) == 25
    assert json.loads((fresh / plan_cache.PATH).read_text())["entries"] == {"respaced-steps:ddim25": 25}
    monkeypatch.setenv("DIFFZOO_PLAN_CACHE", "0")
    assert plan_cache.memo("respaced-steps", "ddim25", lambda: 26) == 26  # off: always computed


def test_the_digest_follows_the_package_source(monkeypatch, tmp_path):
    import shutil

    package = tmp_path / "diffzoo"
    shutil.copytree(plan_cache.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(plan_cache, "PACKAGE", package)
    before = plan_cache.code_digest()
    assert plan_cache.code_digest() == before
    (package / "models" / "dit.py").write_text((package / "models" / "dit.py").read_text() + "\n# edited\n")
    assert plan_cache.code_digest() != before


def test_stored_files_are_package_relative(fresh):
    """Another copy of the same code (a DVC experiment's workspace) reads the same memo: a backbone's
    files are stored relative to the package and resolved against the copy that reads them."""
    from diffzoo.sources import source_files
    from diffzoo.utils import PACKAGE

    files = source_files(["commands/train.py"], "DiT-S/2")
    stored = json.loads((fresh / plan_cache.PATH).read_text())["entries"]["model-files:DiT-S/2"]
    assert sorted(stored) == ["models/dit.py", "models/layers.py"]
    assert sorted(files) == sorted(str(PACKAGE / f) for f in ["models/dit.py", "models/layers.py", "commands/train.py"])
