"""edgellm serve's structured output and the rest of OpenAI's sampling fields, called by the
official openai client over loopback with the shipped model: response_format, logprobs, echo,
n, penalties, logit_bias; bad values get OpenAI's 400 and touch nothing else."""

import json
import re
import threading

import httpx
import jsonschema
import numpy as np
import openai
import pytest

import edgellm
from edgellm.generation.scoring import score_ids
from serving import running
from tolerance import assert_float32_close, logit_scale

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age"],
          "properties": {"name": {"type": "string", "maxLength": 16},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}}}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


@pytest.fixture(scope="module")
def model():
    return edgellm.load("shakespeare")


@pytest.fixture(scope="module")
def url(model):
    with running(model, max_concurrency=2, queue_size=64) as base:
        yield base


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_json_schema_on_both_endpoints_streamed_or_not(client):
    for seed, prompt in enumerate(["ROMEO:", "JULIET: Who is there?", "HAMLET:"]):
        chat = client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": prompt}],
                                              response_format=SCHEMA_FORMAT, seed=seed, max_tokens=80)
        jsonschema.validate(json.loads(chat.choices[0].message.content), PERSON)
        assert chat.choices[0].finish_reason == "stop"
        plain = client.completions.create(model="shakespeare", prompt=prompt, seed=seed, max_tokens=80,
                                          extra_body={"response_format": SCHEMA_FORMAT})
        jsonschema.validate(json.loads(plain.choices[0].text), PERSON)
        streamed = client.completions.create(model="shakespeare", prompt=prompt, seed=seed, max_tokens=80, stream=True,
                                             extra_body={"response_format": SCHEMA_FORMAT})
        assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
        chunks = client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": prompt}],
                                                response_format=SCHEMA_FORMAT, seed=seed, max_tokens=80, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat.choices[0].message.content
    anything = client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": "Hi"}],
                                              response_format={"type": "json_object"}, seed=1, max_tokens=30)
    assert anything.choices[0].message.content.startswith("{")


def test_regex_response_format(client, model):
    pattern = r" [A-Z][a-z]{2,8}, [a-z]+ [a-z]+[.!?]"
    for seed in range(3):
        reply = client.completions.create(model="shakespeare", prompt="ROMEO:", seed=seed, max_tokens=40,
                                          extra_body={"response_format": {"type": "regex", "regex": pattern}})
        assert re.fullmatch(pattern, reply.choices[0].text), reply.choices[0].text
        from edgellm.generation import constraints
        assert reply.choices[0].text == model.generate("ROMEO:", seed=seed, max_new_tokens=40,
                                                       constraint=constraints.regex(pattern)).text


def test_echo_with_max_tokens_0_scores_the_prompt_like_the_library(client, model):
    text = "ROMEO: But soft, what light through yonder window breaks?"
    reply = client.completions.create(model="shakespeare", prompt=text, echo=True, max_tokens=0, logprobs=3)
    logprobs = reply.choices[0].logprobs
    assert reply.choices[0].text == text and reply.usage.completion_tokens == 0
    assert reply.usage.prompt_tokens == len(logprobs.tokens) == len(model.tokenizer.encode(text))
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert logprobs.token_logprobs[1:] == model.score(text).logprobs  # the same computation: equal
    assert "".join(logprobs.tokens) == text and logprobs.text_offset[1] == len(logprobs.tokens[0])
    for value, top in zip(logprobs.token_logprobs[1:], logprobs.top_logprobs[1:]):
        assert len(top) <= 3 and max(top.values()) >= value - 1e-9
    # lm-eval-harness's request: prompt as token ids, echo, logprobs 1, max_tokens 1
    ids = model.tokenizer.encode(text)
    lm_eval = client.completions.create(model="shakespeare", prompt=[ids], echo=True, max_tokens=1, logprobs=1,
                                        temperature=0)
    assert lm_eval.choices[0].logprobs.token_logprobs[1:len(ids)] == model.score(text).logprobs
    assert lm_eval.usage.completion_tokens == 1 and len(lm_eval.choices[0].logprobs.tokens) == len(ids) + 1


def test_generated_logprobs_are_the_models(client, model):
    reply = client.completions.create(model="shakespeare", prompt="JULIET:", max_tokens=12, seed=5, logprobs=2,
                                      temperature=1.0)
    ids = model.tokenizer.encode("JULIET:")
    generated = model.generate("JULIET:", max_new_tokens=12, seed=5, temperature=1.0).token_ids
    settings = model.defaults.replace(max_new_tokens=12, seed=5, temperature=1.0)
    own = list(model.row_steps(ids, settings, logprobs=0))[-1][0]  # the library's own, step by step
    # a row's logits do not depend on the rows beside it, so the numbers are the same floats
    assert own.ids == generated and reply.choices[0].logprobs.token_logprobs == own.logprobs
    chat = client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=6, seed=2, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.top_logprobs[0].logprob >= t.logprob - 1e-9 for t in content)


def test_generated_logprobs_match_scoring_on_float32(tiny_folder):
    # the served log-probabilities come from one token a step, the scored ones from the whole text
    # at once: on the float32 folder they differ by float32 reordering only, on any CPU
    tiny = edgellm.load(tiny_folder)
    with running(tiny) as base:
        served = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        reply = served.completions.create(model="tiny", prompt="JULIET:", max_tokens=12, seed=5, logprobs=2,
                                          temperature=1.0)
    ids = tiny.tokenizer.encode("JULIET:")
    generated = tiny.generate("JULIET:", max_new_tokens=12, seed=5, temperature=1.0).token_ids
    scored = score_ids(tiny, ids + generated)[len(ids) - 1:]
    assert len(generated) == 12 and reply.choices[0].text == tiny.tokenizer.decode(generated)
    assert_float32_close(tiny.config, reply.choices[0].logprobs.token_logprobs, scored,
                         scale=2 * logit_scale(tiny, ids + generated))


def test_n_penalties_and_logit_bias_match_the_library(client, model):
    settings = dict(presence_penalty=0.5, frequency_penalty=0.3, temperature=0.9, seed=4)
    expected = model.generate("ROMEO:", max_new_tokens=16, num_return_sequences=2, logit_bias={13: -100.0},
                              **settings)
    reply = client.completions.create(model="shakespeare", prompt="ROMEO:", max_tokens=16, n=2,
                                      logit_bias={"13": -100}, **settings)
    assert [c.index for c in reply.choices] == [0, 1]
    assert [c.text for c in reply.choices] == [r.text for r in expected]
    assert reply.usage.completion_tokens == sum(len(r.token_ids) for r in expected)
    chunks = list(client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=10, n=2, seed=1, stream=True,
                                                 stream_options={"include_usage": True}))
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in (0, 1)]
    plain = client.chat.completions.create(model="shakespeare", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=10, n=2, seed=1)
    assert texts == [c.message.content for c in plain.choices]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


BAD = [  # body, endpoint, param
    ({"prompt": "a", "frobnicate": 1}, "/v1/completions", "frobnicate"),
    ({"prompt": "a", "top_logprobs": 2}, "/v1/completions", "top_logprobs"),
    ({"prompt": "a", "logprobs": 6}, "/v1/completions", "logprobs"),
    ({"messages": [{"role": "user", "content": "a"}], "logprobs": True, "top_logprobs": 21}, "/v1/chat/completions",
     "top_logprobs"),
    ({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}, "/v1/chat/completions", "top_logprobs"),
    ({"messages": [{"role": "user", "content": "a"}], "echo": True}, "/v1/chat/completions", "echo"),
    ({"prompt": "a", "n": 17}, "/v1/completions", "n"),
    ({"prompt": "a", "n": 0}, "/v1/completions", "n"),
    ({"prompt": "a", "n": 2, "temperature": 0}, "/v1/completions", "n"),
    ({"prompt": "a", "logit_bias": {"1": 101}}, "/v1/completions", "logit_bias"),
    ({"prompt": "a", "logit_bias": {"99999": 1}}, "/v1/completions", "logit_bias"),
    ({"prompt": "a", "presence_penalty": 2.5}, "/v1/completions", "presence_penalty"),
    ({"prompt": "a", "best_of": 3}, "/v1/completions", "best_of"),
    ({"prompt": "a", "response_format": {"type": "xml"}}, "/v1/completions", "response_format"),
    ({"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "/v1/completions",
     "response_format"),
    ({"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "wat"}}}},
     "/v1/completions", "response_format"),
    ({"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object",
                                                                                         "if": {}}}}},
     "/v1/completions", "response_format"),
    ({"prompt": "a", "response_format": {"type": "regex", "regex": "[a-"}}, "/v1/completions", "response_format"),
    ({"prompt": "a", "response_format": {"type": "regex", "regex": "a[^\\s\\S]"}}, "/v1/completions",
     "response_format"),
    ({"prompt": "a", "max_tokens": 0}, "/v1/completions", "max_tokens"),
    ({"prompt": [5, 99999]}, "/v1/completions", "prompt"),
    ({"prompt": "a", "stream_options": {"include_usage": True, "x": 1}}, "/v1/completions", "stream_options"),
]


def test_bad_fields_get_openai_400s_and_touch_nothing_else(tiny_folder):
    """Good requests batched with bad ones get exactly the library's text (a float32 folder: an int8
    row's numbers move a little with the rows beside it, see docs/server.md)."""
    model = edgellm.load(tiny_folder)
    with running(model, max_concurrency=8, queue_size=64) as url:
        _bad_fields_beside_good_requests(url, model)


def _bad_fields_beside_good_requests(url, model):
    good = {seed: model.generate("ROMEO:", max_new_tokens=12, temperature=1.0, seed=seed).text for seed in range(4)}
    jobs = [({"prompt": "ROMEO:", "max_tokens": 12, "temperature": 1.0, "seed": s}, "/v1/completions", None)
            for s in good] + BAD
    barrier, results = threading.Barrier(len(jobs)), {}

    def call(i, body, path):
        barrier.wait()
        results[i] = httpx.post(url + path, json=body, timeout=120)

    threads = [threading.Thread(target=call, args=(i, body, path)) for i, (body, path, _) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (body, path, param) in enumerate(jobs):
        if param is None:
            assert results[i].status_code == 200 and results[i].json()["choices"][0]["text"] == good[body["seed"]]
            continue
        assert results[i].status_code == 400, (body, results[i].text)
        error = results[i].json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert error["param"] == param and error["message"], (body, error)
