"""`omniseg merge`: the stores of a sharded run (`omniseg run --shard K/N`) combined into one.

Every pair ends once in the target: a pair the target already holds is left as it is, with its bookings,
so merging again (or merging a shard that was killed and rerun) adds nothing twice. A pair's API calls travel
with it, so each answer is booked once. Models must carry the same signature in every store (stores made
with other settings are refused, naming the model), and a sample the same split. Runs keep their identity
(task, start time, host, process), so a run merged twice is one run. Mask files are copied beside the target,
and the answer archives are united (an answer is kept once, by its key). Curated subsets are not merged:
curation ranks the whole set, so `omniseg curate` runs again on the merged store.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OmnisegError
from .database import Store
from . import results
from . import runs
from .schema import FILL_COLUMNS, META_COLUMNS, SIGNATURE_COLUMNS

ARCHIVE = "answers.sqlite"


@dataclass
class Merged:
    pairs_added: int = 0
    pairs_present: int = 0  # already in the target (a second merge, or the same pair from two stores)
    runs_added: int = 0
    calls_added: int = 0
    files_copied: int = 0
    answers_added: int = 0
    notes: list[str] = field(default_factory=list)


def _rows(src: Store, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    return src.db.execute(sql, params).fetchall()


def merge(sources: list[Path], into: Path) -> Merged:
    """Merge each source store (read only) into ``into`` (created when missing), one transaction per source."""
    into = Path(into)
    out = Merged()
    for path in sources:
        if Path(path).resolve() == into.resolve():
            raise OmnisegError(f"{path} is the target store itself; name the shard stores and --into another")
    seen: dict[tuple[str, str], tuple[str, Path]] = {}
    splits: dict[tuple[str, str], tuple[str, Path]] = {}
    settings: dict[str, tuple[dict, Path]] = {}
    for path in sources:  # every source against the others first: a refused merge writes nothing
        with Store(path, readonly=True) as src:
            for r in _rows(src, "SELECT task, model, signature_hash FROM models"):
                _agree(seen, (r["task"], r["model"]), r["signature_hash"], path, lambda had, where: (
                    f"{path}: model {r['model']!r} of task {r['task']!r} was made with other settings than in {where} "
                    f"(signature {r['signature_hash']} against {had}); merge only the shards of one configuration"))
            for r in _rows(src, "SELECT task, sample_id, split FROM samples"):
                _agree(splits, (r["task"], r["sample_id"]), r["split"], path, lambda had, where: (
                    f"{path}: sample {r['sample_id']!r} of task {r['task']!r} is in split {r['split']!r} there and "
                    f"{had!r} in {where}; these stores saw different splits"))
            _same_dataset(src, settings)
    if into.is_file():
        with Store(into, readonly=True) as dst:
            _same_dataset(dst, settings)
    with Store(into) as dst:
        for path in sources:
            with Store(path, readonly=True) as src:
                _check(src, dst)
        for path in sources:
            with Store(path, readonly=True) as src:
                _merge_one(src, dst, out)
            _merge_archive(Path(path).with_name(ARCHIVE), into.with_name(ARCHIVE), out)
        if out.pairs_added and dst.db.execute("SELECT COUNT(*) FROM subsets").fetchone()[0]:
            out.notes.append("the target's curated subsets predate the pairs just added: run `omniseg curate` again")
        if out.pairs_added:
            for (task,) in dst.db.execute("SELECT DISTINCT task FROM review_items ORDER BY task"):
                out.notes.append(f"task {task!r}: the review items predate the pairs just added: run `omniseg review "
                                 f"--task {task} --rebuild` (with the options they were built with) before more answers "
                                 "are given; claim 4 is otherwise tested on part of the data")
    return out


def _agree(seen: dict, key: tuple, value, path: Path, says) -> None:
    """Note ``value`` for ``key`` as ``path`` has it (the first store seen stands), or refuse the merge with
    ``says(value seen, store seen in)`` when another store had another value."""
    had, where = seen.setdefault(key, (value, Path(path)))
    if had != value:
        raise OmnisegError(says(had, where))


#: keys of a run's recorded dataset configuration that may differ between shards (the data's place on each machine)
PLACE = ("root",)


def _same_dataset(store: Store, settings: dict[str, tuple[dict, Path]]) -> None:
    """Refuse a store whose runs read a task's dataset with other settings (a mask threshold, options, the pixel
    limit) than a store seen before: their scores would not be of the same references."""
    import json

    for r in _rows(store, "SELECT task, config FROM runs ORDER BY run_id"):
        try:
            ds = json.loads(r["config"]).get("dataset") or {}
        except (ValueError, AttributeError):
            continue  # a run row without a readable configuration says nothing about the dataset
        mine = {k: v for k, v in ds.items() if k not in PLACE}
        had, where = settings.setdefault(r["task"], (mine, store.path))
        if had != mine:
            keys = sorted(k for k in set(had) | set(mine) if had.get(k) != mine.get(k))
            diff = "; ".join(f"dataset.{k}: {json.dumps(mine.get(k))} there, {json.dumps(had.get(k))} in {where}"
                             for k in keys)
            raise OmnisegError(f"{store.path}: task {r['task']!r} was run with other dataset settings ({diff}); merge "
                               "only the shards of one configuration")


def _check(src: Store, dst: Store) -> None:
    """Refuse a source made with other settings before anything is written."""
    for r in _rows(src, "SELECT task, model, signature_hash FROM models"):
        have = runs.model_signature(dst, r["task"], r["model"])
        if have is not None and have != r["signature_hash"]:
            raise OmnisegError(f"{src.path}: model {r['model']!r} of task {r['task']!r} was made with other settings than "
                               f"in {dst.path} (signature {r['signature_hash']} against {have}); merge only the "
                               "shards of one configuration")
    for r in _rows(src, "SELECT task, sample_id, split FROM samples"):
        row = dst.db.execute("SELECT split FROM samples WHERE task = ? AND sample_id = ?",
                             (r["task"], r["sample_id"])).fetchone()
        if row is not None and row[0] != r["split"]:
            raise OmnisegError(f"{src.path}: sample {r['sample_id']!r} of task {r['task']!r} is in split {r['split']!r} "
                               f"there and {row[0]!r} in {dst.path}; these stores saw different splits")


def _merge_one(src: Store, dst: Store, out: Merged) -> None:
    run_cols = [c for c in src.columns("runs") if c != "run_id"]
    pred_cols = src.columns("predictions")
    call_cols = [c for c in src.columns("api_calls") if c != "call_id"]
    score_cols = results.score_columns(src)
    for c in (c for c in score_cols if c not in results.score_columns(dst)):  # a metric only the source recorded
        dst.db.execute(f"ALTER TABLE scores ADD COLUMN {c} REAL")
    copies: list[tuple[Path, Path]] = []
    with dst.transaction():
        model_cols = [c for c in src.columns("models") if c in dst.columns("models")]
        for r in _rows(src, "SELECT * FROM models"):
            dst.db.execute(f"INSERT OR IGNORE INTO models ({', '.join(model_cols)}) VALUES "
                           f"({','.join('?' * len(model_cols))})", tuple(r[c] for c in model_cols))
        dst.db.executemany("INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?)",
                           [tuple(r) for r in _rows(src, "SELECT * FROM samples")])
        dst.db.executemany("INSERT OR IGNORE INTO difficulty VALUES (?,?,?,?)",
                           [tuple(r) for r in _rows(src, "SELECT * FROM difficulty")])
        runs: dict[int, int] = {}
        for r in _rows(src, "SELECT * FROM runs ORDER BY run_id"):
            same = dst.db.execute("SELECT run_id FROM runs WHERE task = ? AND started_at = ? AND host IS ? AND pid IS ?",
                                  (r["task"], r["started_at"], r["host"], r["pid"])).fetchone()
            if same is not None:
                runs[r["run_id"]] = same[0]
                if r["status"] != "running":  # merged while it ran: it has ended since, and says how
                    dst.db.execute("UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ? AND "
                                   "status = 'running'", (r["status"], r["finished_at"], r["summary"], same[0]))
                continue
            cur = dst.db.execute(f"INSERT INTO runs ({', '.join(run_cols)}) VALUES ({','.join('?' * len(run_cols))})",
                                 tuple(r[c] for c in run_cols))
            runs[r["run_id"]] = cur.lastrowid
            out.runs_added += 1
        for r in _rows(src, "SELECT * FROM predictions ORDER BY task, model, sample_id"):
            key = (r["task"], r["sample_id"], r["model"])
            if dst.db.execute("SELECT 1 FROM predictions WHERE task = ? AND sample_id = ? AND model = ?", key).fetchone():
                out.pairs_present += 1
                continue
            row = dict(r)
            row["run_id"] = runs[r["run_id"]]
            dst.db.execute(f"INSERT INTO predictions ({', '.join(pred_cols)}) VALUES ({','.join('?' * len(pred_cols))})",
                           tuple(row[c] for c in pred_cols))
            score = src.db.execute(f"SELECT {', '.join(score_cols)} FROM scores WHERE task = ? AND sample_id = ? "
                                   "AND model = ?", key).fetchone()
            if score is not None:
                dst.db.execute(f"INSERT INTO scores (task, sample_id, model, {', '.join(score_cols)}) VALUES "
                               f"(?,?,?,{','.join('?' * len(score_cols))})", (*key, *tuple(score)))
            for c in _rows(src, f"SELECT {', '.join(call_cols)} FROM api_calls WHERE task = ? AND sample_id = ? "
                                "AND model = ? ORDER BY call_id", key):
                call = dict(c)
                call["run_id"] = runs.get(c["run_id"], row["run_id"])
                dst.db.execute(f"INSERT INTO api_calls ({', '.join(call_cols)}) VALUES ({','.join('?' * len(call_cols))})",
                               tuple(call[k] for k in call_cols))
                out.calls_added += 1
            for rel in (r["mask_path"], r["prob_path"]):
                if rel:
                    copies.append((src.root / rel, dst.root / rel))
            out.pairs_added += 1
        for r in _rows(src, "SELECT * FROM batch_jobs"):
            dst.db.execute("INSERT OR IGNORE INTO batch_jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", tuple(r))
        dst.db.executemany("INSERT OR IGNORE INTO batch_requests VALUES (?,?,?,?,?)",
                           [tuple(r) for r in _rows(src, "SELECT * FROM batch_requests")])
        if not set(META_COLUMNS) <= set(pred_cols) or not set(SIGNATURE_COLUMNS) <= set(model_cols):
            for statement in FILL_COLUMNS:  # a source from before schema 6: its rows hold those fields in JSON only
                dst.db.execute(statement)
        # the files before the commit: a merge that fails on a full disk leaves no row pointing at nothing
        for a, b in copies:
            if not a.is_file():
                raise OmnisegError(f"{src.path}: the mask file {a} of a recorded pair is missing; that store is "
                                   "incomplete (rerun its shard with --force for the pairs concerned)")
            if not b.is_file():
                b.parent.mkdir(parents=True, exist_ok=True)
                tmp = b.with_name(b.name + ".merge.tmp")
                shutil.copyfile(a, tmp)
                tmp.replace(b)
                out.files_copied += 1


def _merge_archive(src: Path, dst: Path, out: Merged) -> None:
    """Every answer of the source's archive into the target's (kept once, by key; blobs by their sha256)."""
    if not src.is_file() or src.resolve() == dst.resolve():
        return
    from .archive import AnswerArchive
    from .sqlite import readonly_uri

    AnswerArchive(dst).close()  # creates it with its tables when missing
    db = sqlite3.connect(dst.resolve().as_uri(), uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("ATTACH DATABASE ? AS src", (readonly_uri(src),))  # the shard's archive is only read
        db.execute("BEGIN IMMEDIATE")
        before = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        db.execute("INSERT OR IGNORE INTO blobs SELECT * FROM src.blobs")
        db.execute("INSERT OR IGNORE INTO answers SELECT * FROM src.answers")
        out.answers_added += db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] - before
        db.execute("COMMIT")
        db.execute("DETACH DATABASE src")
    except sqlite3.Error as e:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise OmnisegError(f"cannot merge the answer archive {src} into {dst}: {e}") from None
    finally:
        db.close()
