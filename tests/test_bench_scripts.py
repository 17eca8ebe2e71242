"""The benchmark scripts' own logic (their figures are measured by running them, not here)."""

from __future__ import annotations

import importlib.util
import sys

from omniseg.models.specialist import load_checkpoint

from conftest import REPO, make_kvasir


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_bench_specialist_trains_its_default_checkpoint_once(tmp_path):
    """Hardening defect 12: without --checkpoint the bench used random weights, whose speckled masks
    make scoring and PNG writing far slower than real predictions."""
    bench = _script("bench_specialist")
    root = make_kvasir(tmp_path / "k", n=40)
    ckpt = bench.small_checkpoint(root, tmp_path / "cache", epochs=1)
    _, spec, info = load_checkpoint(ckpt)
    assert info["epoch"] == 1 and info["train"]["seed"] == 0 and info["fit_images"] > 0  # trained, not random
    stamp = ckpt.stat().st_mtime_ns
    assert bench.small_checkpoint(root, tmp_path / "cache", epochs=1) == ckpt and ckpt.stat().st_mtime_ns == stamp


def test_every_mutant_still_applies_and_is_documented():
    """scripts/mutants.py must not rot: each edit finds its line exactly once, each mutant names tests
    that exist, and docs/testing.md lists it."""
    mutants = _script("mutants")
    docs = (REPO / "docs" / "testing.md").read_text()
    assert len(mutants.MUTANTS) >= 20
    for mu in mutants.MUTANTS:
        assert f"`{mu.name}`" in docs, mu.name
        for file, old, new in mu.edits:
            assert (REPO / file).read_text().count(old) == 1, (mu.name, file)
            assert old != new
        for t in mu.tests:
            path, _, name = t.partition("::")
            assert (REPO / path).is_file(), t
            assert not name or f"def {name}(" in (REPO / path).read_text(), t
