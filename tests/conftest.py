"""Generated fixtures: small datasets in each real layout, written to tmp_path (nothing committed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

# With pytest-xdist each worker has a core of its own: math libraries' thread pools sized to every core would
# put several spinning threads on each (measured on the 2-core machine: the whole suite 8:46 instead of 9:26, 8%
# less CPU). Set before numpy and torch are imported, and inherited by the commands tests start; a test or
# config that names its threads still gets them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pytest
from PIL import Image

from hypothesis import HealthCheck, settings

# Property-based tests: reproducible (derandomized, no example database on disk) and without wall-clock
# deadlines (a busy 2-core machine must not fail them).
settings.register_profile("omniseg", derandomize=True, database=None, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("omniseg")

REPO = Path(__file__).resolve().parents[1]


def _typer_shape(app) -> tuple:
    """What a Typer app's click command is built from: its callback, commands and groups, by identity."""
    return (id(app), id(getattr(app.registered_callback, "callback", None)),
            tuple((id(c.callback), c.name) for c in app.registered_commands),
            tuple((g.name, _typer_shape(g.typer_instance)) for g in app.registered_groups))


def _cache_typer_commands() -> None:
    """Typer builds the click command tree from every command's signature on each ``CliRunner.invoke``: a sixth
    of the command-sequence test's time, and work a real ``omniseg`` process does once. Tests invoke the tree
    built once for the same app (a new command or group makes a new tree)."""
    import typer.main
    import typer.testing

    built: dict = {}
    build = typer.main.get_command

    def get_command(app):
        shape = _typer_shape(app)
        if shape not in built:
            built[shape] = build(app)
        return built[shape]

    typer.testing._get_command = get_command


_cache_typer_commands()

SHARED_DATA = REPO.parent / "shared" / "data"
KVASIR_REAL = SHARED_DATA / "kvasir-seg" / "Kvasir-SEG"
BUSI_REAL = SHARED_DATA / "busi" / "Dataset_BUSI_with_GT"


def pytest_collection_modifyitems(config, items):
    """Under mutmut, the fastest tests first: its fork server hands a mutant's tests over in no set order,
    and with -x the mutant then dies by its quickest killer instead of whichever came first (durations from
    mutmut's own stats; its stats, clean and forced-fail runs keep the usual order)."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    stats = Path("mutmut-stats.json")  # mutmut runs the tests inside mutants/
    if "__mutmut_" not in mutant or not stats.is_file():
        return
    durations = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))


def blob_mask(h: int, w: int, rng: np.random.Generator, empty: bool = False) -> np.ndarray:
    """A random ellipse (or nothing) as a boolean mask."""
    if empty:
        return np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.1, 0.25) * h, rng.uniform(0.1, 0.25) * w
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def lesion_image(mask: np.ndarray, rng: np.random.Generator, bright: bool = True) -> np.ndarray:
    """An RGB picture in which the masked region is brighter (or darker), with noise."""
    base = np.where(mask, 190 if bright else 50, 110).astype(np.float32)
    img = base[..., None] + rng.normal(0, 12, mask.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_kvasir(root: Path, n: int = 6, size: tuple[int, int] = (64, 80), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        m = blob_mask(*size, rng)
        sid = f"case{i:03d}"
        Image.fromarray(lesion_image(m, rng)).save(root / "images" / f"{sid}.jpg", quality=95)
        Image.fromarray((m * 255).astype(np.uint8)).convert("RGB").save(root / "masks" / f"{sid}.jpg", quality=95)
    return root


def make_busi(root: Path, per_class: int = 3, size: tuple[int, int] = (60, 70), seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("benign", "malignant", "normal"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(1, per_class + 1):
            sid = f"{cls} ({i})"
            m = blob_mask(*size, rng, empty=cls == "normal")
            Image.fromarray(lesion_image(m, rng, bright=False)).save(root / cls / f"{sid}.png")
            Image.fromarray((m * 255).astype(np.uint8)).save(root / cls / f"{sid}_mask.png")
        if cls == "benign":  # a multifocal case: a second lesion in _mask_1.png
            m2 = np.zeros(size, bool)
            m2[2:8, 2:8] = True
            Image.fromarray((m2 * 255).astype(np.uint8)).save(root / cls / "benign (1)_mask_1.png")
    return root


def vessel_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), bool)
    for _ in range(6):
        y = int(rng.integers(5, h - 5))
        m[y : y + 2, 5 : w - 5] = True
        x = int(rng.integers(5, w - 5))
        m[5 : h - 5, x : x + 2] = True
    return m


def make_drive(root: Path, n_train: int = 2, n_test: int = 2, size: tuple[int, int] = (58, 56), seed: int = 2) -> Path:
    """DRIVE's layout: TIFF images, GIF vessel masks, GIF field-of-view masks, 2nd_manual on test."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    fov = ((yy - h / 2) / (h / 2 - 1)) ** 2 + ((xx - w / 2) / (w / 2 - 1)) ** 2 <= 1

    def gif(path: Path, m: np.ndarray) -> None:
        Image.fromarray((m * 255).astype(np.uint8)).save(path, format="GIF")

    for folder, ids in (("training", range(21, 21 + n_train)), ("test", range(1, 1 + n_test))):
        suffix = "training" if folder == "training" else "test"
        for sub in ("images", "1st_manual", "mask") + (("2nd_manual",) if folder == "test" else ()):
            (root / folder / sub).mkdir(parents=True, exist_ok=True)
        for k in ids:
            nn = f"{k:02d}"
            v = vessel_mask(h, w, rng) & fov
            img = np.stack([np.full((h, w), 120), np.where(v, 60, 160), np.full((h, w), 40)], -1).astype(np.uint8)
            img[~fov] = 0
            Image.fromarray(img).save(root / folder / "images" / f"{nn}_{suffix}.tif", format="TIFF")
            gif(root / folder / "1st_manual" / f"{nn}_manual1.gif", v)
            gif(root / folder / "mask" / f"{nn}_{suffix}_mask.gif", fov)
            if folder == "test":
                gif(root / folder / "2nd_manual" / f"{nn}_manual2.gif", np.roll(v, 1, axis=0) & fov)
    return root


def write_config(path: Path, task: str, dataset: str, root: Path, models: str, extra: str = "") -> Path:
    path.write_text(
        f"task: {task}\ndataset:\n  name: {dataset}\n  root: {root}\nsplit: all\nmodels:\n{models}{extra}"
    )
    return path


OTSU = "  - name: otsu\n    kind: otsu\n    options: {foreground: bright, sigma: 1.0}\n"


@pytest.fixture(autouse=True)
def _pinned_day(monkeypatch):
    """Every test runs on the fake services' day, never the wall clock's (omniseg.clock)."""
    from omniseg.standins.gemini_answers import TODAY

    monkeypatch.setenv("OMNISEG_TODAY", TODAY)
    return TODAY


@pytest.fixture(autouse=True)
def _registries_as_they_were():
    """Each test starts and ends with the built-in registries: an extension a test loads registers its dataset,
    kind or metric into the process, and a later test in the same worker (pytest-xdist) would otherwise score
    with that metric too, while the subprocesses it starts do not (their rows then lack the column)."""
    from omniseg import datasets, models, plugins
    from omniseg.scoring import metrics

    registries = (datasets.REGISTRY, models.REGISTRY, metrics.REGISTRY)
    saved = [(dict(r._entries), dict(r._origins)) for r in registries]
    paths = dict(plugins._loaded_paths)
    yield
    for r, (entries, origins) in zip(registries, saved):
        r._entries.clear()
        r._entries.update(entries)
        r._origins.clear()
        r._origins.update(origins)
    plugins._loaded_paths.clear()
    plugins._loaded_paths.update(paths)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``rep_call``), so that a fixture's teardown knows how the test went."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def pytest_configure(config):
    config.addinivalue_line("markers", "breaks_promise(why): the test breaks one of tests/invariants.py's promises on "
                                       "purpose (a full disk, a read-only store); its teardown does not check them")


@pytest.fixture(autouse=True)
def _promises_hold_after_every_fake_server_test(request, monkeypatch):
    """Issue 42: a test that started a fake server ends with the promises of tests/invariants.py holding on every
    store it left under its tmp_path: each kept answer booked once, no key a client sent (or a key variable holds)
    in any file beside the store or in its report, no batch scratch file, curate and report succeed. A test that
    breaks one on purpose says so with ``@pytest.mark.breaks_promise("why")``."""
    from omniseg.standins.fake_http import FakeServer

    seen = {"servers": 0, "keys": set()}
    enter, answer = FakeServer.__enter__, FakeServer.answer

    def counted(self):
        seen["servers"] += 1
        return enter(self)

    def keyed(self, req, image_bytes):
        if isinstance(req.api_key, str) and len(req.api_key) >= 16:  # a key, not a word (the demo's "stand-in")
            seen["keys"].add(req.api_key)
        return answer(self, req, image_bytes)

    monkeypatch.setattr(FakeServer, "__enter__", counted)
    monkeypatch.setattr(FakeServer, "answer", keyed)
    yield
    call = getattr(request.node, "rep_call", None)
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if not seen["servers"] or tmp is None or call is None or not call.passed \
            or request.node.get_closest_marker("breaks_promise"):
        return
    import invariants

    keys = seen["keys"] | {os.environ[v] for v in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "VLM_KEY")
                           if len(os.environ.get(v) or "") >= 16}
    stores = [p for p in sorted(Path(tmp).rglob("*.sqlite")) if _is_store(p)]
    for folder in {p.parent for p in stores}:  # stores side by side share one answer archive
        invariants.booked_once_together([p for p in stores if p.parent == folder])
    for store in stores:
        invariants.no_scratch(store)
        for key in keys:
            invariants.no_key(store.parent, key)
        if _has_scores(store):
            out = store.parent / "teardown-report"
            invariants.curate_and_report(store, out=out, html=False)
            for key in keys:
                invariants.no_key(out, key)


def _is_store(path: Path) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'predictions'").fetchone() is not None
    except sqlite3.Error:
        return False


def _has_scores(path: Path) -> bool:
    """A store with two scored pairs of one model (curate needs an easiest and a hardest case)."""
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT 1 FROM scores GROUP BY task, model HAVING COUNT(*) >= 2 LIMIT 1").fetchone() is not None


@pytest.fixture
def kvasir(tmp_path: Path) -> Path:
    return make_kvasir(tmp_path / "Kvasir-SEG")


@pytest.fixture
def polyp_config(tmp_path: Path, kvasir: Path) -> Path:
    return write_config(tmp_path / "polyp.yaml", "polyp", "kvasir-seg", kvasir, OTSU)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "omniseg.sqlite"


# -- API models against the fake Gemini server --------------------------------------------------
API_KEY = "omniseg-test-key-not-real-0123456789abcd"  # shaped like no real key
DOCUMENTED = ('Give the segmentation masks for {target}. Output a JSON list of segmentation masks where each entry '
              'contains the 2D bounding box in the key "box_2d", the segmentation mask in key "mask", and the text '
              'label in the key "label".')


@pytest.fixture
def api_key(monkeypatch):
    """A fake key in GEMINI_API_KEY, no GOOGLE_API_KEY, and loopback outside any proxy."""
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return API_KEY


def gemini_yaml(tmp_path: Path, root: Path, url: str, split: str = "all", name: str = "gem", **options) -> Path:
    """A polyp config with one gemini model ``name`` pointed at ``url``."""
    import json

    opts = {"base_url": url, "target": "polyp", "backoff_s": 0.01, "max_in_flight": 8, "max_side": 256, **options}
    models_yaml = f"  - name: {name}\n    kind: gemini\n    options: {json.dumps(opts)}\n"
    path = write_config(tmp_path / f"{name}.yaml", "polyp", "kvasir-seg", root, models_yaml)
    path.write_text(path.read_text().replace("split: all", f"split: {split}"))
    return path


OPENAI_KEY = "omniseg-openai-test-key-not-real-4242"


def openai_yaml(tmp_path: Path, root: Path, url: str, split: str = "all", name: str = "vlm", **options) -> Path:
    """A polyp config with one openai-kind model ``name`` pointed at ``url`` (key in VLM_KEY)."""
    import json

    opts = {"base_url": url + "/v1", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "key_env": "VLM_KEY", "target": "polyp",
            "backoff_s": 0.01, "max_in_flight": 8, "max_side": 256, **options}
    path = write_config(tmp_path / f"{name}.yaml", "polyp", "kvasir-seg", root,
                        f"  - name: {name}\n    kind: openai\n    options: {json.dumps(opts)}\n")
    path.write_text(path.read_text().replace("split: all", f"split: {split}"))
    return path


def sent_png_sha(cfg, name: str) -> dict[str, str]:
    """sha256 of the PNG each sample is sent as (what the fake servers log as image_sha) -> sample id."""
    import hashlib

    from omniseg import models
    from omniseg.models.api.types import png_bytes
    from omniseg.inference.runner import open_dataset

    seg = models.build(cfg.model(name))
    ds = open_dataset(cfg)
    out = {}
    for ref in ds.refs(cfg.split):
        s = ds.load(ref)
        out[hashlib.sha256(png_bytes(seg.request(s, seg.prompt())[0])).hexdigest()] = s.id
    return out


def api_rows(st, model: str = "gem"):
    """Prediction rows of one model with their Dice and parsed meta."""
    import json

    df = st.query("SELECT p.sample_id, p.status, p.reason, p.meta, c.dice FROM predictions p LEFT JOIN scores c"
                  " USING (task, sample_id, model) WHERE p.model = ? ORDER BY sample_id", (model,))
    df["meta"] = df["meta"].map(json.loads)
    return df


# -- faults injected at a code point (never after a sleep) ------------------------------------------
_FAULT_AT_CALLS = """
import importlib, json, os, signal, sys, time
fault = json.loads(os.environ["OMNISEG_TEST_FAULT"])
module, _, qualname = fault["target"].partition(":")
owner = importlib.import_module(module)
*path, attr = qualname.split(".")
for p in path:
    owner = getattr(owner, p)
real = getattr(owner, attr)
lock = __import__("threading").Lock()
calls = {"n": 0}
def act(args):
    action = fault["action"]
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "pause":  # say so, then wait for the test to let it go on
        open(fault["file"] + ".reached", "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(fault["file"] + ".go") and time.monotonic() < deadline:
            time.sleep(0.01)
    elif action == "sql":  # e.g. PRAGMA max_page_count: the database is full from here on, as on a full disk
        db = args[0].db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(fault["sql"].format(pages=pages, more=pages + fault.get("more", 0)))
def patched(*a, **kw):
    with lock:  # calls from several threads (the archive's writers) are counted one by one
        calls["n"] += 1
        n = calls["n"]
    if fault.get("before") and n == fault["after"]:
        act(a)
    out = real(*a, **kw)
    if not fault.get("before") and n == fault["after"]:
        act(a)
    return out
setattr(owner, attr, patched)
if fault["action"] == "sigint":  # as at a terminal: a shell starts background jobs with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
from omniseg.cli import app
sys.argv = ["omniseg"] + sys.argv[1:]
app()
"""


def fault_env(target: str, after: int, action: str = "kill", **more) -> dict:
    import json
    import os

    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "OMNISEG_TEST_FAULT": json.dumps({"target": target, "after": after, "action": action, **more})}


def omniseg_with_fault(args: list, target: str, after: int, action: str = "kill", timeout: float = 300, **more):
    """`omniseg <args>` in a process of its own (started warm: tests/warm_start.py) with a fault right after the ``after``-th call of ``target``
    ("module:Class.method") returns (``before=True``: just before it runs). ``action``: kill (SIGKILL), sigint
    (Ctrl-C), pause (touch FILE.reached, wait for FILE.go; use :func:`start_with_fault`), sql (run ``sql`` on
    ``args[0].db``, ``{pages}`` its page count). The fault is injected from the test: the product has no hook."""
    import warm_start

    return warm_start.run(_FAULT_AT_CALLS, args, fault_env(target, after, action, **more), timeout)


def start_with_fault(args: list, target: str, after: int, action: str = "pause", **more):
    """The same in the background (a Popen): for pauses, to do something while the process waits there."""
    import warm_start

    return warm_start.start(_FAULT_AT_CALLS, args, fault_env(target, after, action, **more))


def wait_for_file(path: Path, proc=None, timeout: float = 120) -> None:
    """Until ``path`` exists (a paused process reached its point); fails if the process ended first."""
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before reaching its pause: "
                                 f"{proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def run_killed_after_calls(args: list[str], target: str, calls: int, timeout: float = 300):
    """`omniseg <args>` in a subprocess that SIGKILLs itself right after the ``calls``-th call of ``target``."""
    return omniseg_with_fault(args, target, calls, "kill", timeout)


def run_killed_after_writes(args: list[str], writes: int, timeout: float = 300):
    """`omniseg <args>` killed right after its ``writes``-th pair is recorded (between two writes of one chunk)."""
    return run_killed_after_calls(args, "omniseg.store.results:record", writes, timeout)


def answers_asked_again(log: list[dict]) -> tuple[dict[str, float], list[float]]:
    """From a fake server's log: the first good answer's end time per image, and the end times of the
    first answers of images that were answered well again."""
    first_ok: dict[str, float] = {}
    repeated = []
    for e in log:
        if e["kind"] == "ok":
            if e["image_sha"] in first_ok:
                repeated.append(first_ok[e["image_sha"]])
            first_ok.setdefault(e["image_sha"], e["end"])
    return first_ok, repeated


# -- the browser the HTML pages are checked in (report.html, the review page) ----------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def why_no_browser() -> str | None:
    import importlib.util

    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    if not CHROMIUM or not CHROMEDRIVER:
        return "Debian's chromium and chromium-driver are not installed (.ci/run installs them where apt-get can)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium (Debian's chromium + chromedriver, driven by selenium), one per test module."""
    why = why_no_browser()
    if why:
        print(f"\nSKIP browser check: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1000",
              "--allow-file-access-from-files"):
        opts.add_argument(a)
    # Chromium leaves its scoped folders in TMPDIR: give it one pytest removes
    scratch = tmp_path_factory.mktemp("chromium")
    opts.add_argument(f"--user-data-dir={scratch / 'profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": str(scratch)}), options=opts)
    yield driver
    driver.quit()


@pytest.fixture
def sent_polyps(tmp_path, monkeypatch):
    """12 generated Kvasir-SEG cases for an `openai` entry named vlm (key in VLM_KEY): (root, {id: mask},
    {sha of the PNG sent: id}), so a fake server can answer each image by its own reference."""
    from omniseg import config, datasets

    monkeypatch.setenv("VLM_KEY", OPENAI_KEY)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = make_kvasir(tmp_path / "k", n=12)
    ds = datasets.open("kvasir-seg", root)
    masks = {r.id: ds.load(r).mask for r in ds.refs("all")}
    shas = sent_png_sha(config.load(openai_yaml(tmp_path, root, "http://127.0.0.1:9", mode="box")), "vlm")
    return root, masks, shas


# -- volumes: NIfTI files with a known, anisotropic spacing -------------------------------------------------------
def write_nifti(path: Path, data: np.ndarray, spacing=(3.0, 0.8, 0.7), origin=(0.0, 0.0, 0.0)) -> Path:
    """``data`` in (depth, height, width) written as NIfTI (nibabel's x, y, z = width, height, depth) with ``spacing``
    in mm along (depth, height, width)."""
    import nibabel as nib

    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = origin
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine), str(path))
    return path


def ct_volume(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume in Hounsfield units (air, soft tissue, a bright lesion) and its lesion's label (0/1): an
    ellipsoid over a few slices, so some slices have no foreground."""
    d, h, w = shape
    z, y, x = np.ogrid[:d, :h, :w]
    cz, cy, cx = rng.uniform(0.35, 0.65) * d, rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    body = ((y - h / 2) / (0.45 * h)) ** 2 + ((x - w / 2) / (0.45 * w)) ** 2 <= 1
    lesion = (((z - cz) / max(d * 0.25, 1)) ** 2 + ((y - cy) / (0.18 * h)) ** 2 + ((x - cx) / (0.2 * w)) ** 2) <= 1
    hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 15, shape)
    hu[lesion & body] = 180.0 + rng.normal(0, 15, int((lesion & body).sum()))
    return hu.astype(np.int16), (lesion & body).astype(np.uint8)


def make_volumes(root: Path, n: int = 4, shape=(8, 24, 20), spacing=(3.0, 0.8, 0.7), layout: str = "nifti",
                 seed: int = 3) -> Path:
    """``n`` CT-like volumes with their labels: the `nifti` layout (images/, labels/) or nnU-Net's raw one
    (dataset.json, imagesTr/{case}_0000.nii.gz, labelsTr/{case}.nii.gz)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, label = ct_volume(shape, rng)
        case = f"case_{i:03d}"
        if layout == "nnunet":
            write_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image, spacing)
            write_nifti(root / "labelsTr" / f"{case}.nii.gz", label, spacing)
        else:
            write_nifti(root / "images" / f"{case}.nii.gz", image, spacing)
            write_nifti(root / "labels" / f"{case}.nii.gz", label, spacing)
    if layout == "nnunet":
        (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1},
                                                       "numTraining": n, "file_ending": ".nii.gz"}))
    return root
