"""`omniseg run --batch`: the pairs still to do go to the API as batch jobs, at half the price.

A job is recorded in the store (table ``batch_jobs``, with its requests in ``batch_requests``)
*before* it is created, under a display name derived from its requests, so a process killed at any
instant never submits the same work twice: the next ``run --batch`` or ``batch wait`` finds the
recorded job (by name, or, when the create request's answer never arrived, by display name among
the API's jobs), polls it, and puts its answers into the answer archive with their batch booking.
From there the ordinary run writes each pair's row exactly as for online answers (archive ->
decoder -> score -> row, once per pair): an answer is booked once, at the batch price, by the row
that first uses it. A request the job answered with an error becomes a row with status
``api_error`` (``--retry-failed`` sends it again); a request a job left unanswered (cancelled,
expired, failed job) leaves its pair to do, and the run says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..datasets.base import SampleRef
from ..errors import OmnisegError, SampleError
from ..models.api.provider import BatchProvider, JobStatus
from ..models.api.types import png_bytes
from ..redaction import redact
from ..progress import bar as progress_bar
from ..store.database import Store
from ..store.jobs import JobBook

SCRATCH = "batch"  # folder beside the store for job input files while they are written and uploaded


@dataclass
class Settled:
    """What the batch stage leaves for the ordinary run of one model."""

    failures: dict[str, tuple[str, str]] = field(default_factory=dict)  # cache key -> (status, reason)
    notes: list[str] = field(default_factory=list)  # for the user: jobs that ended without every answer


def supports(m) -> bool:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    return isinstance(getattr(m, "provider", None), BatchProvider)


def settle(task: str, store: Store, ds, m, refs: list[SampleRef], *, submit: bool = True,
           retry: tuple[str, ...] = (), max_cost: float | None = None, progress: bool = True) -> Settled:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Finish the model's open jobs, then submit (and finish) one for the pairs ``refs`` still need."""
    book, out = JobBook(store), Settled()
    _clear_scratch(store, m.name, book)
    for row in book.open(task, m.name):
        _finish(book, m, row, out, progress)
    if submit:
        failed = book.failures(task, m.name)
        redo_failed = "api_error" in retry
        row = _submit(book, task, store, ds, m, refs, skip={k for k in failed if not redo_failed},
                      max_cost=max_cost, progress=progress)
        if row is not None:
            _finish(book, m, row, out, progress)
    out.failures = book.failures(task, m.name)
    return out


def tidy(task: str, store: Store, m, progress: bool = True) -> list[str]:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Before an online run of a model that can send batch jobs: remove the input file a killed batch run left in
    the scratch folder, and collect the jobs it left open (waiting for them if they still run): their answers are
    paid for, and asking online for the same pairs would pay twice. Returns notes for the user."""
    book, out = JobBook(store), Settled()
    _clear_scratch(store, m.name, book)
    rows = book.open(task, m.name)
    for row in rows:
        _finish(book, m, row, out, progress)
    said = [f"{m.name}: {len(rows)} open batch job(s) of an earlier run collected first, so that their answers are "
            "not paid for again online (`omniseg batch cancel` drops a job instead)"] if rows else []
    return said + out.notes


def _submit(book: JobBook, task: str, store: Store, ds, m, refs: list[SampleRef], *, skip: set[str],
            max_cost: float | None, progress: bool) -> dict | None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Write the job's input (a JSONL file, streamed), record the job, then create it. None: nothing to ask."""
    o = m.options
    if getattr(o, "vertexai", False):
        raise OmnisegError(f"model {m.name!r}: batch jobs on Vertex AI read and write Cloud Storage, which omniseg does "
                           "not manage; run it online (without --batch) or with an API key (docs/omnimodels.md)")
    scratch = store.root / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f"{m.name}-{time.time_ns()}.jsonl"
    try:
        return _submit_from(tmp, book, task, store, ds, m, refs, skip=skip, max_cost=max_cost, progress=progress)
    finally:
        tmp.unlink(missing_ok=True)  # every image, base64: never left behind, whatever happened


def _submit_from(tmp: Path, book: JobBook, task: str, store: Store, ds, m, refs: list[SampleRef], *, skip: set[str],
                 max_cost: float | None, progress: bool) -> dict | None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    o = m.options
    inline: list | None = []  # kept in memory only while the job still fits the inline limit
    seen: dict[str, str] = {}  # cache key -> sample id (a duplicate image is asked once)
    size, worst = 0, 0.0
    prompt = m.prompt()
    with open(tmp, "w", encoding="utf-8") as f:
        for ref in progress_bar(refs, desc=f"batch input {m.name}", unit="img", disable=not progress):
            try:
                sample = ds.load(ref)
            except SampleError:
                continue  # the ordinary run records it as sample_error
            pixels, gen, key = m.request(sample, prompt)
            if key in seen or key in skip or (not m.context.refresh and m.archive.get(key) is not None):
                continue
            inline_item, line = m.provider.batch_request(key, png_bytes(pixels), prompt, gen)
            seen[key] = ref.id
            line = json.dumps(line)
            f.write(line + "\n")
            size += len(line) + 1
            worst += m.provider.worst_cost((pixels.shape[1], pixels.shape[0]), prompt) * o.price.batch_factor
            if inline is not None:
                inline.append(inline_item)
                if size > o.batch_inline_mb * 1e6 or o.batch_input == "file":
                    inline = None
    if not seen:
        tmp.unlink()
        return None
    if max_cost is not None and worst > max_cost:
        tmp.unlink()
        raise OmnisegError(f"model {m.name!r}: a batch job for {len(seen)} requests could cost up to {worst:.4f} USD,"
                           f" more than --max-cost {max_cost:.4f}; raise the budget or pass --limit")
    if o.batch_input == "inline" and inline is None:
        tmp.unlink()
        raise OmnisegError(f"model {m.name!r}: batch_input is 'inline' but the job is {size / 1e6:.1f} MB, over the "
                           f"{o.batch_inline_mb} MB inline limit; use batch_input: auto or file")
    keys = sorted(seen)
    base = hashlib.sha256(json.dumps([task, m.name, m.signature_hash(), keys]).encode()).hexdigest()[:16]
    job_key = f"{base}-{book.jobs_like(base) + 1}"  # a resubmission of the same requests is a new job
    display = f"omniseg-{job_key}"
    book.add(job_key, task, m.name, display, "inline" if inline is not None else "file", list(seen.items()))
    jobs = _jobs(m)
    if inline is not None:
        name = _api(m, "create the batch job", jobs.create_inline, inline, display)
    else:
        file_name = _api(m, "upload the batch job's input file", jobs.upload, tmp, display)
        book.update(job_key, input_file=file_name)
        name = _api(m, "create the batch job", jobs.create_from_file, file_name, display)
    book.update(job_key, name=name, state="PENDING")
    return next(r for r in book.open(task, m.name) if r["job_key"] == job_key)


def _jobs(m):
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """The model's batch jobs, through its provider's client."""
    return m.provider.jobs(m.scheduler.client())


def _api(m, what: str, fn, *args):
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """A call of the batch API; a failure is one message (the job is found again, or resubmitted, by the next run)."""
    try:
        return fn(*args)
    except OmnisegError:
        raise
    except Exception as e:
        fail = m.provider.failure(e)
        raise OmnisegError(f"model {m.name!r}: cannot {what}: {fail.text}; rerun `omniseg run --batch` to try again "
                           "(a job the API did create is found again by name, never submitted twice)") from None


def _clear_scratch(store: Store, model: str, book: JobBook) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Input and results files a killed process left for this model: this process is now its one worker
    (store.workers.claim), so no other is writing them."""
    scratch = store.root / SCRATCH
    if not scratch.is_dir():
        return
    mine = re.compile(re.escape(model) + r"-\d+\.jsonl")
    keys = {r["job_key"] for r in book.all() if r["model"] == model}
    for f in scratch.iterdir():
        if mine.fullmatch(f.name) or (f.name.endswith(".results.jsonl") and f.name[:-len(".results.jsonl")] in keys):
            f.unlink(missing_ok=True)


def _finish(book: JobBook, m, row: dict, out: Settled, progress: bool) -> None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Find, wait for and collect one recorded job."""
    jobs = _jobs(m)
    if not row["name"]:  # recorded, but the create request's answer never came back
        name = jobs.find(row["display_name"])
        if name is None:
            book.update(row["job_key"], state="ABANDONED", message="never created (the process stopped first)")
            return
        book.update(row["job_key"], name=name, state="PENDING")
        row["name"] = name
    status = wait(book, m, row, progress)
    if status is None:
        return
    collect(book, m, row, status, out)


def wait(book: JobBook, m, row: dict, progress: bool) -> JobStatus | None:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Poll a job until it ends, showing its state, done/total and time since it was created."""
    jobs = _jobs(m)
    bar = progress_bar(total=row["requests"], desc=f"batch {m.name} {row['name']}", unit="req", disable=not progress)
    errors = 0
    try:
        while True:
            try:
                status = jobs.status(row["name"])
            except Exception as e:  # a poll that fails is tried again; a job the API no longer has is lost
                fail = m.provider.failure(e)
                if fail.code == 404:
                    book.update(row["job_key"], state="LOST", message=fail.text[:300])
                    return None
                errors += 1
                if errors > 20:
                    raise OmnisegError(f"cannot poll batch job {row['name']}: {fail.text}; `omniseg batch wait` "
                                       "tries again later") from None
                time.sleep(min(m.options.batch_poll_s * errors, 300))
                continue
            errors = 0
            if status.state != row["state"]:
                book.update(row["job_key"], state=status.state)
                row["state"] = status.state
            if status.done is not None:
                bar.n = status.done
            bar.set_postfix(state=status.state, elapsed=f"{time.time() - row['created_at']:.0f}s", refresh=False)
            bar.refresh()
            if status.ended:
                return status
            time.sleep(m.options.batch_poll_s)
    finally:
        bar.close()


def collect(book: JobBook, m, row: dict, status: JobStatus, out: Settled) -> None:
    """Every answer of an ended job into the archive (with its batch booking); errors into the store."""
    keys = book.keys(row["job_key"])
    asked = set(keys)
    outcomes: list[tuple[str, str | None, str]] = []
    scratch = book.store.root / SCRATCH / f"{row['job_key']}.results.jsonl"
    for key, raw, error in _jobs(m).results(status, keys, scratch):
        if key not in asked:
            continue
        if raw is not None:
            m.archive.keep_batch(key, raw, row["name"], m.options.price.batch_factor)
            outcomes.append(("answered", None, key))
        else:
            text = " ".join(str(error.get(k)) for k in ("code", "status", "message") if error.get(k) is not None)
            outcomes.append(("api_error", redact(f"batch job {row['name']}: {text}")[:500], key))
    book.set_outcomes(row["job_key"], outcomes)
    missing = len(asked) - len({k for _, _, k in outcomes})
    if missing:
        out.notes.append(f"batch job {row['name']} of {m.name} ended {status.state}: {missing} of {len(asked)} "
                         "requests have no answer, their pairs are left to do; rerun `omniseg run --batch` to submit "
                         "them again")


def cancel(store: Store, m, task: str, name: str | None = None) -> list[str]:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """Cancel the model's open jobs (or the one named); the next wait collects what they finished."""
    book, done = JobBook(store), []
    for row in book.open(task, m.name):
        if row["name"] and (name is None or row["name"] == name):
            _api(m, f"cancel batch job {row['name']}", _jobs(m).cancel, row["name"])
            book.update(row["job_key"], state="CANCELLING")
            done.append(row["name"])
    return done


def scratch_dir(store: Store) -> Path:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    return store.root / SCRATCH
