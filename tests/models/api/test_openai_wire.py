"""The `openai` provider's wire format, piece by piece: what is sent, how each shape of body is read, how a
failure is classed. The battery against the fake server (test_openai.py) runs whole runs; these pin each rule."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from omniseg.models.api.openai import PROMPTS, ApiHttpError, OpenAIApi, OpenAIOptions, error_message

KEY = "sk-omniseg-wire-test-key-0123456789"


def api(**options) -> OpenAIApi:
    return OpenAIApi("vlm", OpenAIOptions(model="Qwen/Qwen3-VL-8B", target="polyp", **options))


def body(**fields) -> str:
    return json.dumps({"id": "cmpl-1", "model": "qwen3-vl", **fields})


def test_generation_sends_only_the_settings_that_are_set():
    assert api().generation(None) == {"max_tokens": 8192, "temperature": 0.0, "seed": 0}
    assert api(temperature=None, seed=None, max_output_tokens=77).generation(None) == {"max_tokens": 77}


def test_the_payload_is_the_image_as_a_png_data_url_then_the_prompt():
    sent = json.loads(api().payload(b"\x89PNG-bytes", "find the polyp", {"max_tokens": 5, "seed": 3}))
    assert sent["model"] == "Qwen/Qwen3-VL-8B" and sent["max_tokens"] == 5 and sent["seed"] == 3
    (message,) = sent["messages"]
    assert message["role"] == "user"
    image, text = message["content"]
    assert image == {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                        + base64.b64encode(b"\x89PNG-bytes").decode()}}
    assert text == {"type": "text", "text": "find the polyp"}


def test_the_client_carries_the_key_only_when_there_is_one():
    a = api(base_url="http://127.0.0.1:9/v1/", timeout_s=7.5)
    with_key, without = a.make_client(KEY), a.make_client(None)
    try:
        assert with_key.headers["authorization"] == f"Bearer {KEY}"
        assert "authorization" not in without.headers
        assert str(with_key.base_url) == "http://127.0.0.1:9/v1/"  # one slash, whatever the option ended with
        assert with_key.timeout.read == 7.5
    finally:
        asyncio.run(a.close_client(with_key))
        asyncio.run(a.close_client(without))
    assert a.key_variables == ("OPENAI_API_KEY",) and api(key_env=None).key_variables == ()
    assert not api(key_env=None).needs_key() and a.name == "vlm"
    # proxies and certificates from the environment are not used: the endpoint named is the one reached
    assert with_key.trust_env is False
    last_x = api(base_url="http://127.0.0.1:9/vX").make_client(None)
    assert str(last_x.base_url) == "http://127.0.0.1:9/vX/"
    asyncio.run(a.close_client(last_x))


def test_a_full_answer_is_read_with_its_usage():
    r = api().read(body(choices=[{"finish_reason": "stop", "message": {"content": "[]"}}],
                        usage={"prompt_tokens": 120, "completion_tokens": 50,
                               "completion_tokens_details": {"reasoning_tokens": 30}}))
    assert (r.text, r.finish, r.blocked, r.has_candidates) == ("[]", "STOP", None, True)
    assert (r.model_version, r.response_id) == ("qwen3-vl", "cmpl-1")
    # completion tokens include the reasoning: the output booked is the rest
    assert r.tokens == {"prompt_tokens": 120, "output_tokens": 20, "thoughts_tokens": 30}


@pytest.mark.parametrize("usage, tokens", [
    (None, {"prompt_tokens": 0, "output_tokens": 0, "thoughts_tokens": 0}),
    ([1, 2], {"prompt_tokens": 0, "output_tokens": 0, "thoughts_tokens": 0}),
    ({"prompt_tokens": 9, "completion_tokens": 4}, {"prompt_tokens": 9, "output_tokens": 4, "thoughts_tokens": 0}),
    ({"completion_tokens": 4, "completion_tokens_details": "x"}, {"prompt_tokens": 0, "output_tokens": 4,
                                                                  "thoughts_tokens": 0}),
    ({"completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": None}},
     {"prompt_tokens": 0, "output_tokens": 4, "thoughts_tokens": 0}),
    # a count that is no integer is passed on as it came (booked at an unknown cost), never subtracted
    ({"completion_tokens": "4", "completion_tokens_details": {"reasoning_tokens": 1}},
     {"prompt_tokens": 0, "output_tokens": "4", "thoughts_tokens": 1}),
    ({"completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 1.5}},
     {"prompt_tokens": 0, "output_tokens": 4, "thoughts_tokens": 1.5}),
    ({"completion_tokens": True, "completion_tokens_details": {"reasoning_tokens": 1}},
     {"prompt_tokens": 0, "output_tokens": True, "thoughts_tokens": 1}),
    ({"completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": True}},
     {"prompt_tokens": 0, "output_tokens": 4, "thoughts_tokens": True}),
])
def test_usage_in_every_shape(usage, tokens):
    r = api().read(body(choices=[{"finish_reason": "stop", "message": {"content": "[]"}}], usage=usage))
    assert r.tokens == tokens


@pytest.mark.parametrize("choices", [None, [], "stop", [None], ["text"], {"message": {"content": "[]"}}, {0: 1}])
def test_no_usable_choice_is_no_candidate(choices):
    r = api().read(body(choices=choices, usage={"prompt_tokens": 3}))
    assert r.has_candidates is False and r.text == "" and r.finish == ""
    assert r.tokens["prompt_tokens"] == 3  # still booked


@pytest.mark.parametrize("finish, read", [("stop", "STOP"), ("length", "MAX_TOKENS"), ("content_filter", "SAFETY"),
                                          ("tool_calls", "TOOL_CALLS"), (None, ""), (7, "")])
def test_finish_reasons(finish, read):
    assert api().read(body(choices=[{"finish_reason": finish, "message": {"content": "x"}}])).finish == read


def test_content_as_parts_keeps_only_the_text_parts():
    parts = [{"type": "text", "text": "[{\"bbox_2d\""}, {"type": "image_url"}, "loose", {"text": 5},
             {"type": "text", "text": ": [1, 2, 3, 4]}]"}]
    r = api().read(body(choices=[{"finish_reason": "stop", "message": {"content": parts}}]))
    assert r.text == '[{"bbox_2d": [1, 2, 3, 4]}]'


@pytest.mark.parametrize("message", [None, "text", {"content": None}, {"content": 42}, {}])
def test_a_message_without_text_reads_as_empty(message):
    r = api().read(body(choices=[{"finish_reason": "stop", "message": message}]))
    assert r.text == "" and r.has_candidates and r.blocked is None


def test_a_content_filter_without_content_is_blocked_and_with_content_is_not():
    blocked = api().read(body(choices=[{"finish_reason": "content_filter", "message": {"content": None}}]))
    assert blocked.blocked == "answer withheld by the endpoint's content filter" and blocked.finish == "SAFETY"
    said = api().read(body(choices=[{"finish_reason": "content_filter", "message": {"content": "[]"}}]))
    assert said.blocked is None and said.text == "[]"
    stopped = api().read(body(choices=[{"finish_reason": "stop", "message": {"content": None}}]))
    assert stopped.blocked is None


@pytest.mark.parametrize("raw, kind", [("[1, 2]", "list"), ('"a"', "str"), ("3", "int"), ("null", "NoneType")])
def test_a_body_that_is_not_an_object_is_refused_by_name(raw, kind):
    with pytest.raises(ValueError, match=f"the body is a JSON {kind}, not an object"):
        api().read(raw)


def test_ids_and_versions_that_are_not_text_are_dropped():
    r = api().read(json.dumps({"id": 5, "model": ["m"], "choices": [{"message": {"content": "[]"}}]}))
    assert r.model_version is None and r.response_id is None


@pytest.mark.parametrize("text, message", [
    ('{"error": {"message": "rate limited", "type": "x"}}', "rate limited"),
    ('{"error": "bad model"}', "bad model"),
    ('{"message": "plain"}', "plain"),
    ('{"error": {"code": 5}}', '{"code": 5}'),
    ('[1, 2]', "[1, 2]"),
    ('"just text"', "just text"),
    ("<html>\n  <b>502</b>   Bad Gateway\n</html>", "<html> <b>502</b> Bad Gateway </html>"),
    ("", "(empty body)"),
    ("   \n ", "(empty body)"),
    ("[" * 100000, "[" * 200),
])
def test_error_bodies_of_every_shape_give_their_message(text, message):
    assert error_message(text) == message


def test_error_messages_are_cut():
    assert error_message(json.dumps({"error": {"message": "m" * 900}})) == "m" * 500
    assert error_message(json.dumps({"error": "e" * 900})) == "e" * 200
    assert error_message("x" * 900) == "x" * 200
    assert error_message(json.dumps({"error": ["v" * 900]})) == json.dumps(["v" * 900])[:200]


@pytest.mark.parametrize("code, retryable", [(408, True), (409, True), (429, True), (500, True), (502, True),
                                             (503, True), (504, True), (400, False), (401, False), (403, False),
                                             (404, False), (422, False), (501, False)])
def test_which_http_errors_are_retried(code, retryable):
    f = api().failure(ApiHttpError(code, "nope", 2.5))
    assert (f.code, f.retryable, f.delay, f.text) == (code, retryable, 2.5, f"HTTP {code}: nope")


def test_transport_failures_are_retried_and_other_errors_are_not(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    a = api()
    a.api_key()  # the provider watches its key variable from here on
    t = a.failure(ConnectionResetError(f"reset by peer, key {KEY}"))
    assert t.code is None and t.retryable and t.delay is None
    assert t.text == "ConnectionResetError: reset by peer, key [redacted]"
    other = a.failure(ValueError("the body is a JSON list, not an object"))
    assert not other.retryable and other.text == "ValueError: the body is a JSON list, not an object"
    http = a.failure(ApiHttpError(401, f"bad key {KEY}", None))
    assert KEY not in http.text and not http.retryable


def test_a_non_200_answer_raises_with_its_redacted_message_and_retry_after(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    class Resp:
        def __init__(self, code, text, headers):
            self.status_code, self.text, self.headers = code, text, headers

    class Client:
        def __init__(self, resp):
            self.resp, self.posted = resp, []

        async def post(self, path, content, headers):
            self.posted.append((path, content, headers))
            return self.resp

    a = api()
    a.api_key()
    client = Client(Resp(429, json.dumps({"error": {"message": f"slow down {KEY}"}}), {"retry-after": "3"}))
    with pytest.raises(ApiHttpError) as e:
        asyncio.run(a.send(client, b"{}"))
    assert (e.value.code, e.value.retry_after, e.value.message) == (429, 3.0, "slow down [redacted]")
    assert client.posted == [("chat/completions", b"{}", {"Content-Type": "application/json"})]
    # any status but 200 is a failure, whatever its body
    with pytest.raises(ApiHttpError) as e:
        asyncio.run(a.send(Client(Resp(201, body(choices=[]), {})), b"{}"))
    assert e.value.code == 201 and e.value.retry_after is None
    ok = Client(Resp(200, "not even json", {}))
    assert asyncio.run(a.send(ok, b"{}")) == "not even json"  # read() judges the body, not send()


def test_the_kind_checks_its_codebook_when_built_and_signs_with_its_content(tmp_path):
    from omniseg import models
    from omniseg.config import ModelConfig
    from omniseg.errors import OmnisegError
    from omniseg.models.api import paligemma_masks
    from omniseg.standins import tiny_codebook

    def build(**options):
        return models.build(ModelConfig(name="pali", kind="openai", options={"model": "m", "target": "polyp",
                                                                              **options}))

    plain = build()
    assert plain.name == "pali" and plain.provider.options.model == "m" and plain.options.model == "m"
    assert "seg_codebook" not in plain.signature()["options"] or plain.signature()["options"]["seg_codebook"] is None
    missing = tmp_path / "no" / "vae.npz"
    with pytest.raises(OmnisegError, match="model 'pali': option seg_codebook: ") as e:
        build(seg_codebook=str(missing))
    assert str(missing) in str(e.value)
    a = tiny_codebook.save(tmp_path / "a.npz", seed=1)
    b = tiny_codebook.save(tmp_path / "b.npz", seed=2)
    sig = build(seg_codebook=str(a)).signature()
    assert sig["options"]["seg_codebook"] == paligemma_masks.digest(str(a)) and sig["kind"] == "openai"
    assert sig["prompt_text"] == PROMPTS["polygon"]
    assert build(seg_codebook=str(a)).signature_hash() != build(seg_codebook=str(b)).signature_hash()
    moved = tmp_path / "moved.npz"
    moved.write_bytes(a.read_bytes())  # the weights decide, not where the file lies
    assert build(seg_codebook=str(moved)).signature_hash() == build(seg_codebook=str(a)).signature_hash()
