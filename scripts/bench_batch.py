"""Peak memory of `omniseg run --batch` with a file-based job: 1000 images against 100.

A batch job's input is written to a JSONL file a line at a time and uploaded in chunks, and its
results file is downloaded to disk and read a line at a time, so the peak memory of the omniseg
process should not grow with the job's size. This starts the fake Gemini server (batch endpoints
included) in its own process, runs `omniseg run --batch` (batch_input: file) for --small and for
--large images in fresh stores, each in its own process, reads each process's peak RSS from
wait4(), and prints both and their ratio (the bar: within 10%).

Both runs use the same --batch-size (samples per chunk of the ordinary run that writes the rows). The
runner keeps up to four chunks of decoded images in flight (read ahead, predicting, being written), so
with the default chunk of 32 a 100-image run never fills that pipeline while a 1000-image run does:
measured on 2026-11-28 that alone made the ratio 1.35 (319 vs 430 MB), all of it in the row-writing
stage after the job (the job stage itself stayed at 125-142 MB for 1000 images). Chunks of 8 let both
runs reach the runner's steady state, so the ratio measures what grows with the job's size.

    python scripts/bench_batch.py [--small 100] [--large 1000] [--root ../shared/data/kvasir-seg/Kvasir-SEG]

By default the images are 1000 generated Kvasir-shaped JPEGs, all 600x500: the peak of a run is set
by the largest images in flight, and the real Kvasir-SEG's are not uniform (its first 100 images reach
1.44 Mpx, all 1000 reach 2.06 Mpx), so on the real files the ratio mixes the job's size with the
largest image's. `--root` runs the real files anyway.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def generated_kvasir(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:500, :600]
    for i in range(n):
        cy, cx, r = rng.uniform(150, 350), rng.uniform(150, 450), rng.uniform(40, 120)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = np.clip(np.where(m, 190, 110)[..., None] + rng.normal(0, 12, (500, 600, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"case{i:04d}.jpg", quality=90)
        Image.fromarray((m * 255).astype(np.uint8)).save(root / "masks" / f"case{i:04d}.jpg", quality=95)
    return root


def peak_rss_mb(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Run ``cmd``; its peak resident set size in MB (from wait4), its seconds, its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, out  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="a Kvasir-SEG folder instead of generated images")
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=1000)
    ap.add_argument("--max-side", type=int, default=512, help="images are sent at most this large")
    ap.add_argument("--batch-size", type=int, default=8, help="samples per chunk of the row-writing run (both runs)")
    args = ap.parse_args()
    env = {**os.environ, "GEMINI_API_KEY": "bench-key-not-real", "NO_PROXY": "127.0.0.1,localhost"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = args.root or generated_kvasir(tmp_path / "kvasir", args.large)
        server = subprocess.Popen([sys.executable, "-m", "omniseg.standins.fake_gemini", "--delay", "0", "--stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        url = server.stdout.readline().strip()
        try:
            results = {}
            for n in (args.small, args.large):
                cfg = tmp_path / f"bench{n}.yaml"
                cfg.write_text(f"task: polyp\ndataset:\n  name: kvasir-seg\n  root: {root}\nsplit: all\nmodels:\n"
                               f"  - name: gem\n    kind: gemini\n    options: {{base_url: '{url}', target: polyp, "
                               f"batch_input: file, batch_poll_s: 1, max_side: {args.max_side}}}\n")
                cmd = [sys.executable, "-m", "omniseg.cli", "run", "--config", str(cfg), "--store",
                       str(tmp_path / f"s{n}" / "omniseg.sqlite"), "--batch", "--limit", str(n), "--batch-size", str(args.batch_size), "-q"]
                mb, secs, out = peak_rss_mb(cmd, env)
                jsonl = sum(f.stat().st_size for f in (tmp_path / f"s{n}").rglob("*") if f.is_file())
                results[n] = mb
                print(f"{n:5d} images, one file job: peak RSS {mb:7.1f} MB, {secs:6.1f} s "
                      f"({out.strip().splitlines()[-1].strip()}; store folder {jsonl / 1e6:.0f} MB)")
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    ratio = results[args.large] / results[args.small]
    print(f"peak RSS ratio {args.large} / {args.small} images: {ratio:.3f} (bar: within 10%, i.e. <= 1.10)")


if __name__ == "__main__":
    main()
