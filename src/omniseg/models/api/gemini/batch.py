"""Gemini batch jobs through the google-genai SDK: building a job's input, its state, its results.

A job takes the same requests as ``generateContent`` at half the price, answered within 24 hours.
Small jobs go inline (one create request under the 20 MB limit); larger ones as a JSONL file
written line by line and uploaded in chunks through the Files API, and their results come back as a
JSONL file streamed to disk: a job's size never has to fit in memory. This module only speaks to
the API; which pairs go into a job, where its name is kept and how its answers become rows is
:mod:`omniseg.inference.batch`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Iterator

from ..provider import JobStatus

INLINE_LIMIT_MB = 20.0  # the API's limit on an inline job's create request


def state_name(state: Any) -> str:
    """``BATCH_STATE_RUNNING``, ``JOB_STATE_RUNNING`` or an SDK enum: ``RUNNING``."""
    text = str(getattr(state, "value", state) or "UNSPECIFIED")
    for prefix in ("BATCH_STATE_", "JOB_STATE_"):
        text = text.removeprefix(prefix)
    return text


def rest_request(png: bytes, prompt: str, generation: dict) -> dict:
    # pragma: no mutate block (outside the mutation scope: docs/testing.md)
    """One ``generateContent`` request body in the REST wire format (a line of a JSONL input file)."""
    return {"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}, {"text": prompt}]}],
        "generationConfig": generation}


class GeminiJobs:
    """The batch half of the Gemini API for one model, on a google-genai client."""

    def __init__(self, client, model: str):
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.client = client
        self.model = model

    def create_inline(self, requests: list[tuple[str, bytes, str, Any]], display_name: str) -> str:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Create a job from ``(key, png, prompt, config)`` requests sent in the create request; its name."""
        from google.genai import types

        src = [types.InlinedRequest(
            contents=[types.Content(role="user", parts=[types.Part.from_bytes(data=png, mime_type="image/png"),
                                                        types.Part.from_text(text=prompt)])],
            config=config, metadata={"key": key}) for key, png, prompt, config in requests]
        job = self.client.batches.create(model=self.model, src=src,
                                         config=types.CreateBatchJobConfig(display_name=display_name))
        return job.name

    def upload(self, path: Path, display_name: str) -> str:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Upload a JSONL input file (the SDK sends it in chunks); the file's name."""
        f = self.client.files.upload(file=path, config={"display_name": display_name, "mime_type": "jsonl"})
        return f.name

    def create_from_file(self, file_name: str, display_name: str) -> str:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        from google.genai import types

        job = self.client.batches.create(model=self.model, src=file_name,
                                         config=types.CreateBatchJobConfig(display_name=display_name))
        return job.name

    def find(self, display_name: str) -> str | None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """The name of the job created under ``display_name``, if the API has one (a create whose
        answer never arrived: the process was killed while it was in flight)."""
        for job in self.client.batches.list(config={"page_size": 100}):
            if job.display_name == display_name:
                return job.name
        return None

    def status(self, name: str) -> JobStatus:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        """Poll a job. Read from the raw body: the SDK drops ``batchStats`` (done/total), which the
        progress display needs, and the raw answers are what the archive keeps."""
        resp = self.client._api_client.request("get", name, {}, None)  # the SDK's transport: auth, base URL, version
        d = json.loads(resp.body or "{}")
        meta = d.get("metadata") or {}
        stats = meta.get("batchStats") or {}
        total = _int(stats.get("requestCount"))
        pending = _int(stats.get("pendingRequestCount"))
        done = (_int(stats.get("successfulRequestCount")) or 0) + (_int(stats.get("failedRequestCount")) or 0)
        if pending is not None and total is not None:
            done = total - pending
        out = meta.get("output") or d.get("response") or {}
        inline = (out.get("inlinedResponses") or {}).get("inlinedResponses") or []
        return JobStatus(name=d.get("name", name), state=state_name(meta.get("state")), total=total,
                         done=done if stats else None, inline=inline, file=out.get("responsesFile"))

    def cancel(self, name: str) -> None:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        self.client.batches.cancel(name=name)

    def list(self, limit: int = 100) -> list[dict]:
        # pragma: no mutate block (outside the mutation scope: docs/testing.md)
        out = []
        for job in self.client.batches.list(config={"page_size": min(limit, 100)}):
            out.append({"name": job.name, "display_name": job.display_name, "state": state_name(job.state),
                        "model": job.model, "created": str(job.create_time or "")})
            if len(out) >= limit:
                break
        return out

    def results(self, status: JobStatus, keys: list[str], scratch: Path) -> Iterator[tuple[str, str | None, dict | None]]:
        """``(key, raw answer JSON, None)`` or ``(key, None, error)`` per request answered.

        Inline answers carry the key in their metadata (else their position gives it); a results file
        is streamed to ``scratch`` and read a line at a time."""
        if status.file:
            scratch.parent.mkdir(parents=True, exist_ok=True)
            self.client.files.download(file=status.file, destination=str(scratch))
            try:
                with open(scratch, encoding="utf-8") as f:
                    for line in f:
                        if line.strip():
                            yield _result(json.loads(line), None)
            finally:
                scratch.unlink(missing_ok=True)
            return
        for i, item in enumerate(status.inline):
            yield _result(item, keys[i] if i < len(keys) else None)


def _result(item: dict, fallback_key: str | None) -> tuple[str, str | None, dict | None]:
    key = item.get("key") or (item.get("metadata") or {}).get("key") or fallback_key
    if item.get("error") is not None or item.get("response") is None:
        return key, None, item.get("error") or {"message": "the job returned neither an answer nor an error"}
    return key, json.dumps(item["response"]), None


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
