"""Models: the Segmenter contract (:mod:`.base`), the local kinds (specialist, floors, human) and, in :mod:`.api`,
the omnimodels behind an API. Adding a kind: a module with a :class:`~.base.Segmenter` subclass and one line here.

May import: the shared modules and ``datasets`` (samples). Never ``store``, ``inference``, ``study``, ``cli``.
"""

from __future__ import annotations

from ..errors import OmnisegError, unknown_name
from ..registry import Registry
from .base import Prediction, Segmenter

REGISTRY = Registry(
    "model kind",
    {
        "otsu": "omniseg.models.baselines:OtsuBaseline",
        "frangi": "omniseg.models.baselines:FrangiBaseline",
        "ellipse": "omniseg.models.baselines:CentreEllipse",
        "human": "omniseg.models.human:HumanReference",
        "unet": "omniseg.models.specialist:Specialist",
        "gemini": "omniseg.models.api.gemini.model:Gemini",
        "openai": "omniseg.models.api.openai:OpenAICompatible",
        "masks": "omniseg.models.masks:MasksFromDisk",
        "sam3": "omniseg.models.sam3:Sam3",
        "chain": "omniseg.models.chain:Chain",
    },
)
get = REGISTRY.get
names = REGISTRY.names


def build(cfg) -> Segmenter:
    """A ready segmenter from a :class:`~omniseg.config.ModelConfig`, carrying the entry's role."""
    cls = get(cfg.kind)
    seg = cls(cfg.name, cls.Options.model_validate(cfg.options))
    seg.role = getattr(cfg, "role", None) or cls.role
    return seg


def link(segs: list[Segmenter], entries: list) -> list[Segmenter]:
    """Attach to each model the other entries it :meth:`~.base.Segmenter.needs` (a chain's source): the model the
    run already has when that entry runs too (one model, so one request per answer), else one built from its entry
    in ``entries`` (ModelConfigs). Returns ``segs``."""
    by_name = {s.name: s for s in segs}
    configs = {c.name: c for c in entries}
    running = frozenset(by_name)
    for s in segs:
        peers = {}
        for n in s.needs():
            if n not in by_name:
                if n not in configs:
                    raise OmnisegError(f"model {s.name!r}: " + unknown_name("model", n, sorted(configs)))
                by_name[n] = build(configs[n])
            peers[n] = by_name[n]
        if peers:
            s.attach(peers, running)
    return segs


def role_of(kind: str, configured: str | None = None) -> str:
    """The role of a model entry: the configured one, else its kind's (floor for a kind not loaded)."""
    if configured:
        return configured
    try:
        return get(kind).role
    except KeyError:
        return "floor"


__all__ = ["Prediction", "Segmenter", "REGISTRY", "get", "names", "build", "link"]
