"""The continuous batch: rows that join and leave one KV cache decode as they would alone, and
concurrent requests over HTTP (the official openai client) each get the library's own result
while sharing model calls. The tiny float32 folder: its rows' numbers do not depend on the batch."""

import threading
import time

import httpx
import numpy as np
import openai
import pytest

import edgellm
from edgellm.generation import constraints
from edgellm.generator import Generator
from edgellm.session.slots import SlotRun
from serving import SlowGenerator, running
from tolerance import assert_float32_close


@pytest.fixture(scope="module")
def model(tiny_folder):
    return edgellm.load(tiny_folder, threads=1)


def alone(model, prompt_ids, steps):
    """Greedy logits of one prompt in a run of its own: [prefill, after token 1, ...]."""
    run = model.session.new_run(1, len(prompt_ids) + steps + 1)
    logits = [run.start(np.array([prompt_ids]), np.ones((1, len(prompt_ids)), np.int64),
                        np.arange(len(prompt_ids))[None])[0].copy()]
    for _ in range(steps):
        logits.append(run.advance(np.array([int(logits[-1].argmax())]))[0].copy())
    return logits


def test_rows_that_join_and_leave_decode_as_they_would_alone(model):
    prompts = [model.tokenizer.encode(p) for p in ("ROMEO:", "JULIET: O Romeo, Romeo", "First Citizen:\nBefore")]
    joins, lengths = {0: 0, 1: 3, 2: 5}, {0: 8, 1: 20, 2: 16}  # the step each row joins at, its new tokens
    expected = [alone(model, p, lengths[i]) for i, p in enumerate(prompts)]
    run, slot, got = SlotRun(model.session, 3), {}, {i: [] for i in range(3)}
    for step in range(40):
        for i, at in joins.items():
            if at == step:
                slot[i], logits = run.add(prompts[i])
                got[i].append(logits.copy())
        for i in [i for i in slot if len(got[i]) > lengths[i]]:  # done: leaves, the last row takes its slot
            freed = slot.pop(i)
            moved = run.remove(freed)
            slot.update({j: freed for j, s in slot.items() if s == moved})
        if not slot:
            break
        order = sorted(slot, key=slot.get)
        logits = run.advance(np.array([int(got[i][-1].argmax()) for i in order]))
        for row, i in enumerate(order):
            got[i].append(logits[row].copy())
    for i in range(3):
        assert len(got[i]) == lengths[i] + 1
        assert_float32_close(model.config, got[i], expected[i])


REQUESTS = [  # (request fields, library settings); every one a different kind of setting
    ({"prompt": "ROMEO:", "max_tokens": 24, "temperature": 0}, {"temperature": 0}),
    ({"prompt": "JULIET:", "max_tokens": 20, "temperature": 0.9, "seed": 3}, {"temperature": 0.9, "seed": 3}),
    ({"prompt": "First Citizen:", "max_tokens": 30, "temperature": 0.7, "top_p": 0.8, "seed": 11,
      "presence_penalty": 1.5}, {"temperature": 0.7, "top_p": 0.8, "seed": 11, "presence_penalty": 1.5}),
    ({"prompt": "MENENIUS:", "max_tokens": 28, "temperature": 0, "stop": ["e"]},
     {"temperature": 0, "stop_strings": ("e",)}),
    ({"prompt": "KING:", "max_tokens": 12, "temperature": 0, "logit_bias": {"5": 100}},
     {"temperature": 0, "logit_bias": {5: 100.0}}),
    ({"prompt": "To be", "max_tokens": 16, "temperature": 1.0, "seed": 5, "n": 2},
     {"temperature": 1.0, "seed": 5, "num_return_sequences": 2}),
    ({"prompt": "O, what", "max_tokens": 9, "temperature": 0.8, "seed": 8, "frequency_penalty": 1.0},
     {"temperature": 0.8, "seed": 8, "frequency_penalty": 1.0}),
    # the same sampling settings as others above: chosen in one call with them, each its own draws
    ({"prompt": "HAMLET:", "max_tokens": 18, "temperature": 0.9, "seed": 4}, {"temperature": 0.9, "seed": 4}),
    ({"prompt": "Now is", "max_tokens": 14, "temperature": 1.0, "seed": 6}, {"temperature": 1.0, "seed": 6}),
    ({"prompt": "Good", "max_tokens": 22, "temperature": 0}, {"temperature": 0}),
]


def library_texts(model, body, settings):
    results = model.generate(body["prompt"], max_new_tokens=body["max_tokens"], **settings)
    return [r.text for r in (results if isinstance(results, list) else [results])]


def test_concurrent_requests_each_get_their_own_result_in_shared_steps(tiny_folder, model):
    counting = SlowGenerator(tiny_folder, threads=1)
    counting.delay = 0.01  # keeps every request in flight while the others join
    pattern = r"(Yes|No), [a-z]{3,8}\."
    expected = [library_texts(model, body, settings) for body, settings in REQUESTS]
    expected_regex = model.generate("Answer:", max_new_tokens=20, temperature=0,
                                    constraint=constraints.regex(pattern)).text
    results, failures = {}, []
    with running(counting, max_concurrency=16) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        def call(i, body):
            try:
                time.sleep(0.02 * i)  # they join a batch already running
                fields = {k: v for k, v in body.items() if k not in ("prompt", "max_tokens", "n", "stop")}
                if i % 2:  # streamed: joined per choice
                    texts = [""] * body.get("n", 1)
                    for chunk in client.completions.create(model="tiny", prompt=body["prompt"], stream=True,
                                                           max_tokens=body["max_tokens"], n=body.get("n", 1),
                                                           stop=body.get("stop"), extra_body=fields):
                        for choice in chunk.choices:
                            texts[choice.index] += choice.text
                    results[i] = texts
                else:
                    reply = client.completions.create(model="tiny", prompt=body["prompt"], n=body.get("n", 1),
                                                      max_tokens=body["max_tokens"], stop=body.get("stop"),
                                                      extra_body=fields)
                    results[i] = [c.text for c in sorted(reply.choices, key=lambda c: c.index)]
            except Exception as error:  # reported below, with the request
                failures.append((body, error))

        def call_regex():
            reply = client.completions.create(model="tiny", prompt="Answer:", max_tokens=20, temperature=0,
                                              extra_body={"response_format": {"type": "regex", "regex": pattern}})
            results["regex"] = reply.choices[0].text

        threads = [threading.Thread(target=call, args=(i, body)) for i, (body, _) in enumerate(REQUESTS)]
        threads.append(threading.Thread(target=call_regex))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures, failures
    for i, texts in enumerate(expected):
        assert results[i] == texts, REQUESTS[i][0]
    assert results["regex"] == expected_regex
    # one step runs every row: far fewer model calls than tokens (one per token without the batch)
    tokens = sum(body["max_tokens"] * body.get("n", 1) for body, _ in REQUESTS)
    assert counting.forwards < tokens / 2, (counting.forwards, tokens)


def test_a_client_that_leaves_frees_its_row_and_the_others_go_on(tiny_folder, model):
    counting = SlowGenerator(tiny_folder, threads=1)
    counting.delay = 0.02
    body = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 40, "temperature": 0}
    kept = {}
    with running(counting, max_concurrency=2) as url:
        def stays():
            kept["reply"] = httpx.post(url + "/v1/completions", json=body, timeout=60).json()

        staying = threading.Thread(target=stays)
        staying.start()
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as response:
            events = (line for line in response.iter_lines() if line)
            for _ in range(3):
                assert next(events).startswith("data: ")
        deadline = time.monotonic() + 5
        while httpx.get(url + "/health").json()["running"] != 1:  # the one that left is out of the batch
            assert time.monotonic() < deadline, "the disconnected request kept its row"
            time.sleep(0.02)
        staying.join()
        assert httpx.get(url + "/health").json()["running"] == 0
    assert kept["reply"]["choices"][0]["text"] == model.generate("ROMEO:", max_new_tokens=40, temperature=0).text


def test_64_clients_at_once_all_get_answers(model):
    with running(model) as url:  # the defaults: 32 rows decoding, 64 waiting
        assert httpx.get(url + "/health").json()["batching"] == "continuous"
        replies = [None] * 64

        def call(i):
            replies[i] = httpx.post(url + "/v1/completions", timeout=120,
                                    json={"prompt": "ROMEO:", "max_tokens": 6, "temperature": 0.8, "seed": i})

        threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r.status_code for r in replies] == [200] * 64
    texts = {r.json()["choices"][0]["text"] for r in replies}
    assert replies[7].json()["choices"][0]["text"] == model.generate("ROMEO:", max_new_tokens=6, temperature=0.8,
                                                                       seed=7).text and len(texts) > 1


def test_a_concat_folder_serves_each_request_in_a_thread(tiny_concat_folder):
    concat = edgellm.load(tiny_concat_folder, threads=1)
    with running(concat) as url:
        health = httpx.get(url + "/health").json()
        reply = httpx.post(url + "/v1/completions", timeout=60,
                           json={"prompt": "ROMEO:", "max_tokens": 10, "temperature": 0}).json()
    assert health["batching"] == "off" and health["max_concurrency"] == 2
    assert reply["choices"][0]["text"] == concat.generate("ROMEO:", max_new_tokens=10, temperature=0).text


def test_a_failing_model_step_fails_its_requests_and_the_server_goes_on(tiny_folder, model):
    class FailingOnce(Generator):
        failed = False

        def step(self, *args):
            if not self.failed:
                self.failed = True
                raise RuntimeError("the model call failed")
            return super().step(*args)

    with running(FailingOnce(tiny_folder, threads=1)) as url:
        body = {"prompt": "ROMEO:", "max_tokens": 8, "temperature": 0}
        first = httpx.post(url + "/v1/completions", json=body, timeout=60)
        second = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert first.status_code == 500 and "the model call failed" in first.json()["error"]["message"]
    assert second.status_code == 200
    assert second.json()["choices"][0]["text"] == model.generate("ROMEO:", max_new_tokens=8, temperature=0).text


def test_a_client_that_leaves_while_waiting_gives_up_its_place(tiny_folder):
    counting = SlowGenerator(tiny_folder, threads=1)
    counting.delay = 0.05
    body = {"model": "tiny", "prompt": "ROMEO:", "max_tokens": 50, "temperature": 0}
    with running(counting, max_concurrency=1, queue_size=1) as url:
        first = threading.Thread(target=lambda: httpx.post(url + "/v1/completions", json=body, timeout=60))
        first.start()
        deadline = time.monotonic() + 5
        while httpx.get(url + "/health").json()["running"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}) as response:
            assert response.status_code == 200 and httpx.get(url + "/health").json()["queued"] == 1
        while httpx.get(url + "/health").json()["queued"] != 0:  # gone from the queue, not after the first
            assert time.monotonic() < deadline, "the request that left kept its place in the queue"
            time.sleep(0.02)
        assert httpx.get(url + "/health").json()["running"] == 1  # the first one still decoding
        first.join()
