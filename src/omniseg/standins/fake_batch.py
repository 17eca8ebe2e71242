"""The batch half of the fake Gemini API: batch jobs and the Files API.

Routes, in the wire format the google-genai SDK speaks (checked against google-genai 3.6 source):

- ``POST /{v}/models/{m}:batchGenerateContent`` with ``batch.inputConfig.requests.requests[{request,
  metadata}]`` (inline) or ``batch.inputConfig.fileName`` (an uploaded JSONL file of ``{key, request}``
  lines); answers an Operation ``{name: batches/ID, metadata: {@type, model, displayName, state,
  createTime, batchStats}}``.
- ``GET /{v}/batches/ID`` (the Operation, with ``metadata.output.inlinedResponses.inlinedResponses`` or
  ``metadata.output.responsesFile`` once it has ended), ``GET /{v}/batches`` (``operations``, paged),
  ``POST /{v}/batches/ID:cancel``, ``DELETE /{v}/batches/ID``.
- ``POST /upload/{v}/files`` (``X-Goog-Upload-Command: start``: answers ``x-goog-upload-url``), then
  chunks to that URL (``upload`` / ``upload, finalize`` with ``X-Goog-Upload-Offset``; answers
  ``x-goog-upload-status: active|final``, the last with ``{"file": {...}}``); written to disk.
- ``GET /{v}/files/ID:download?alt=media``: a results file, streamed from disk.

A job works through its requests on a thread, one after another, each answered by the server's
``behaviour`` exactly as ``generateContent`` would answer it (an error reply becomes that request's
``error``), taking at least ``request_s`` seconds each; ``queue_s`` keeps it PENDING first. A job
not finished ``expire_s`` seconds after its creation ends EXPIRED without output, as the live
service's 48-hour limit does; a cancelled one ends CANCELLED without output. ``jobs_created``
counts creations (kill tests assert exactly one).

It misbehaves the ways the service may: ``shuffle`` gives a job's results in another order than its
requests (each still carries its key or metadata, as the live results file does), ``partial`` ends a job
with failed requests PARTIALLY_SUCCEEDED (as Vertex AI's job states do) instead of SUCCEEDED, and
``fail_uploads`` drops the connection of the first n uploads (a Files API outage).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .fake_http import Reply

OP_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
ENDED = {"SUCCEEDED", "PARTIALLY_SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _err(code: int, status: str, message: str) -> Reply:
    return Reply(code, {"error": {"code": code, "status": status, "message": message}}, kind=f"http{code}")


@dataclass
class Job:
    id: str
    model: str
    version: str
    display_name: str
    source: str  # "inline" or the input file's name
    total: int
    created: float
    create_time: str
    inline: list[dict] | None = None  # inline requests [{request, metadata}]
    state: str = "PENDING"
    done: int = 0
    failed: int = 0
    results: list[dict] = field(default_factory=list)  # inline jobs' answers, in input order
    results_file: str | None = None
    cancel: bool = False

    def operation(self, with_output: bool = True) -> dict:
        meta: dict[str, Any] = {"@type": OP_TYPE, "model": f"models/{self.model}", "displayName": self.display_name,
                                "state": f"BATCH_STATE_{self.state}", "createTime": self.create_time,
                                "updateTime": _now(),
                                "batchStats": {"requestCount": str(self.total),
                                               "successfulRequestCount": str(self.done - self.failed),
                                               "failedRequestCount": str(self.failed),
                                               "pendingRequestCount": str(self.total - self.done)}}
        meta["inputConfig"] = {"fileName": self.source} if self.source != "inline" else {"requests": {}}
        if self.state in ENDED and with_output:
            if self.results_file:
                meta["output"] = {"responsesFile": self.results_file}
            elif self.state in ("SUCCEEDED", "PARTIALLY_SUCCEEDED"):
                meta["output"] = {"inlinedResponses": {"inlinedResponses": self.results}}
        return {"name": f"batches/{self.id}", "metadata": meta, **({"done": True} if self.state in ENDED else {})}


class FakeBatch:
    """Batch jobs, files and tokens of one :class:`~omniseg.standins.fake_gemini.FakeGemini`."""

    def __init__(self, server, request_s: float = 0.0, queue_s: float = 0.0, expire_s: float | None = None,
                 shuffle: bool = False, partial: bool = False, fail_uploads: int = 0):
        self.server = server
        self.request_s, self.queue_s, self.expire_s = request_s, queue_s, expire_s
        self.shuffle, self.partial, self.fail_uploads = shuffle, partial, fail_uploads
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, dict] = {}
        self.uploads: dict[str, dict] = {}
        self.jobs_created = 0
        self.dir = Path(tempfile.mkdtemp(prefix="fake-gemini-files-"))
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()  # wakes a job's worker from its per-request wait when the server stops

    def close(self) -> None:
        for job in self.jobs.values():
            job.cancel = True
        self._closing.set()
        for t in self._threads:
            t.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- routing --------------------------------------------------------------------------------
    def post(self, h: BaseHTTPRequestHandler) -> bool:
        """Answer a POST this half serves; False for the others (generateContent)."""
        path = urlsplit(h.path).path
        if path.startswith("/upload/"):
            return self._upload(h) or True
        if path.endswith(":batchGenerateContent"):
            return self._create(h) or True
        if "/batches/" in path and path.endswith(":cancel"):
            self._body(h)
            job = self._job(h, path.rsplit("/", 1)[1].split(":")[0])
            if job is not None:
                job.cancel = True
                if job.state not in ENDED:
                    job.state = "CANCELLING"
                self.server.send(h, Reply(200, {}, kind="batch_cancel"))
            return True
        return False

    def get(self, h: BaseHTTPRequestHandler) -> bool:
        url = urlsplit(h.path)
        parts = url.path.strip("/").split("/")
        if len(parts) >= 2 and parts[1] == "batches":
            if not self._authorized(h):
                return True
            if len(parts) == 2:
                return self._list(h, parse_qs(url.query)) or True
            job = self._job(h, parts[2])
            if job is not None:
                self.server.send(h, Reply(200, job.operation(), kind="batch_get"))
            return True
        if len(parts) == 3 and parts[1] == "files" and parts[2].endswith(":download"):
            return self._download(h, parts[2].removesuffix(":download")) or True
        return False

    def delete(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path).path.strip("/").split("/")
        if len(parts) == 3 and parts[1] == "batches" and self._job(h, parts[2]) is not None:
            with self._lock:
                self.jobs.pop(parts[2]).cancel = True
            return self.server.send(h, Reply(200, {}, kind="batch_delete"))
        if len(parts) != 3 or parts[1] != "batches":
            self.server.send(h, _err(404, "NOT_FOUND", f"no route {h.path}"))

    # -- pieces ---------------------------------------------------------------------------------
    @staticmethod
    def _body(h: BaseHTTPRequestHandler) -> bytes:
        return h.rfile.read(int(h.headers.get("Content-Length") or 0))

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        if h.headers.get("x-goog-api-key"):
            return True
        self.server.send(h, _err(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."))
        return False

    def _job(self, h: BaseHTTPRequestHandler, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None:
            self.server.send(h, _err(404, "NOT_FOUND", f"Batch batches/{job_id} not found."))
        return job

    def _upload(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        command = (h.headers.get("X-Goog-Upload-Command") or "").lower()
        body = self._body(h)
        if "start" in command:
            if not self._authorized(h):
                return
            if self.fail_uploads > 0:
                self.fail_uploads -= 1
                return self.server.send(h, Reply(drop=True, kind="upload_dropped"))
            uid = uuid.uuid4().hex[:12]
            meta = json.loads(body or b"{}").get("file") or {}
            path = self.dir / f"upload-{uid}"
            path.touch()
            self.uploads[uid] = {"path": path, "size": int(h.headers.get("X-Goog-Upload-Header-Content-Length") or 0),
                                 "meta": meta, "received": 0}
            upload_url = f"{self.server.url}{url.path}?upload_id={uid}&upload_protocol=resumable"
            return self.server.send(h, Reply(200, {}, kind="upload_start", headers={
                "x-goog-upload-url": upload_url, "x-goog-upload-status": "active"}))
        uid = (parse_qs(url.query).get("upload_id") or [""])[0]
        up = self.uploads.get(uid)
        if up is None:
            return self.server.send(h, _err(404, "NOT_FOUND", "no such upload"))
        offset = int(h.headers.get("X-Goog-Upload-Offset") or 0)
        if offset != up["received"]:
            return self.server.send(h, _err(400, "INVALID_ARGUMENT", f"offset {offset}, expected {up['received']}"))
        with open(up["path"], "ab") as f:
            f.write(body)
        up["received"] += len(body)
        if "finalize" not in command:
            return self.server.send(h, Reply(200, {}, kind="upload_chunk", headers={"x-goog-upload-status": "active"}))
        fid = f"upload-{uid}"
        self.files[fid] = {"path": up["path"], "mimeType": up["meta"].get("mimeType") or "application/jsonl",
                           "displayName": up["meta"].get("displayName"), "size": up["received"]}
        file = {"name": f"files/{fid}", "displayName": self.files[fid]["displayName"],
                "mimeType": self.files[fid]["mimeType"], "sizeBytes": str(up["received"]), "createTime": _now(),
                "state": "ACTIVE", "source": "UPLOADED", "uri": f"{self.server.url}/v1beta/files/{fid}"}
        self.server.send(h, Reply(200, {"file": file}, kind="upload_final", headers={"x-goog-upload-status": "final"}))

    def _create(self, h: BaseHTTPRequestHandler) -> None:
        body = self._body(h)
        if not self._authorized(h):
            return
        parts = urlsplit(h.path).path.strip("/").split("/")
        version, model = parts[0], parts[-1].split(":")[0]
        try:
            batch = json.loads(body)["batch"]
            cfg = batch["inputConfig"]
        except (ValueError, KeyError, TypeError):
            return self.server.send(h, _err(400, "INVALID_ARGUMENT", "batch.inputConfig is required"))
        inline = (cfg.get("requests") or {}).get("requests")
        source = "inline"
        if inline is None:
            fid = str(cfg.get("fileName", "")).removeprefix("files/")
            if fid not in self.files:
                return self.server.send(h, _err(400, "INVALID_ARGUMENT", f"file {cfg.get('fileName')!r} not found"))
            source = f"files/{fid}"
            with open(self.files[fid]["path"], "rb") as f:
                total = sum(1 for line in f if line.strip())
        else:
            total = len(inline)
        with self._lock:
            self.jobs_created += 1
            job = Job(id=uuid.uuid4().hex[:16], model=model, version=version, display_name=batch.get("displayName", ""),
                      source=source, total=total, created=time.monotonic(), create_time=_now(), inline=inline)
            self.jobs[job.id] = job
        t = threading.Thread(target=self._work, args=(job,), daemon=True, name=f"fake-batch-{job.id}")
        self._threads.append(t)
        t.start()
        self.server.send(h, Reply(200, job.operation(), kind="batch_create"))

    def _list(self, h: BaseHTTPRequestHandler, query: dict) -> None:
        size = int((query.get("pageSize") or ["50"])[0])
        start = int((query.get("pageToken") or ["0"])[0])
        jobs = list(self.jobs.values())
        body: dict[str, Any] = {"operations": [j.operation(with_output=False) for j in jobs[start:start + size]]}
        if start + size < len(jobs):
            body["nextPageToken"] = str(start + size)
        self.server.send(h, Reply(200, body, kind="batch_list"))

    def _download(self, h: BaseHTTPRequestHandler, fid: str) -> None:
        if not self._authorized(h):
            return
        f = self.files.get(fid)
        if f is None or not fid.startswith("results-"):
            return self.server.send(h, _err(404 if f is None else 400, "NOT_FOUND" if f is None else "FAILED_PRECONDITION",
                                            f"file {fid} cannot be downloaded"))
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(f["path"].stat().st_size))
        h.end_headers()
        with open(f["path"], "rb") as src:
            shutil.copyfileobj(src, h.wfile, 1 << 20)

    # -- a job at work --------------------------------------------------------------------------
    def _requests(self, job: Job):
        if job.inline is not None:
            for item in job.inline:
                yield item.get("metadata"), None, item.get("request") or {}
            return
        with open(self.files[job.source.removeprefix("files/")]["path"], encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    yield None, d.get("key"), d.get("request") or {}

    def _work(self, job: Job) -> None:
        while time.monotonic() - job.created < self.queue_s and not job.cancel:
            time.sleep(0.01)
        items = []
        for metadata, key, request in self._requests(job):
            if job.cancel or self._expired(job):
                break
            job.state = "RUNNING"
            t0 = time.monotonic()
            answer = self._answer(job, request)
            items.append({**({"metadata": metadata} if metadata is not None else {}), **({"key": key} if key else {}),
                          **answer})
            job.failed += "error" in answer
            job.done += 1
            self._closing.wait(max(0.0, self.request_s - (time.monotonic() - t0)))
        if self.shuffle:  # the order is the service's, not the input's: answers are paired by key or metadata
            import random

            random.Random(job.id).shuffle(items)
        if job.cancel:
            job.state = "CANCELLED"
        elif job.done < job.total:
            job.state = "EXPIRED"
        else:
            if job.inline is None:
                fid = f"results-{job.id}"
                with open(self.dir / fid, "w", encoding="utf-8") as out:
                    out.writelines(json.dumps(item) + "\n" for item in items)
                self.files[fid] = {"path": self.dir / fid, "mimeType": "application/jsonl", "displayName": fid,
                                   "size": (self.dir / fid).stat().st_size}
                job.results_file = f"files/{fid}"
            else:
                job.results = items
            job.state = "PARTIALLY_SUCCEEDED" if self.partial and job.failed else "SUCCEEDED"

    def _expired(self, job: Job) -> bool:
        return self.expire_s is not None and time.monotonic() - job.created > self.expire_s

    def _answer(self, job: Job, request: dict) -> dict:
        """What ``generateContent`` would have answered, as a job's ``response`` or ``error``."""
        from .fake_http import ParseError

        srv = self.server
        try:
            req, image_bytes = srv.request_from_body(job.model, job.version, request, api_key="batch")
        except ParseError as e:
            return {"error": e.reply.body.get("error") if isinstance(e.reply.body, dict) else {"code": e.reply.status}}
        started = time.monotonic()
        reply = srv.answer(req, image_bytes)
        srv.record(req, reply, started, via="batch", job=job.id)
        body = reply.body
        if reply.raw is not None:
            try:
                body = json.loads(reply.raw)
            except (ValueError, RecursionError):
                body = {"raw": reply.raw.decode(errors="replace")}
        if reply.status != 200 or reply.drop:
            err = (body.get("error") if isinstance(body, dict) else None) or {"code": reply.status,
                                                                              "message": "the request failed"}
            err = err if isinstance(err, dict) else {"code": reply.status, "message": str(err)}
            return {"error": {k: err[k] for k in ("code", "message", "status") if k in err}}
        return {"response": body}
