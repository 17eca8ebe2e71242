"""API-model throughput against the ideal, per provider, and the cost of a cached rerun.

For each provider (Gemini through the real google-genai client, an OpenAI-compatible endpoint through
the `openai` kind), starts its fake server (omniseg.standins.fake_gemini / fake_openai) in its own
process, answering every request after --latency seconds, runs `omniseg run` for --images Kvasir-SEG
images under each (in-flight cap, requests-per-minute limit) setting, and prints the achieved requests
per second against the ideal min(cap / latency, rpm / 60), and the best possible wall time against the
measured one (the ideal rate ignores that the last round of requests is partly empty). Finally it reruns
the last setting with --force and reports its time and how many API calls it made (the archive should answer everything).

    python scripts/bench_api.py --root ../shared/data/kvasir-seg/Kvasir-SEG [--images 500] [--latency 1] \
        [--providers gemini,openai]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omniseg import config as config_mod
from omniseg.inference.runner import run
from omniseg.store.database import Store

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared/data/kvasir-seg/Kvasir-SEG")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--settings", default="32:1200,16:0", help="cap:rpm pairs (rpm 0 = no limit)")
    ap.add_argument("--providers", default="gemini,openai", help="comma-separated: gemini, openai")
    args = ap.parse_args()
    os.environ.setdefault("GEMINI_API_KEY", "bench-key-not-real")
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    for provider in args.providers.split(","):
        bench(provider, args)


# provider -> (fake server module, model entry given the server's url); the answer forms whose fakes cost
# the least CPU (PNG crops, boxes): on 2 cores the fake server's work would otherwise be measured too
KINDS = {
    "gemini": ("omniseg.standins.fake_gemini", lambda url: f"kind: gemini\n    options: {{base_url: '{url}', target: polyp, mode: json-mask"),
    "openai": ("omniseg.standins.fake_openai",
               lambda url: f"kind: openai\n    options: {{base_url: '{url}/v1', model: bench-vlm, key_env: null, target: polyp, mode: box"),
}


def bench(provider: str, args) -> None:
    module, entry = KINDS[provider]
    server = subprocess.Popen([sys.executable, "-m", module, "--delay", str(args.latency), "--stdin"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    print(f"{provider}: fake server {url}, {args.latency:.1f}s per answer, {args.images} Kvasir-SEG images")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for i, setting in enumerate(args.settings.split(",")):
                cap, rpm = (int(v) for v in setting.split(":"))
                rpm_opt = f", rpm: {rpm}" if rpm else ""
                cfg_path = tmp / f"bench{i}.yaml"
                cfg_path.write_text(
                    f"task: polyp\ndataset: {{name: kvasir-seg, root: {args.root.resolve()}}}\nsplit: all\n"
                    f"models:\n  - name: api\n    {entry(url)}, max_in_flight: {cap}{rpm_opt}, max_side: 256}}\n")
                cfg = config_mod.load(cfg_path)
                store = tmp / f"setting{i}" / "s.sqlite"  # each setting its own store and answer archive
                ideal = min(cap / args.latency, rpm / 60 if rpm else float("inf"))
                # the best wall time possible: with every answer taking --latency, n requests under a cap of
                # `cap` need ceil(n / cap) rounds (100 at 16: 7 rounds, not 6.25), and the rpm spacing
                spaced = (args.images - 1) * 60 / rpm + args.latency if rpm else 0.0
                best = max(math.ceil(args.images / cap) * args.latency, spaced)
                with Store(store) as st:
                    wall, t = time.time(), time.perf_counter()
                    s = run(cfg, st, limit=args.images, progress=False)
                    took = time.perf_counter() - t
                    calls = st.query("SELECT COUNT(*) n FROM api_calls WHERE outcome = 'answered'")["n"][0]
                    # when the first request left (its answer's booking time less its latency) and the last
                    # answer was booked: the start-up against the steady rate
                    span = st.query("SELECT MIN(created_at - latency_s) a, MAX(created_at) b FROM api_calls "
                                    "WHERE outcome = 'answered'")
                    first, last = float(span["a"][0]), float(span["b"][0])
                rate = calls / took
                print(f"  cap {cap:3d}, rpm {rpm or 'none':>5}: {calls} calls in {took:6.1f}s = {rate:6.2f} req/s;"
                      f" ideal {ideal:6.2f}; ratio {rate / ideal:.3f}; best possible {best:.1f}s, ratio to it "
                      f"{best / took:.3f}  ({dict(s.statuses)})")
                print(f"    first request about {first - wall:.2f}s after the start; from it to the last answer "
                      f"{calls / (last - first):6.2f} req/s = {calls / (last - first) / ideal:.3f} of the ideal")
            with Store(store) as st:
                t = time.perf_counter()
                run(cfg, st, limit=args.images, progress=False, force=True)
                took = time.perf_counter() - t
                last = st.query("SELECT MAX(run_id) r FROM runs")["r"][0]
                made = st.query("SELECT COUNT(*) n FROM api_calls WHERE run_id = ? AND outcome != 'cache_hit'",
                                (int(last),))["n"][0]
                hits = st.query("SELECT COUNT(*) n FROM api_calls WHERE run_id = ? AND outcome = 'cache_hit'",
                                (int(last),))["n"][0]
            print(f"  cached rerun (--force): {took:.1f}s, {made} API calls, {hits} answers from the archive")
    finally:
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
