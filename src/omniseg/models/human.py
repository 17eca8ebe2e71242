"""A second human annotator as a model: the human-versus-human reference row (DRIVE's 2nd_manual)."""

from __future__ import annotations

from pydantic import Field

from ..datasets.base import Sample
from ..options import Options
from .base import Prediction, Segmenter


class HumanOptions(Options):
    annotation: str = Field("human", description="which extra reference of the sample to return")


class HumanReference(Segmenter):
    kind = "human"
    role = "human"
    Options = HumanOptions

    def predict(self, sample: Sample) -> Prediction:
        mask = sample.extra.get(self.options.annotation)
        if mask is None:
            return Prediction.failed(
                f"no {self.options.annotation!r} annotation for {sample.id} (DRIVE has one on its test split only)",
                status="unavailable",
            )
        return Prediction(mask=mask.copy())
