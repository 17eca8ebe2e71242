"""omniseg.models.api.cached: the key an answer is kept under (everything that changes the answer, nothing else),
and the archive around a provider."""

from __future__ import annotations

from hypothesis import given, strategies as st

from omniseg.models.api.cached import cache_key

_FIELDS = ("model", "api_version", "mode", "prompt", "image", "generation")
_values = st.one_of(st.text(max_size=12), st.integers(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@given(st.fixed_dictionaries({f: _values for f in _FIELDS}), st.sampled_from(_FIELDS), _values, st.randoms())
def test_every_field_of_the_key_changes_it_and_its_order_does_not(parts, field, other, rnd):
    """The archive key changes when any part of the question does, and not with the order the parts come in."""
    key = cache_key(**parts)
    shuffled = list(parts.items())
    rnd.shuffle(shuffled)
    assert cache_key(**dict(shuffled)) == key
    if other != parts[field]:
        assert cache_key(**{**parts, field: other}) != key


@given(st.sampled_from([("threshold", 60), ("threshold", 200), ("point_order", "yx"), ("max_answer_mb", 1.0),
                        ("max_retries", 0), ("timeout_s", 5.0), ("max_in_flight", 1), ("max_retry_wait_s", 1.0)]),
       st.sampled_from([("prompt", "Outline {target}."), ("target", "the lesion"), ("seed", 3), ("max_side", 64),
                        ("model", "gemini-3.5-flash-lite"), ("api_version", "v1"), ("mode", "json-mask"),
                        ("max_output_tokens", 99), ("thinking_level", "low")]))
def test_how_an_answer_is_read_or_fetched_leaves_the_key_and_what_is_asked_changes_it(same, changed):
    """A model's archive key: decoding (threshold, point order, size bound) and calling (retries, timeouts, the
    in-flight cap) leave it; the prompt, target, seed, image size, model, API version, mode and settings change it."""
    import numpy as np

    from omniseg import config, models
    from omniseg.datasets.base import Sample

    sample = Sample("x", np.full((100, 150, 3), 90, np.uint8), np.zeros((100, 150), bool))

    def key(**options):
        opts = {"model": "gemini-3.5-flash", "mode": "polygon", **options}
        if "prompt" in opts:
            opts = {**opts, "prompts": {"mine": opts.pop("prompt")}, "prompt": "mine"}
        seg = models.build(config.ModelConfig(name="g", kind="gemini", options=opts))
        prompt = seg.prompt()
        return seg.request(sample, prompt)[2]

    base = key()
    assert key(**dict([same])) == base
    assert key(**dict([changed])) != base


def _cached(tmp_path, price=(1.0, 2.0)):
    from omniseg.models.api.cached import CachedProvider
    from omniseg.models.api.openai import OpenAIApi, OpenAIOptions
    from omniseg.store.archive import AnswerArchive

    options = OpenAIOptions(model="m", base_url="http://127.0.0.1:9/v1", key_env=None,
                            price={"input_per_mtok": price[0], "output_per_mtok": price[1]})
    return CachedProvider(OpenAIApi("vlm", options), AnswerArchive(tmp_path / "answers.sqlite"))


def _body(prompt_tokens, completion_tokens) -> str:
    import json

    return json.dumps({"id": "r1", "model": "m-2026", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "[]"}}], "usage": {"prompt_tokens": prompt_tokens,
                                                            "completion_tokens": completion_tokens}})


def test_an_answer_is_kept_with_the_booking_of_the_call_that_paid_for_it_and_read_back(tmp_path):
    c = _cached(tmp_path)
    booking, error = c.keep("k1", _body(1000, 500), attempt=2, latency=0.25)
    assert error is None and c.get("k1") == _body(1000, 500)
    assert booking["cost_usd"] == (1000 * 1.0 + 500 * 2.0) / 1e6 and booking["cost_known"]
    assert (booking["attempt"], booking["latency_s"], booking["model_version"]) == (2, 0.25, "m-2026")
    raw, kept = c.lookup("k1")
    assert raw == _body(1000, 500) and kept == booking
    assert c.lookup("k2") is None and c.get("k2") is None


def test_a_body_that_does_not_read_is_kept_at_an_unknown_cost_and_a_batch_answer_at_the_batch_price(tmp_path):
    c = _cached(tmp_path)
    booking, error = c.keep("odd", "[1, 2]", attempt=1, latency=0.1)  # JSON, but no object: kept all the same
    assert error is None and c.get("odd") == "[1, 2]" and not booking["cost_known"] and booking["cost_usd"] == 0.0
    c.keep_batch("b", _body(1000, 500), "batches/7", 0.5)
    _, kept = c.lookup("b")
    assert kept["outcome"] == "batch" and kept["job"] == "batches/7" and kept["cost_usd"] == 0.5 * 2000 / 1e6


def test_an_archive_that_cannot_keep_an_answer_is_tried_three_times_then_says_why(tmp_path, monkeypatch):
    from omniseg.errors import OmnisegError
    from omniseg.models.api import cached as cached_mod

    c = _cached(tmp_path)
    tries = []

    def full(*a, **kw):
        tries.append(1)
        raise OmnisegError("cannot write the answer archive: database or disk is full")

    monkeypatch.setattr(c.archive, "put", full)
    monkeypatch.setattr(cached_mod.time, "sleep", lambda s: None)  # the waits between tries: not a timer in a test
    booking, error = c.keep("k", _body(10, 5), attempt=1, latency=0.1)
    assert len(tries) == 3 and "disk is full" in str(error) and booking["cost_known"]
