"""Mutation check: plausible one-line bugs that the test suite must catch, and the score we keep.

Each mutant below is a small, deliberate bug (the ones a mutation audit found the suite letting
through, and others across metrics, decoders, runner, store, cache, curate, stats and train). The
script copies the project to a temporary folder once, checks that the chosen tests pass there
unmutated, then applies each mutant in turn and runs the tests that should catch it, with the copy's
``src`` first on PYTHONPATH (subprocesses the tests start inherit it). A mutant is killed when those
tests fail. It prints each result, the mutation score (killed / total) and the survivors, and exits 1
if any survived. docs/testing.md records the last score.

    python scripts/mutants.py [--only NAME[,NAME]] [--list] [--jobs 2]

Plain Python on purpose: mutmut's generated mutants are mostly noise for this question (which bugs
that matter would go unnoticed); a fixed, named list keeps the score comparable from run to run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv*", "runs", "__pycache__", "*.egg-info", ".pytest_cache", "data")


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    edits: tuple[tuple[str, str, str], ...]  # (file, exact text found once, replacement)
    tests: tuple[str, ...]  # pytest node ids that must catch it


def m(name, what, file, old, new, *tests, also=()):
    return Mutant(name, what, ((file, old, new), *also), tuple(tests))


T = "tests/"
GEM = T + "models/api/gemini/test_gemini.py::"
MUTANTS = [
    # -- the ones the audit found surviving -------------------------------------------------------
    m("cache-key-prompt", "the prompt dropped from the answer archive's key",
      "src/omniseg/models/api/remote.py", "mode=o.mode, prompt=prompt,", "mode=o.mode,",
      GEM + "test_archive_key_follows_every_part_that_changes_the_answer_and_nothing_else"),
    m("cache-key-api-key", "the API key added to the answer archive's key",
      "src/omniseg/models/api/remote.py", "mode=o.mode, prompt=prompt,", "mode=o.mode, prompt=prompt, key=self.provider.api_key(),",
      GEM + "test_archive_key_follows_every_part_that_changes_the_answer_and_nothing_else"),
    m("skip-if-any-model", "a sample skipped when any model has done it (a model added later records nothing)",
      "src/omniseg/inference/runner.py", "[r for r in chunk if (r.id, m.name) not in done]",
      "[r for r in chunk if r.id not in {s for s, _ in done}]",
      T + "inference/test_runner.py::test_a_model_added_to_an_existing_store_gets_every_pair"),
    m("crop-threshold-low", "PNG crops thresholded at grey 100 instead of 127",
      "src/omniseg/models/api/decoders.py", "THRESHOLD = 127", "THRESHOLD = 100",
      T + "models/api/test_decoders.py::test_crop_threshold_is_grey_above_127"),
    m("crop-threshold-ge", "PNG crops thresholded with >= (grey 127 becomes foreground)",
      "src/omniseg/models/api/decoders.py", "mask[y0:y1, x0:x1] |= np.asarray(crop) > threshold",
      "mask[y0:y1, x0:x1] |= np.asarray(crop) >= threshold",
      T + "models/api/test_decoders.py::test_crop_threshold_is_grey_above_127"),
    m("cldice-arithmetic", "clDice as the arithmetic mean of topology precision and sensitivity",
      "src/omniseg/scoring/metrics.py", "2 * tprec * tsens / (tprec + tsens)", "(tprec + tsens) / 2",
      T + "scoring/test_metrics.py::test_cldice_is_the_harmonic_mean_of_topology_precision_and_sensitivity"),
    m("split-python-hash", "split_of with Python's per-process hash() instead of a salted sha256",
      "src/omniseg/datasets/base.py",
      "h = int(hashlib.sha256((_SPLIT_SALT + group + sample_id).encode()).hexdigest()[:12], 16)",
      "h = hash(_SPLIT_SALT + group + sample_id) % 16**12",
      T + "datasets/test_splits.py::test_unlisted_ids_get_the_pinned_splits_in_every_process"),
    m("manifest-timestamp", "a timestamp in the manifest (reports no longer byte-identical)",
      "src/omniseg/study/manifest.py", '"omniseg_version": __version__,', '"omniseg_version": __version__, "written": int(__import__("time").time()),',
      T + "study/test_report.py::test_full_report_folder_is_complete_consistent_and_deterministic"),
    m("report-set-order", "report models in set order (differs between processes)",
      "src/omniseg/study/report.py", 'models = sorted(g["model"].unique())', 'models = list(set(g["model"].unique()))',
      T + "study/test_report.py::test_full_report_folder_is_complete_consistent_and_deterministic"),
    m("train-last-epoch", "the last epoch saved instead of the best",
      "src/omniseg/training/train.py", "if val_dice > self.best:", "if True:",
      T + "training/test_train.py::test_the_checkpoint_is_the_best_epoch_of_the_log"),
    m("box-axes-both-sides", "box_2d read as [x0, y0, x1, y1] by the decoder and written so by the fake",
      "src/omniseg/models/api/decoders.py", "y0, x0, y1, x1 = clipped", "x0, y0, x1, y1 = clipped",
      T + "models/api/test_decoders.py::test_box_2d_is_y0_x0_y1_x1_on_a_non_square_image",
      also=(("src/omniseg/standins/gemini_answers.py", 'entries.append({"box_2d": bc[0],',
             'entries.append({"box_2d": [bc[0][1], bc[0][0], bc[0][3], bc[0][2]],'),)),
    m("in-flight-cap", "the cap on requests in flight doubled",
      "src/omniseg/models/api/scheduler.py", "asyncio.Semaphore(self.options.max_in_flight)",
      "asyncio.Semaphore(2 * self.options.max_in_flight)",
      GEM + "test_the_in_flight_cap_and_the_rpm_limit_hold_at_the_server"),
    m("rpm-ignored", "the requests-per-minute limit ignored",
      "src/omniseg/models/api/scheduler.py", "        if not self.options.rpm:\n            return", "        return",
      GEM + "test_the_in_flight_cap_and_the_rpm_limit_hold_at_the_server"),
    # -- others, across the package ---------------------------------------------------------------
    m("dice-empty-convention", "both masks empty scored Dice 0 instead of 1",
      "src/omniseg/scoring/metrics.py", "return 1.0 if den == 0 else 2 * c.tp / den", "return 0.0 if den == 0 else 2 * c.tp / den",
      T + "scoring/test_metrics.py"),
    m("hd95-percentile", "HD95 computed at the 90th percentile",
      "src/omniseg/scoring/metrics.py", "g.spacing, 95.0)", "g.spacing, 90.0)",
      T + "scoring/test_boundary.py::test_nsd_masd_and_hd95_equal_monais_with_the_same_spacing"),
    m("failures-dropped", "a failed prediction scored as nothing instead of an empty mask",
      "src/omniseg/inference/runner.py", "used = pred.mask if pred.status == \"ok\" else np.zeros_like(sample.mask)",
      "used = pred.mask if pred.status == \"ok\" else sample.mask",
      T + "inference/test_runner.py::test_a_failing_model_is_scored_as_empty"),
    m("polygon-half-pixel", "polygon points placed at pixel edges instead of centres",
      "src/omniseg/models/api/decoders.py", "y = (np.arange(top, bottom) + 0.5)[:, None]", "y = np.arange(top, bottom)[:, None]",
      T + "models/api/test_decoders.py::test_polygon_edges_between_pixel_centres"),
    m("point-order-ignored", "the point_order option ignored",
      "src/omniseg/models/api/forms.py", 'if point_order == "yx" else (p[0], p[1])', 'if False else (p[0], p[1])',
      T + "models/api/test_decoders.py::test_polygon_points_are_x_y_and_fill_pixels_whose_centre_is_inside"),
    m("seg-tokens-guessed", "<seg_N> token answers passed on to the JSON decoders",
      "src/omniseg/models/api/forms.py", 'if "<seg_" in text:', 'if "<seg_" in text and False:',
      T + "models/api/test_decoders.py::test_prose_tokens_and_unknown_forms_quote_the_answer"),
    m("archive-only-ok", "only answers whose usage reads kept in the archive (the others paid again)",
      "src/omniseg/models/api/cached.py", "                self.archive.put(key, self.provider.options.model,",
      "                booking['cost_known'] and self.archive.put(key, self.provider.options.model,",
      T + "models/api/test_remote.py::test_hostile_answers_become_rows_and_every_paid_answer_is_kept_and_booked_once"),
    m("redecode-all-again", "redecode rewriting rows already decoded by today's decoder",
      "src/omniseg/inference/redecode.py", 'meta.get("decoder_version") != forms.DECODER_VERSION', 'meta.get("decoder_version") != "x"',
      T + "inference/test_redecode.py"),
    m("retry-delay-ignored", "the server's RetryInfo delay ignored",
      "src/omniseg/models/api/scheduler.py", "await asyncio.sleep(max(backoff, fail.delay or 0.0))", "await asyncio.sleep(backoff)",
      GEM + "test_retry_info_is_honoured_and_retries_are_bounded"),
    m("retry-failed-noop", "--retry-failed redoing nothing",
      "src/omniseg/store/results.py", "return {(r[0], r[1]) for r in rows if r[2] not in redo}", "return {(r[0], r[1]) for r in rows}",
      GEM + "test_a_plain_rerun_skips_failed_pairs_and_retry_failed_asks_again"),
    m("late-booking-lost", "answers of an interrupted run never booked by the rerun",
      "src/omniseg/store/bookings.py", "        if booked:", "        if True:",
      GEM + "test_a_kill_between_two_writes_of_one_chunk_books_each_answer_once"),
    m("curate-ties", "curation ties broken by descending id",
      "src/omniseg/study/curate.py", 'easiest = df.sort_values(["value", "sample_id"], ascending=[False, True])',
      'easiest = df.sort_values(["value", "sample_id"], ascending=[False, False])',
      T + "study/test_curate.py::test_easiest_and_hardest_with_ties_broken_by_id"),
    m("curate-overlap", "easiest and hardest lists allowed to overlap when cases are few",
      "src/omniseg/study/curate.py", "n = min(extremes, len(df) // 2)", "n = min(extremes, len(df))",
      T + "study/test_curate.py::test_too_few_cases_never_overlap"),
    m("bootstrap-level", "a 90% interval reported as the 95% one",
      "src/omniseg/study/stats.py", "alpha = (1 - level) / 2", "alpha = (1 - level)",
      T + "study/test_stats.py"),
    m("wilcoxon-unpaired", "comparisons not paired: NaN rows of one model not dropped from the other",
      "src/omniseg/study/stats.py", "keep = ~(np.isnan(a) | np.isnan(b))", "keep = ~np.isnan(a)",
      T + "study/test_stats.py"),
    m("verdict-touching-zero", "an interval touching 0 read as excluding it",
      "src/omniseg/study/claims.py", "    if lo > 0:\n        return \"supported\"", "    if lo >= 0:\n        return \"supported\"",
      T + "study/test_claims.py::test_verdicts_follow_the_interval"),
    m("null-correction-sign", "the null correction added instead of subtracted (specialist in the second's place)",
      "src/omniseg/study/claims.py", 'both(claim, "null-corrected", specialist, second, omnimodel, easy, hard)',
      'both(claim, "null-corrected", second, specialist, omnimodel, easy, hard)',
      T + "study/test_claims.py::test_findings_table_lays_the_analyses_side_by_side"),
    m("pixel-coords-unscaled", "pixel coordinates read as 0..1000",
      "src/omniseg/models/api/frames.py", "return 1000.0 / w, 1000.0 / h", "return 1.0, 1.0",
      T + "models/api/test_decoders.py::test_coordinate_conventions_give_the_same_mask"),
    m("retry-after-ignored", "the OpenAI-compatible retry-after header ignored",
      "src/omniseg/models/api/openai.py", "retryable=err.code in RETRY_CODES, delay=err.retry_after)",
      "retryable=err.code in RETRY_CODES, delay=None)",
      T + "models/api/test_openai.py::test_retry_after_is_honoured_and_non_retryable_errors_are_final"),
    m("role-by-kind", "the report's omnimodels chosen by kind name (an extension's omnimodel left out)",
      "src/omniseg/study/report.py", 'omnis = [omnimodel] if omnimodel else [m for m in models if roles.get(m) == "omnimodel" and m not in privileged]',
      'omnis = [omnimodel] if omnimodel else [m for m in models if m.startswith("gem") and m not in privileged]',
      T + "test_plugins.py::test_an_extension_by_module_path_runs_curates_and_reports"),
    m("report-failures-uncounted", "failures left out of the failure rate",
      "src/omniseg/study/report.py", 'fails = int((scored["status"] != "ok").sum())', 'fails = 0',
      T + "study/test_report.py::test_summary_matches_a_hand_computation"),
    m("batch-full-price", "a batch job's answers booked at the online price",
      "src/omniseg/inference/batch.py", ", m.options.price.batch_factor)", ", 1.0)",
      T + "inference/test_batch.py::test_a_batch_run_writes_each_pair_once_at_half_the_online_price"),
    m("batch-job-not-found", "a job whose create answer never arrived is not looked for (its work is submitted again)",
      "src/omniseg/inference/batch.py", 'name = jobs.find(row["display_name"])', "name = None",
      T + "inference/test_batch.py::test_a_killed_batch_run_finds_its_job_and_ends_with_every_pair_once"),
    m("batch-errors-dropped", "a job's failed requests left to do instead of written as api_error rows",
      "src/omniseg/inference/batch.py", 'outcomes.append(("api_error", redact(', 'outcomes.append(("answered" and None, redact(',
      T + "inference/test_batch.py::test_failed_requests_of_a_job_become_rows_and_retry_sends_only_them"),
    m("train-cache-ignores-split", "the decoded training split cached without its fingerprint (a changed split reuses it)",
      "src/omniseg/training/data.py", "dataset_name, split_fingerprint(refs), size]", "dataset_name, size]",
      T + "training/test_train.py::test_the_split_is_decoded_once_then_read_from_the_cache"),
    m("augment-mask-not-flipped", "a horizontal flip applied to the image and not to its mask",
      "src/omniseg/training/data.py", "x, y = x.flip(-1), y.flip(-1)", "x, y = x.flip(-1), y",
      T + "training/test_train.py::test_device_augmentation_moves_image_and_mask_together"),
]


def apply(root: Path, mutant: Mutant) -> dict[Path, str]:
    """Apply the edits; return the original texts to restore."""
    originals = {}
    for file, old, new in mutant.edits:
        path = root / file
        text = originals.get(path) or path.read_text()
        current = path.read_text()
        if current.count(old) != 1:
            raise SystemExit(f"mutant {mutant.name}: {old!r} found {current.count(old)} times in {file}, expected once")
        originals.setdefault(path, text)
        path.write_text(current.replace(old, new))
    return originals


def pytest(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, float, str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONDONTWRITEBYTECODE": "1"}
    t = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=root,
                              env=env, capture_output=True, text=True, timeout=timeout)
        ok, tail = done.returncode == 0, (done.stdout + done.stderr).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        ok, tail = False, ["timed out"]
    return ok, time.perf_counter() - t, tail[0] if tail else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated mutant names")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--jobs", type=int, default=2, help="mutants run at once, each in its own copy")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per mutant")
    args = ap.parse_args()
    chosen = [mu for mu in MUTANTS if not args.only or mu.name in args.only.split(",")]
    if args.list:
        for mu in chosen:
            print(f"{mu.name:26s} {mu.what}")
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="omniseg-mutants-") as tmp:
        copies = [Path(tmp) / f"copy{j}" for j in range(max(1, args.jobs))]
        for c in copies:
            shutil.copytree(REPO, c, ignore=IGNORE)
        union = tuple(sorted({t for mu in chosen for t in mu.tests}))
        ok, secs, tail = pytest(copies[0], union, args.timeout * 3)
        if not ok:
            raise SystemExit(f"the chosen tests fail without any mutant ({tail}); fix them first")
        print(f"{len(union)} test targets pass unmutated ({secs:.0f}s); {len(chosen)} mutants, {len(copies)} at a time\n")
        free = list(copies)

        def one(mu: Mutant):
            root = free.pop()
            try:
                originals = apply(root, mu)
                try:
                    survived, secs, tail = pytest(root, mu.tests, args.timeout)
                finally:
                    for path, text in originals.items():
                        path.write_text(text)
                return mu, not survived, secs, tail
            finally:
                free.append(root)

        results = []
        with ThreadPoolExecutor(max_workers=len(copies)) as pool:
            for mu, killed, secs, tail in pool.map(one, chosen):
                results.append((mu, killed))
                print(f"{'killed  ' if killed else 'SURVIVED'} {mu.name:26s} {secs:6.1f}s  {mu.what}"
                      + (f"  [{tail}]" if killed else ""), flush=True)
    killed = sum(k for _, k in results)
    print(f"\nmutation score: {killed}/{len(results)} = {killed / len(results):.0%} in {(time.perf_counter() - t0) / 60:.1f} min")
    survivors = [mu.name for mu, k in results if not k]
    if survivors:
        print("survivors: " + ", ".join(survivors))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
