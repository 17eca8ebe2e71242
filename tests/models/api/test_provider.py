"""The provider contract's shared parts: where answers come from, which key is used, and what a call costs (the
budget holds the worst case while a call is in flight, so a wrong price loosens or blocks --max-cost)."""

from __future__ import annotations

import pytest

from omniseg.models.api.openai import OpenAIApi, OpenAIOptions
from omniseg.models.api.types import Price, estimate_input_tokens


def api(**options) -> OpenAIApi:
    return OpenAIApi("vlm", OpenAIOptions(model="m", target="polyp", **options))


def test_a_call_costs_its_tokens_at_the_prices_per_million():
    a = api(price=Price(input_per_mtok=2.0, output_per_mtok=10.0))
    assert a.cost(1_000_000, 0) == 2.0 and a.cost(3_000_000, 0) == 6.0  # exactly: per million
    assert a.cost(0, 1_000_000) == pytest.approx(10.0)
    assert a.cost(250_000, 30_000) == pytest.approx(0.5 + 0.3)


def test_the_worst_case_of_a_call_is_half_again_the_estimated_prompt_and_every_output_token():
    a = api(price=Price(input_per_mtok=2.0, output_per_mtok=10.0), max_output_tokens=4000)
    for size in [(300, 200), (900, 400), (2000, 1500)]:
        prompt_tokens = int(estimate_input_tokens(size, "find it") * 1.5)
        assert a.worst_cost(size, "find it") == pytest.approx((prompt_tokens * 2.0 + 4000 * 10.0) / 1e6)
    # the image's tiles count: a wide image costs more than a small one
    assert a.worst_cost((2000, 1500), "p") > a.worst_cost((300, 200), "p")


def test_the_endpoint_and_the_key_the_provider_uses(monkeypatch):
    assert api().endpoint() == "https://api.openai.com/v1"
    assert api(base_url="http://127.0.0.1:8000/v1").endpoint() == "http://127.0.0.1:8000/v1"
    assert api().name == "vlm" and api().needs_key() and not api(key_env=None).needs_key()
    monkeypatch.setenv("MY_KEY", "sk-first-key-0123456789")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api(key_env="MY_KEY").api_key() == "sk-first-key-0123456789"
    assert api().api_key() is None  # its variable is not set
    monkeypatch.setenv("MY_KEY", "")
    assert api(key_env="MY_KEY").api_key() is None  # set but empty is no key


def test_the_first_variable_that_holds_a_key_wins(monkeypatch):
    from omniseg.redaction import redact

    p = api(key_env=None)
    p.key_variables = ("FIRST_KEY", "SECOND_KEY")  # as Gemini's GEMINI_API_KEY, then GOOGLE_API_KEY
    monkeypatch.delenv("FIRST_KEY", raising=False)
    monkeypatch.setenv("SECOND_KEY", "second-key-0123456789")
    assert p.api_key() == "second-key-0123456789"
    monkeypatch.setenv("FIRST_KEY", "first-key-0123456789")
    assert p.api_key() == "first-key-0123456789"
    assert redact("first-key-0123456789 second-key-0123456789") == "[redacted] [redacted]"  # both are watched
