"""omniseg.models.api.gemini.batch and omniseg.inference.batch's pairing: each answer of a job goes to the request it answers.

Fast checks of the pieces the batch tests (tests/inference/test_batch.py, against the fake server) exercise end to end:
job states, results read by key whatever their order, errors kept with their request, a job's outcomes in the
store, and the later job's outcome winning.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from omniseg.inference.batch import Settled, collect
from omniseg.store.jobs import JobBook
from omniseg.models.api.gemini import batch as gb
from omniseg.models.api.provider import JobStatus
from omniseg.store.database import Store


@pytest.mark.parametrize("raw, name", [("BATCH_STATE_RUNNING", "RUNNING"), ("JOB_STATE_SUCCEEDED", "SUCCEEDED"),
                                       ("PARTIALLY_SUCCEEDED", "PARTIALLY_SUCCEEDED"), (None, "UNSPECIFIED"),
                                       ("", "UNSPECIFIED")])
def test_state_names_and_which_states_end_a_job(raw, name):
    assert gb.state_name(raw) == name
    assert JobStatus("batches/x", name).ended == (name in {"SUCCEEDED", "PARTIALLY_SUCCEEDED", "FAILED", "CANCELLED",
                                                               "EXPIRED"})


def test_an_enum_state_is_read_by_its_value():
    from google.genai import types

    assert gb.state_name(types.JobState.JOB_STATE_FAILED) == "FAILED"


def _answer(i: int) -> dict:
    return {"candidates": [{"content": {"parts": [{"text": f"answer {i}"}]}}], "responseId": f"r{i}"}


def test_results_are_paired_by_key_whatever_their_order():
    """Inline results carry their request's key in the metadata: shuffled, each still goes to its key; an error
    stays with its request; without any key the position gives it."""
    keys = [f"k{i}" for i in range(8)]
    items = [{"metadata": {"key": k}, "response": _answer(i)} if i != 3 else
             {"metadata": {"key": k}, "error": {"code": 500, "message": "internal"}} for i, k in enumerate(keys)]
    random.Random(1).shuffle(items)
    jobs = gb.GeminiJobs(client=None, model="m")
    got = list(jobs.results(JobStatus("batches/j", "SUCCEEDED", inline=items), keys, scratch=None))
    assert sorted(k for k, _, _ in got) == keys
    for key, raw, error in got:
        i = int(key[1:])
        if i == 3:
            assert raw is None and error == {"code": 500, "message": "internal"}
        else:
            assert json.loads(raw)["responseId"] == f"r{i}" and error is None
    by_position = [{"response": _answer(i)} for i in range(3)]
    got = list(jobs.results(JobStatus("batches/j", "SUCCEEDED", inline=by_position), keys[:3], scratch=None))
    assert [(k, json.loads(r)["responseId"]) for k, r, _ in got] == [("k0", "r0"), ("k1", "r1"), ("k2", "r2")]


def test_a_results_line_without_answer_or_error_is_an_error():
    assert gb._result({"key": "a", "response": _answer(1)}, None)[0] == "a"
    assert gb._result({"metadata": {"key": "b"}, "response": _answer(1)}, "fallback")[0] == "b"
    key, raw, error = gb._result({"key": "c"}, None)
    assert (key, raw) == ("c", None) and "neither an answer nor an error" in error["message"]
    assert gb._result({"error": {"code": 400}}, "d") == ("d", None, {"code": 400})
    assert gb._int("12") == 12 and gb._int(None) is None and gb._int("x") is None


class _Model:
    """What collect() needs of a model besides the batch API: its provider's jobs, its client, its options' batch
    price, and the archive keeping an answer (recorded here)."""

    name = "gem"

    def __init__(self, inline):
        from types import SimpleNamespace

        self.kept, self._inline = {}, inline
        self.provider = SimpleNamespace(jobs=lambda client: gb.GeminiJobs(client=client, model="m"))
        self.scheduler = SimpleNamespace(client=lambda: None)
        self.options = SimpleNamespace(price=SimpleNamespace(batch_factor=0.5))
        self.archive = SimpleNamespace(keep_batch=lambda key, raw, job, factor: self.kept.__setitem__(key, (raw, job)))


def _book(tmp_path, keys):
    store = Store(tmp_path / "s.sqlite")
    book = JobBook(store)
    book.add("job1", "t", "gem", "omniseg-job1", "inline", [(k, f"s{k}") for k in keys])
    book.update("job1", name="batches/1", state="RUNNING")
    return store, book


def test_collect_keeps_each_answer_under_its_key_and_counts_the_unanswered(tmp_path):
    keys = [f"k{i}" for i in range(6)]
    store, book = _book(tmp_path, keys)
    items = [{"metadata": {"key": k}, "response": _answer(i)} for i, k in enumerate(keys[:4])]
    items.append({"metadata": {"key": "k4"}, "error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}})
    items.append({"metadata": {"key": "not-asked"}, "response": _answer(9)})  # never asked: ignored
    random.Random(2).shuffle(items)
    m, out = _Model(items), Settled()
    row = book.open("t", "gem")[0]
    collect(book, m, row, JobStatus("batches/1", "PARTIALLY_SUCCEEDED", inline=items), out)
    assert sorted(m.kept) == keys[:4]
    assert all(json.loads(raw)["responseId"] == f"r{k[1:]}" and job == "batches/1" for k, (raw, job) in m.kept.items())
    outcomes = dict(store.db.execute("SELECT cache_key, status FROM batch_requests").fetchall())
    assert outcomes == {"k0": "answered", "k1": "answered", "k2": "answered", "k3": "answered", "k4": "api_error",
                        "k5": None}
    error = store.db.execute("SELECT error FROM batch_requests WHERE cache_key = 'k4'").fetchone()[0]
    assert error == "batch job batches/1: 429 RESOURCE_EXHAUSTED quota"
    assert out.notes == ["batch job batches/1 of gem ended PARTIALLY_SUCCEEDED: 1 of 6 requests have no answer, "
                         "their pairs are left to do; rerun `omniseg run --batch` to submit them again"]
    assert book.open("t", "gem") == []  # collected
    assert book.failures("t", "gem") == {"k4": ("api_error", "batch job batches/1: 429 RESOURCE_EXHAUSTED quota")}


def test_a_later_jobs_outcome_replaces_an_earlier_one(tmp_path):
    store, book = _book(tmp_path, ["a", "b", "c"])
    book.set_outcomes("job1", [("api_error", "boom", "a"), ("api_error", "boom", "b"), ("answered", None, "c")])
    assert book.failures("t", "gem") == {"a": ("api_error", "boom"), "b": ("api_error", "boom")}
    book.add("job2", "t", "gem", "omniseg-job2", "inline", [("a", "sa"), ("b", "sb")])
    store.db.execute("UPDATE batch_jobs SET created_at = created_at + 1 WHERE job_key = 'job2'")
    book.set_outcomes("job2", [("answered", None, "a"), ("api_error", "again", "b")])
    assert book.failures("t", "gem") == {"b": ("api_error", "again")}
    assert book.failures("t", "other") == {}
    assert book.keys("job2") == ["a", "b"] and book.jobs_like("job") == 2
    listed = {r["job_key"]: r for r in book.all("t")}
    assert (listed["job1"]["answered"], listed["job1"]["failed"]) == (1, 2)


def test_an_extra_unkeyed_result_or_an_error_beside_a_response_is_never_an_answer(tmp_path):
    """A job that returns more inline results than it was sent (the extra without a key) pairs the extra with
    no request, which collect ignores; an item carrying an error is an error even with a response beside it;
    a huge error text is kept to 500 characters."""
    keys = ["k0", "k1"]
    items = [{"response": _answer(0)}, {"response": _answer(1), "error": {"code": 500, "message": "half done"}},
             {"response": _answer(2)}]
    got = list(gb.GeminiJobs(client=None, model="m").results(JobStatus("batches/j", "SUCCEEDED", inline=items),
                                                              keys, scratch=None))
    assert [(k, r is None) for k, r, _ in got] == [("k0", False), ("k1", True), (None, False)]
    assert got[1][2] == {"code": 500, "message": "half done"}
    store, book = _book(tmp_path, keys)
    items[1]["error"]["message"] = "x" * 10_000
    m, out = _Model(items), Settled()
    collect(book, m, book.open("t", "gem")[0], JobStatus("batches/1", "SUCCEEDED", inline=items), out)
    assert sorted(m.kept) == ["k0"]
    (status, error), = book.failures("t", "gem").values()
    assert status == "api_error" and len(error) == 500 and error.startswith("batch job batches/1: 500 xxx")


class _FilesOnly:
    """What collect() reaches of the google-genai client for a file job: ``files.download(file=, destination=)``."""

    def __init__(self, lines):
        self.files, self.lines, self.downloaded = self, lines, []

    def download(self, file, destination):
        self.downloaded.append((file, destination))
        with open(destination, "w", encoding="utf-8") as f:
            f.write("\n".join(json.dumps(x) for x in self.lines) + "\n\n")


def test_a_file_jobs_results_are_streamed_to_the_stores_scratch_folder_and_removed(tmp_path):
    keys = ["k0", "k1", "k2"]
    store, book = _book(tmp_path, keys)
    client = _FilesOnly([{"key": "k2", "response": _answer(2)}, {"key": "k0", "response": _answer(0)},
                         {"key": "k1", "error": {"code": 429, "message": "quota"}}])
    m, out = _Model([]), Settled()
    m.scheduler.client = lambda: client
    collect(book, m, book.open("t", "gem")[0], JobStatus("batches/1", "SUCCEEDED", file="files/out"), out)
    (name, dest), = client.downloaded
    assert name == "files/out" and dest.startswith(str(store.root)) and dest.endswith("job1.results.jsonl")
    assert not os.path.exists(dest)  # streamed, read, removed
    assert sorted(m.kept) == ["k0", "k2"] and json.loads(m.kept["k2"][0])["responseId"] == "r2"
    assert book.failures("t", "gem") == {"k1": ("api_error", "batch job batches/1: 429 quota")}


def test_a_results_file_goes_to_a_folder_made_as_needed_and_read_again_in_it(tmp_path):
    client = _FilesOnly([{"key": "k0", "response": _answer(0)}])
    jobs = gb.GeminiJobs(client=client, model="m")
    scratch = tmp_path / "not" / "yet" / "there" / "job.results.jsonl"
    for _ in range(2):  # the second time the folder exists
        got = list(jobs.results(JobStatus("batches/1", "SUCCEEDED", file="files/out"), ["k0"], scratch))
        assert [k for k, _, _ in got] == ["k0"] and not scratch.exists()
