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


def test_the_mutation_runs_files_and_tests_exist():
    """pyproject's [tool.mutmut] must not rot when modules and tests move (a moved test file there was silently
    no longer run, and a moved module no longer mutated): every module, deselected or ignored test and selected test
    exists."""
    import tomllib

    mut = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    missing = [p for p in mut["only_mutate"] if not (REPO / p).is_file()]
    args = mut["pytest_add_cli_args"]
    deselected = [args[i + 1] for i, a in enumerate(args) if a == "--deselect"]
    for node in deselected:
        file, _, test = node.partition("::")
        if not (REPO / file).is_file() or f"def {test}(" not in (REPO / file).read_text():
            missing.append(node)
    missing += [a.partition("=")[2] for a in args if a.startswith("--ignore=") and not (REPO / a.partition("=")[2]).exists()]
    missing += [p for p in mut.get("pytest_add_cli_args_test_selection", []) if not (REPO / p).exists()]
    assert not missing, missing
    assert len(mut["only_mutate"]) == len(set(mut["only_mutate"]))


def test_suite_time_tells_a_waiting_test_from_a_working_one(tmp_path, capsys):
    suite_time = _script("suite_time")
    (tmp_path / "1.jsonl").write_text('{"id": "t::busy", "wall": 10.0, "cpu": 9.5}\n{"id": "t::idle", "wall": 6.0, "cpu": 0.5}\n')
    (tmp_path / "2.jsonl").write_text('{"id": "t::quick", "wall": 0.2, "cpu": 0.2}\n')
    assert suite_time.main(tmp_path, top=1) == 0
    out = capsys.readouterr().out
    assert "3 tests: 16 s wall, 10 s CPU" in out
    waiting, working = out.split("working most")
    assert "t::idle" in waiting and "t::busy" not in waiting and "t::busy" in working and "t::idle" not in working
    assert suite_time.main(tmp_path / "none") == 1


def test_the_mutation_score_counts_killed_equivalent_and_untested_mutants_per_module(capsys, tmp_path):
    """scripts/mutation_score.py on a made-up `mutmut results --all true`: killed and timed-out count as killed, a
    listed equivalent leaves the count, a mutant not yet tested makes the run unfinished, --module scores a part."""
    score = _script("mutation_score")
    eq = next(iter(score.equivalents()))
    lines = [f"    {eq}: survived",
             "    omniseg.store.merge.x_merge__mutmut_9001: killed", "    omniseg.store.merge.x_merge__mutmut_9002: timeout",
             "    omniseg.store.merge.x_merge__mutmut_9003: survived",
             "    omniseg.models.masks.x_binary__mutmut_9001: not checked"]
    import io

    def run(*argv):
        sys.stdin = io.StringIO("\n".join(lines) + "\n")
        try:
            return score.main(["--mutants", str(tmp_path), *argv]), capsys.readouterr().out
        finally:
            sys.stdin = sys.__stdin__

    code, out = run("--module", "omniseg.store.merge")
    assert code == 1 and "mutation score: 2/3 = 66.7%" in out and "masks" not in out  # under the 90% goal
    code, out = run()
    assert code == 1 and "the run did not finish: 1 mutants not tested" in out
    code, out = run("--module", score.module_of(eq), "--module", "omniseg.store.*", "--goal", "60")
    assert code == 0 and "not tested" not in out and f"{score.module_of(eq):34s}" in out  # 2/3 meets a 60% goal
