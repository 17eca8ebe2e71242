"""The segmenter every remote omnimodel is: a :class:`~omniseg.models.api.provider.Provider` (the wire format and
the prices), its requests sent by a :class:`~omniseg.models.api.scheduler.Scheduler` (concurrency, rate, retries,
budget), every answer kept by the answer archive around it (:class:`~omniseg.models.api.cached.CachedProvider`)
before it is decoded, so a rerun or ``omniseg redecode`` never pays for it again, and answers read into masks by
:func:`omniseg.models.api.forms.from_body`. Every text that could carry the API key passes through
:func:`~omniseg.redaction.redact`.

A provider module defines its :class:`Provider` and a kind that names it (``Api``), its options and its prompts.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, ClassVar

from ...datasets.base import Sample
from ...errors import OmnisegError
from . import forms
from .cached import CachedProvider, cache_key, from_archive
from .provider import Provider
from .scheduler import Ask, Scheduler
from .types import RemoteOptions, pixels_digest, sent_pixels
from ..base import Prediction, RunContext, Segmenter


class RemoteSegmenter(Segmenter):
    """An API-backed model: its provider (``Api``), scheduler and answer archive, seen as a segmenter."""

    Options = RemoteOptions
    #: the provider this kind speaks through
    Api: ClassVar[type[Provider]]
    role = "omnimodel"
    default_prompts: ClassVar[dict[str, str]] = {}
    unhashed = ("decoder_version",)  # rows record it; `omniseg redecode` updates them
    # how and where it is called does not change the answer
    inert = ("max_in_flight", "rpm", "max_retries", "backoff_s", "backoff_max_s", "timeout_s", "price", "cache",
             "base_url", "batch", "batch_poll_s", "batch_input", "batch_inline_mb", "vertexai", "project", "location",
             "max_retry_wait_s", "max_answer_mb")
    works_in_submit = True  # submit() sends the requests; collect() waits for their answers

    def __init__(self, name: str, options: RemoteOptions | None = None):
        super().__init__(name, options)
        self.provider = self.Api(name, self.options)
        self.scheduler = Scheduler(name, self.provider)
        self.preferred_batch = max(16, 2 * self.options.max_in_flight)  # the runner keeps one chunk submitted ahead
        self._cached: CachedProvider | None = None

    def template(self) -> str:
        o = self.options
        return o.prompts.get(o.prompt) or self.default_prompts[o.mode]

    def prompt(self) -> str:
        return self.template().format(target=self.options.target)

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["prompt_text"] = self.template()
        sig["decoder_version"] = forms.DECODER_VERSION
        return sig

    @property
    def archive(self) -> CachedProvider | None:
        """The provider's answers through the answer archive the run opens (the ``cache`` option's file, else the
        one beside the store); None when only looking (--dry-run) and there is none."""
        if self._cached is None:
            path, ctx = self.options.cache or self.context.archive_path, self.context
            if ctx.open_archive is None or path is None:
                raise OmnisegError(f"model {self.name!r} is not bound to a run with an answer archive")
            if ctx.look_only and not path.is_file():
                return None
            self._cached = CachedProvider(self.provider, ctx.open_archive(path, readonly=ctx.look_only))
        return self._cached

    def check_ready(self) -> None:
        """No key and no answer archive: every pair would need a call that cannot be made (said before anything
        starts). With an archive, answers may come from it: the key is then asked for when a call is needed."""
        p = self.provider
        if p.key_variables and p.needs_key() and not p.api_key():
            path = self.options.cache or self.context.archive_path
            if not (path is not None and path.is_file() and path.stat().st_size > 0):
                raise OmnisegError(f"model {self.name!r} needs an API key: set {' or '.join(p.key_variables)}")
        self.scheduler.warm_up()

    def request(self, sample: Sample, prompt: str) -> tuple[Any, dict, str]:
        """What is sent for a sample (pixels, generation settings) and its archive key: the sent pixels (hashed
        with their shape) stand for the image bytes."""
        o = self.options
        pixels, gen = sent_pixels(sample.image, o.max_side), self.provider.generation(sample)
        key = cache_key(model=o.model, api_version=getattr(o, "api_version", None), mode=o.mode, prompt=prompt,
                        image=pixels_digest(pixels), generation=gen)
        return pixels, gen, key

    def estimate(self, samples: list[Sample]) -> dict[str, Any]:
        calls = cached = 0
        cost = 0.0
        prompt = self.prompt()
        for s in samples:
            pixels, _, key = self.request(s, prompt)
            if not self.context.refresh and self.archive is not None and self.archive.get(key) is not None:
                cached += 1
                continue
            calls += 1
            cost += self.provider.typical_cost((pixels.shape[1], pixels.shape[0]), prompt)
        return {"calls": calls, "cached": cached, "cost_usd": cost}

    def redecode(self, raw: str, sample: Sample) -> Prediction:
        """A kept raw answer decoded again with today's decoders (no API call)."""
        h, w = sample.image.shape[:2]
        return forms.from_body(self.provider.read, raw, h, w, self.provider.generation(sample), self.options)

    def submit(self, samples: list[Sample]) -> list[concurrent.futures.Future]:
        prompt = self.prompt()
        futures = []
        for s in samples:
            try:
                pixels, gen, key = self.request(s, prompt)
            except OmnisegError:  # the model cannot work at all (a setting): said once, for the run
                raise
            except Exception as e:  # an image that cannot be sent: its own row, the others go on
                futures.append(_done(Prediction.failed(f"the image could not be prepared for the API: "
                                                       f"{type(e).__name__}: {e}")))
                continue
            fresh = self.context.refresh and not self.context.answers_only  # --batch has just refreshed the archive
            hit = None if fresh or self.archive is None else self.archive.lookup(key)
            if hit is not None:  # no call: from the archive
                futures.append(_done(from_archive(self.redecode(hit[0], s), hit[1], key)))
            elif self.context.answers_only:  # no call: a --batch run's verdict
                futures.append(_done(_batch_verdict(self.context, key)))
            else:
                h, w = s.image.shape[:2]
                futures.append(self.scheduler.ask(Ask(h, w, pixels, prompt, gen, key, self.context.max_cost),
                                                  lambda: self.archive))
        return futures

    def collect(self, handle: list[concurrent.futures.Future]) -> list[Prediction]:
        try:
            return self.scheduler.collect(handle)
        finally:
            self.stop_reason = self.scheduler.stop_reason or self.stop_reason

    def predict_batch(self, samples: list[Sample]) -> list[Prediction]:
        return self.collect(self.submit(samples))

    def predict(self, sample: Sample) -> Prediction:
        return self.predict_batch([sample])[0]

    def close(self) -> None:
        self.scheduler.close()
        if self._cached is not None:
            self._cached.close()
            self._cached = None


def _batch_verdict(context: RunContext, key: str) -> Prediction:
    """A pair without an archived answer in a --batch run: its job's error, or left to do (not written)."""
    if key not in context.batch_failures:
        return Prediction.failed("no batch answer yet", status="skipped")
    status, reason = context.batch_failures[key]
    pred = Prediction.failed(reason, status=status, cache_key=key)
    pred.calls = [{"attempt": 1, "outcome": "error", "cache_key": key, "error": reason[:300]}]
    return pred


def _done(pred: Prediction) -> concurrent.futures.Future:
    """A future that already holds its prediction (no call to make)."""
    f: concurrent.futures.Future = concurrent.futures.Future()
    f.set_result(pred)
    return f
