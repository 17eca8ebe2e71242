"""The one redaction: every key value, Google-shaped key and bearer token masked, and nothing else touched."""

from __future__ import annotations

import pytest

from omniseg import redaction
from omniseg.redaction import MASK, redact, watch


@pytest.fixture
def env(monkeypatch):
    for v in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(redaction, "_VARIABLES", set(redaction._VARIABLES))  # watch() below stays in this test
    return monkeypatch


@pytest.mark.parametrize("var", ["GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"])
def test_the_value_of_each_providers_key_variable_is_masked_wherever_it_stands(env, var):
    env.setenv(var, "k3y-value-42")
    assert redact("GET /v1/x?key=k3y-value-42&alt=json") == f"GET /v1/x?key={MASK}&alt=json"
    assert redact("k3y-value-42 and k3y-value-42") == f"{MASK} and {MASK}"


def test_a_watched_variable_is_masked_and_a_short_value_is_left_alone(env):
    env.setenv("MY_VLM_KEY", "sk-local-0001")
    assert redact("token sk-local-0001") == "token sk-local-0001"  # not watched yet
    watch("MY_VLM_KEY", "")
    assert redact("token sk-local-0001.") == f"token {MASK}."
    env.setenv("MY_VLM_KEY", "1234567")  # 7 characters: no key; masking it would mangle numbers in text
    assert redact("id 1234567") == "id 1234567"
    env.setenv("MY_VLM_KEY", "12345678")  # 8: masked
    assert redact("id 12345678") == f"id {MASK}"


def test_google_shaped_keys_and_bearer_tokens_are_masked_without_any_variable(env):
    assert redact("AIza" + "x" * 10) == MASK and redact("AIza" + "x" * 9) == "AIza" + "x" * 9
    assert redact("key AIzaSyA-b_c9xyz end") == f"key {MASK} end"
    assert redact("Authorization: Bearer abc.DEF-123_x") == f"Authorization: Bearer {MASK}"
    assert redact("authorization: BEARER abcdefgh") == f"authorization: BEARER {MASK}"
    assert redact("Bearer abcdefg") == "Bearer abcdefg"  # 7 characters: a word, not a token
    assert redact("") == "" and redact("nothing secret here") == "nothing secret here"
