"""How an API model's answers become predictions: decoding a raw body, answering from the archive, and
the verdict of a --batch run for a pair without an answer. Mixed into :class:`.remote.RemoteSegmenter`."""

from __future__ import annotations

from ..datasets.base import Sample
from . import answers, decoders
from .api_types import Reply, checked_tokens, sent_size
from .base import Prediction


class AnswerDecoding:
    """Needs ``_read``, ``_generation``, ``redact``, ``options`` and ``context`` from the class it is mixed into."""

    def redecode(self, raw: str, sample: Sample) -> Prediction:
        """A kept raw answer decoded again with today's decoders (no API call)."""
        h, w = sample.image.shape[:2]
        return self._decode_raw(raw, h, w, self._generation(sample))

    def _from_archive(self, raw: str, booking: dict, key: str, sample: Sample) -> Prediction:
        pred = self.redecode(raw, sample)
        pred.meta.update(cache_hit=True, cache_key=key, **({"batch_job": booking["job"]} if booking.get("job") else {}),
                         **({"endpoint": booking["endpoint"]} if isinstance(booking.get("endpoint"), str) else {}))
        version = pred.meta.get("model_version")
        tokens = checked_tokens(pred.meta.pop("tokens", {})) or {}
        pred.calls = [{"attempt": 0, "outcome": "cache_hit", "http_status": None, "latency_s": 0.0, "cost_usd": 0.0,
                       "cache_key": key, "model_version": version if isinstance(version, str) else None,
                       "booking": booking, **tokens}]
        return pred

    def _batch_verdict(self, key: str) -> Prediction:
        """A pair without an archived answer in a --batch run: its job's error, or left to do (not written)."""
        if key not in self.context.batch_failures:
            return Prediction.failed("no batch answer yet", status="skipped")
        status, reason = self.context.batch_failures[key]
        pred = Prediction.failed(reason, status=status, cache_key=key)
        pred.calls = [{"attempt": 1, "outcome": "error", "cache_key": key, "error": reason[:300]}]
        return pred

    def _decode_raw(self, raw: str, h: int, w: int, gen: dict) -> Prediction:
        """A raw body as a prediction. Never raises: whatever an answer holds ends as a row with a status."""
        limit = self.options.max_answer_mb
        if len(raw) > limit * 1e6:
            return Prediction.failed(f"the answer is {len(raw) / 1e6:.1f} MB, over max_answer_mb {limit:g}: kept in the "
                                     "archive, not decoded", status="invalid_answer", decoder_version=answers.DECODER_VERSION)
        try:
            reply = self._read(raw)
        except Exception as e:  # a body shaped like nothing the provider knows (or nested past any sense)
            return Prediction.failed(self.redact(f"cannot read the response: {type(e).__name__}: {str(e)[:200]}"),
                                     status="invalid_answer", decoder_version=answers.DECODER_VERSION)
        try:
            return self._decode(reply, h, w, gen)
        except Exception as e:  # a decoder bug or an answer no rule foresaw: a row, never a crash
            return Prediction.failed(self.redact(f"the answer could not be decoded: {type(e).__name__}: {str(e)[:200]}"),
                                     status="invalid_answer", decoder_version=answers.DECODER_VERSION,
                                     model_version=reply.model_version if isinstance(reply.model_version, str) else None)

    def _decode(self, reply: Reply, h: int, w: int, gen: dict) -> Prediction:
        o = self.options
        return answers.to_prediction(reply, h, w, threshold=o.threshold, point_order=o.point_order,
                                     expect_image=o.mode == "image-mask",
                                     requested_aspect=decoders.ASPECT_RATIOS.get(gen.get("aspect_ratio", "")),
                                     coords=getattr(o, "coords", "norm1000"), sent_size=sent_size(h, w, o.max_side),
                                     redact=self.redact)
