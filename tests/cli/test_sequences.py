"""Issue 42: the promises of tests/invariants.py checked after every step of random command sequences.

A hypothesis ``RuleBasedStateMachine`` drives the real command line (in-process through the Typer app; a kill in a
child forked from this process, SIGKILLed right after the n-th call of a code point the kill tests use) through
random sequences of ``run`` online and ``--batch``, ``--refresh``, ``--force``, ``--retry-failed``, ``--shard K/N``
with ``merge``, ``redecode`` and kills, on a small generated dataset that may hold a duplicate image, odd ids and a
broken file, against the fake Gemini and OpenAI-compatible servers told to misbehave at random (429 and 5xx with
bodies that are no objects, results out of order and partial batch jobs, errors that echo the key in a header, a
body or a URL, reasoning tokens in usage). After every step: every promise of tests/invariants.py (each pair one
row, each answer booked once and kept, no key in any file, no scratch left, curate and report succeed); the store's
booked cost equals what the servers served, priced by the configuration (less at most what a kill left on the wire);
and a plain rerun of a finished `run` makes no new call.

CI runs a bounded, reproducible search (40 sequences of up to 12 steps, ``derandomize``); ``OMNISEG_RANDOM=1
OMNISEG_SEQUENCES=300 OMNISEG_STEPS=15 python -m pytest -q tests/cli/test_sequences.py`` searches longer, at random
(docs/testing.md).
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from typing import Callable
import signal
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from PIL import Image
from typer.testing import CliRunner

import invariants
from conftest import blob_mask, lesion_image
from omniseg.cli import app
from omniseg.standins import fake_openai, gemini_answers as ga, hostile
from omniseg.standins.fake_gemini import FakeGemini
from omniseg.standins.fake_http import Reply
from omniseg.standins.fake_openai import FakeOpenAI

GEMINI_KEY = "seq-gemini-key-0123456789abcdef"
VLM_KEY = "seq-vlm-key-fedcba9876543210"
#: USD per million tokens (input, output); batch answers cost half
PRICES = {"gem": (1.0, 4.0), "vlm": (0.5, 2.0)}
IN_FLIGHT = 3
SEQUENCES = int(os.environ.get("OMNISEG_SEQUENCES", "40"))
STEPS = int(os.environ.get("OMNISEG_STEPS", "12"))
#: code points a kill lands after (the n-th call returns), as the kill tests use them
KILL_POINTS = ("omniseg.store.results:record", "omniseg.store.archive:AnswerArchive.put",
               "omniseg.store.schema:Transaction.__exit__", "omniseg.models.api.gemini.batch:GeminiJobs.status")
SERVICE_MODES = ("good", "flaky", "leaky", "reasoning", "hostile")


def _unit(*parts) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 16 ** 8


class Service:
    """Both fake providers, one mode for both (what they are told to do), and every answer they served with the
    price the configuration gives it."""

    def __init__(self):
        self.mode = "good"
        self.served: list[tuple[str, float]] = []  # (model, USD) of every answer sent with a readable usage
        self.gemini = FakeGemini(self._gemini)
        self.openai = FakeOpenAI(self._openai, key=VLM_KEY)

    def __enter__(self):
        self.gemini.__enter__()
        self.openai.__enter__()
        return self

    def __exit__(self, *exc):
        self.openai.__exit__(*exc)
        self.gemini.__exit__(*exc)

    def requests(self) -> int:
        return len(self.gemini.log) + len(self.openai.log)

    def _odd_failure(self, req, overloaded) -> Reply | None:
        """Attempt 1 of some images: a 429 or 5xx whose body is a list, a string or an HTML page."""
        u = _unit("flaky", req.image_sha)
        if req.attempt > 1 or u > 0.6:
            return None
        return [Reply(429, [{"error": "slow down"}], kind="http429"), Reply(503, "overloaded", kind="http503"),
                Reply(502, raw=b"<html><body>502 Bad Gateway</body></html>", kind="http502"),
                overloaded(req)][int(u * 10) % 4]

    def _leak(self, req, leaky_error) -> Reply | None:
        """An error that echoes the caller's key in its message, in a URL and in a header (not retried)."""
        if _unit("leak", req.image_sha) > 0.5:
            return None
        r = leaky_error(req)
        r.headers = {"x-echo-key": str(req.api_key)}
        return r

    def _gemini(self, req):
        return self._answer(GEMINI, req)

    def _openai(self, req):
        return self._answer(OPENAI, req)

    def _answer(self, p: "Wire", req) -> Reply:
        mode = self.mode
        r = None
        if mode == "flaky":
            r = self._odd_failure(req, p.overloaded)
        elif mode == "leaky":
            r = self._leak(req, p.leaky_error)
        elif mode == "hostile" and _unit("hostile", req.image_sha) < 0.5:
            r = p.hostile(("echo_key", "page_breaker", "nan_points", "max_tokens_empty"))(req)
        if r is None:
            r = p.good(req)
            if mode == "reasoning":
                r.body[p.usage_field] = p.usage_with_thoughts(int(_unit("t", req.image_sha) * 900))
        self._note(p.model, req, r, p.tokens, p.usage_field)
        return r

    def _note(self, model: str, req, r: Reply, tokens, field: str) -> None:
        if r.status != 200 or not isinstance(r.body, dict) or not isinstance(r.body.get(field), dict):
            return
        prompt, output = tokens(r.body[field])
        p_in, p_out = PRICES[model]
        cost = (prompt * p_in + output * p_out) / 1e6 * (0.5 if req.api_key == "batch" else 1.0)
        self.served.append((model, cost))


@dataclass
class Wire:
    """What one provider's fake answers in each of the service's modes, and how its usage is read."""

    model: str  # the config entry
    good: Callable
    overloaded: Callable  # a retryable error
    leaky_error: Callable  # a final error whose message echoes the key
    hostile: Callable
    usage_field: str
    usage_with_thoughts: Callable[[int], dict]
    tokens: Callable[[dict], tuple]  # usage -> (input tokens, billed output tokens)


GEMINI = Wire("gem", ga.good_answer, lambda q: ga.error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"),
              lambda q: ga.error(400, "INVALID_ARGUMENT", f"API key {q.api_key} not valid: "
                                 f"https://generativelanguage.googleapis.com/v1beta?key={q.api_key}"),
              hostile.gemini, "usageMetadata", lambda t: ga.usage(300, 120, thoughts=t),
              lambda u: (u.get("promptTokenCount"), (u.get("candidatesTokenCount") or 0) + (u.get("thoughtsTokenCount") or 0)))
OPENAI = Wire("vlm", fake_openai.good_answer, lambda q: fake_openai.error(500, "The server had an error"),
              lambda q: fake_openai.error(400, f"Incorrect API key provided: {q.api_key}. "
                                               f"See https://example.invalid/v1?key={q.api_key}"),
              hostile.openai, "usage", lambda t: {"prompt_tokens": 300, "completion_tokens": 120 + t,
                                                  "total_tokens": 420 + t, "completion_tokens_details": {"reasoning_tokens": t}},
              lambda u: (u.get("prompt_tokens"), u.get("completion_tokens")))


def _config(path: Path, root: Path, service: Service) -> Path:
    import json

    common = {"target": "polyp", "backoff_s": 0.01, "backoff_max_s": 0.02, "max_retries": 2,
              "max_in_flight": IN_FLIGHT, "max_side": 128}
    gem = {"base_url": service.gemini.url, "model": "gemini-3.5-flash", "batch_poll_s": 0.02,
           "price": {"input_per_mtok": PRICES["gem"][0], "output_per_mtok": PRICES["gem"][1]}, **common}
    vlm = {"base_url": service.openai.url + "/v1", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "key_env": "VLM_KEY",
           "price": {"input_per_mtok": PRICES["vlm"][0], "output_per_mtok": PRICES["vlm"][1]}, **common}
    path.write_text(f"task: polyp\ndataset:\n  name: folder\n  root: {json.dumps(str(root))}\n  options: {{split: test}}\n"
                    f"split: test\nmodels:\n  - name: gem\n    kind: gemini\n    options: {json.dumps(gem)}\n"
                    f"  - name: vlm\n    kind: openai\n    options: {json.dumps(vlm)}\n")
    return path


def _dataset(root: Path, n: int, duplicate: bool, odd_ids: bool, broken: bool, seed: int) -> list[str]:
    """n images with masks (ids case0..), plus a copy of the first under another id, ids with quotes, spaces and
    accents, and an image file that is no image; returns every sample id."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    ids = [f"case{i}" for i in range(n)] + (["it's #2 é"] if odd_ids else [])
    for sid in ids:
        m = blob_mask(40, 52, rng)
        Image.fromarray(lesion_image(m, rng)).save(root / "images" / f"{sid}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{sid}.png")
    if duplicate:  # the same pixels under another id: one answer, asked and paid once
        for sub in ("images", "masks"):
            (root / sub / "case0 copy.png").write_bytes((root / sub / "case0.png").read_bytes())
        ids.append("case0 copy")
    if broken:
        (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        (root / "masks" / "broken.png").write_bytes((root / "masks" / "case1.png").read_bytes())
        ids.append("broken")
    return ids


def _open_files() -> list[str]:
    """What this process's file descriptors point at (Linux: /proc/self/fd)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed since the listing
            continue
    return out


_FROZEN: list[bool] = []


def _collect_garbage() -> None:
    """A full collection, which scans every object of a process that has imported torch, pandas and two SDKs: 0.2 s a
    fork, a sixth of this test. After the first, what was alive then (the libraries' objects, all but never garbage)
    is frozen out of later scans; what those later collections must find, the cycles commands leave, is newer."""
    gc.collect()
    if not _FROZEN:
        gc.freeze()
        _FROZEN.append(True)


def _fork_killed(args: list[str], target: str, after: int) -> int:
    """`omniseg <args>` in a child forked from this process (no interpreter to start) that SIGKILLs itself right
    after the ``after``-th call of ``target`` returns; returns the child's wait status."""
    import importlib

    sys.stdout.flush()
    sys.stderr.flush()
    # A child must start with no SQLite connection of the parent's (SQLite's locks are per process: a connection
    # carried across fork() is no model of a separate `omniseg` process and let the killed child corrupt the
    # store). Unreachable ones (in reference cycles, e.g. an in-process command's traceback) are closed now; one
    # still open after that is a leak, named.
    _collect_garbage()
    leaked = sorted(t for t in _open_files() if ".sqlite" in t)
    assert not leaked, f"SQLite files still open in the test process before a kill: {leaked}"
    pid = os.fork()
    if pid == 0:  # the child: no test machinery from here on, and it never returns into pytest
        code = 0
        try:
            module, attr = target.split(":")
            owner_name, _, method = attr.rpartition(".")
            owner = importlib.import_module(module)
            owner = getattr(owner, owner_name) if owner_name else owner
            real = getattr(owner, method)
            calls = {"n": 0}

            def patched(*a, **kw):
                out = real(*a, **kw)
                calls["n"] += 1
                if calls["n"] == after:
                    os.kill(os.getpid(), signal.SIGKILL)
                return out

            setattr(owner, method, patched)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            app(args=args, prog_name="omniseg", standalone_mode=False)
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


class Sequences(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.service: Service | None = None

    @initialize(n=st.integers(3, 5), duplicate=st.booleans(), odd_ids=st.booleans(), broken=st.booleans(),
                seed=st.integers(0, 3))
    def world(self, n, duplicate, odd_ids, broken, seed):
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="omniseg-seq-"))
        self.ids = _dataset(self.dir / "data", n, duplicate, odd_ids, broken, seed)
        self.service = Service().__enter__()
        self.config = _config(self.dir / "c.yaml", self.dir / "data", self.service)
        self.store = self.dir / "runs" / "s.sqlite"
        self.asked: set[tuple[str, str]] = set()  # pairs of commands that finished: each has its row
        self.kills = 0
        self.commands: list[str] = []
        self.refreshed = False  # after --refresh an answer is booked once in each run that paid for it

    def teardown(self):
        if self.service is not None:
            self.service.__exit__(None, None, None)
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    # -- the commands ---------------------------------------------------------------------------
    def _omniseg(self, *args: str, ok: bool = True) -> str:
        self.commands.append(" ".join(args))
        r = CliRunner().invoke(app, list(args))
        if ok:
            assert r.exit_code == 0, (self.commands, r.output, repr(r.exception))
        return r.output

    def _run_args(self, models: str, *flags: str) -> list[str]:
        return ["run", "--config", str(self.config), "--store", str(self.store), "-q", "--models", models, *flags]

    def _pairs(self, models: str) -> set[tuple[str, str]]:
        return {(sid, m) for sid in self.ids for m in models.split(",")}

    @rule(models=st.sampled_from(["gem", "vlm", "gem,vlm"]),
          flag=st.sampled_from(["", "--refresh", "--force", "--retry-failed"]))
    def run_online(self, models, flag):
        self.refreshed |= flag == "--refresh"
        args = self._run_args(models, *([flag] if flag else []))
        self._omniseg(*args)
        self.asked |= self._pairs(models)
        if not flag:  # the same command again: everything is recorded, nothing is asked
            before = self.service.requests()
            self._omniseg(*args)
            assert self.service.requests() == before, (self.commands, "a rerun asked the servers again")

    @rule(flag=st.sampled_from(["", "--refresh", "--retry-failed"]), shuffle=st.booleans(), partial=st.booleans())
    def run_batch(self, flag, shuffle, partial):
        self.service.gemini.batch.shuffle, self.service.gemini.batch.partial = shuffle, partial
        self.refreshed |= flag == "--refresh"
        args = self._run_args("gem", "--batch", *([flag] if flag else []))
        self._omniseg(*args)
        self.asked |= self._pairs("gem")
        if not flag:
            before = self.service.requests()
            self._omniseg(*args)
            assert self.service.requests() == before, (self.commands, "a rerun of the batch run asked again")

    @precondition(lambda self: not self.asked)
    @rule(n=st.integers(2, 3))
    def shards_then_merge(self, n):
        stores = []
        for k in range(1, n + 1):
            shard = self.dir / f"shard{k}" / "s.sqlite"
            self._omniseg("run", "--config", str(self.config), "--store", str(shard), "-q", "--shard", f"{k}/{n}")
            if shard.is_file():
                stores.append(str(shard))
        self._omniseg("merge", *stores, "--into", str(self.store))
        self.asked |= self._pairs("gem,vlm")

    @precondition(lambda self: self.store.is_file())
    @rule()
    def redecode(self):
        before = self.service.requests()
        self._omniseg("redecode", "--store", str(self.store), "--all", "-q")
        assert self.service.requests() == before, "redecode asked the servers"

    @rule(models=st.sampled_from(["gem", "vlm", "gem,vlm"]), batch=st.booleans(), point=st.sampled_from(KILL_POINTS),
          after=st.integers(1, 4), online=st.booleans())
    def kill_then_resume(self, models, batch, point, after, online):
        """A run SIGKILLed right after the n-th call of a code point, then the same command again (what a user
        does), or the online run of the same models: in between, no answer is booked twice and no row is for a pair
        never asked for; after the resume, every promise holds (checked after the step)."""
        models = "gem" if batch else models
        args = self._run_args(models, *(["--batch"] if batch else []))
        self.commands.append("KILLED " + " ".join(args) + f" after {after} x {point}")
        status = _fork_killed(args, point, after)
        self.service.gemini.settle()
        self.service.openai.settle()
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            self.kills += 1
            if self.store.is_file():
                with sqlite3.connect(self.store) as db:
                    twice = {k: n for k, n in invariants.bookings(db, self.refreshed).items() if n > 1}
                    rows = set(invariants.pairs(db))
                assert not twice and rows <= self.asked | self._pairs(models), (self.commands, twice)
        else:  # the point was not reached that often: the command finished
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (self.commands, status)
        self._omniseg(*(self._run_args(models) if online else args))
        self.asked |= self._pairs(models)

    @rule(mode=st.sampled_from(SERVICE_MODES))
    def service_mode(self, mode):
        self.service.mode = mode

    # -- after every step -----------------------------------------------------------------------
    @invariant()
    def promises_hold(self):
        if self.service is None or not self.store.is_file():
            return
        got, booked, kept = invariants.booked_once(self.store, per_run=self.refreshed)
        assert set(got) == self.asked, (self.commands, sorted(self.asked - set(got))[:5],
                                        sorted(set(got) - self.asked)[:5])
        for key in (GEMINI_KEY, VLM_KEY):
            invariants.no_key(self.dir, key)
        invariants.no_scratch(self.store)
        if self.asked:
            by = "gem" if any(m == "gem" for _, m in self.asked) else "vlm"  # a model that has scores
            invariants.curate_and_report(self.store, out=self.dir / "report", html=False, by=by)
            for key in (GEMINI_KEY, VLM_KEY):
                invariants.no_key(self.dir / "report", key)
        with sqlite3.connect(self.store) as db:
            booked_usd = db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM api_calls WHERE outcome IN "
                                    "('answered', 'recovered', 'batch') AND cost_known = 1").fetchone()[0]
        served_usd = sum(c for _, c in self.service.served)
        lost = self.kills * IN_FLIGHT * max(1e-6 * (300 * i + 1020 * o) for i, o in PRICES.values())
        assert booked_usd <= served_usd + 1e-9 and served_usd - booked_usd <= lost + 1e-9, (
            self.commands, booked_usd, served_usd, self.kills)


from hypothesis import Phase  # noqa: E402

Sequences.TestCase.settings = settings(max_examples=SEQUENCES, stateful_step_count=STEPS, deadline=None,
                                       derandomize=os.environ.get("OMNISEG_RANDOM") != "1", database=None,
                                       report_multiple_bugs=False, print_blob=True,
                                       phases=[p for p in Phase if p is not Phase.shrink or
                                               os.environ.get("OMNISEG_SHRINK", "1") == "1"],
                                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("VLM_KEY", VLM_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


TestSequences = Sequences.TestCase
