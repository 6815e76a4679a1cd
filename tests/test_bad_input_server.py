"""Bad requests to a real server on loopback, found systematically: any JSON body (any value in
any field OpenAI's API has, lone surrogates, deep nesting, bytes that are not JSON) is answered
with a 200 or a 4xx carrying OpenAI's error body, never a 500."""

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgellm
from serving import running

FIELDS = ["model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
          "min_p", "repetition_penalty", "seed", "stop", "stream", "stream_options", "n", "logit_bias",
          "frequency_penalty", "presence_penalty", "echo", "logprobs", "suffix", "user"]
TEXT = st.text(alphabet=st.characters(codec=None), max_size=8)  # lone surrogates included
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]) | JSON,
                                 "content": TEXT | JSON})


@pytest.fixture(scope="module")
def server(tiny_folder):
    with running(edgellm.load(tiny_folder), max_concurrency=2, queue_size=8) as url:
        yield url


def assert_answered(response):
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=st.booleans(), body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4),
       prompt=TEXT, messages=st.lists(MESSAGE, min_size=1, max_size=2))
def test_any_json_body_gets_a_200_or_a_4xx(server, chat, body, prompt, messages):
    body = {("messages" if chat else "prompt"): messages if chat else prompt, "max_tokens": 2, **body}
    route = "/v1/chat/completions" if chat else "/v1/completions"
    text = json.dumps(body, ensure_ascii=True)  # lone surrogates travel as \ud800 escapes
    with httpx.stream("POST", server + route, content=text, headers={"Content-Type": "application/json"},
                      timeout=60) as response:
        response.read()
    assert_answered(response)


@pytest.mark.parametrize("content", [b"[" * 100_000 + b"]" * 100_000, b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                     b"\xff\xfe{}", b'{"prompt": "\\ud800"}', b'{"prompt": "a", "stop": "\\udfff"}',
                                     b"", b"null", b'{"prompt": "a", "max_tokens": 1e999}', b"{" * 3])
def test_bodies_that_are_not_requests_get_a_400(server, content):
    response = httpx.post(server + "/v1/completions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert_answered(response)


def _nested_schema(levels: int) -> dict:
    schema = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize("field, value, param", [
    ("logit_bias", {"²": 1}, "logit_bias"),  # a digit to str.isdigit, not to int
    ("logit_bias", {"٣": 1}, "logit_bias"),
    ("temperature", 1e-320, "temperature"),  # subnormal: the logits would overflow
    ("frequency_penalty", 5e-324, None),  # a tiny value a penalty takes as it is
    ("response_format", {"type": "json_schema", "json_schema": {"name": "deep", "schema": _nested_schema(200)}},
     "response_format"),
])
def test_values_a_library_would_misread_get_a_400_naming_the_field(server, field, value, param):
    if field == "response_format":
        pytest.importorskip("llguidance")
    response = httpx.post(server + "/v1/completions", json={"prompt": "hi", "max_tokens": 2, field: value})
    assert_answered(response)
    if param is None:
        assert response.status_code == 200, response.text
        return
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param, error
    assert "Received" in error["message"] and "zero-size" not in error["message"] and "invalid literal" not in error["message"]
