"""Block-wise int8 and int4 folders: a row's logits do not depend on the rows beside it.

MatMulNBits quantizes each row's activations by itself (accuracy_level 4) and GroupQueryAttention
reads each row's own cache length, so a row computes the same operations on the same numbers
alone or in a batch. The logits must then be equal, not close: 1e-6 leaves room for nothing but
equal floats at these magnitudes (logits of order 10). The server's batch (SlotRun: rows that join
and leave, each at its own length) and a run of equal-length rows are checked; left-padded rows are
not the same computation (the pads are keys that attention reads with weight zero).
"""

import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import edgellm
from edgellm.session.slots import SlotRun
from serving import SlowGenerator, running

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def model(tiny_blockwise_folder):
    return edgellm.load(tiny_blockwise_folder, threads=1)


def alone(model, prompt, tokens):
    """Logits of `prompt` in a run of its own, then after each of `tokens`: (1 + len(tokens), vocab)."""
    run = model.session.new_run(1, len(prompt) + len(tokens) + 1)
    out = [run.start(np.array([prompt]), np.ones((1, len(prompt)), np.int64), np.arange(len(prompt))[None])[0].copy()]
    out += [run.advance(np.array([t]))[0].copy() for t in tokens]
    return np.array(out)


rows = st.lists(st.tuples(st.lists(st.integers(0, 383), min_size=1, max_size=24),  # prompt ids
                          st.integers(0, 4),  # the step it joins at
                          st.lists(st.integers(0, 383), min_size=1, max_size=8)),  # the tokens it is fed
                min_size=2, max_size=6)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, width=st.sampled_from([1, 8, 256]))
def test_a_row_in_the_servers_batch_gets_its_logits_alone(model, rows, width):
    """Also while the run's cache widens (from `width` positions a row, doubling as rows grow)."""
    run, slot, got = SlotRun(model.session, len(rows), width), {}, {i: [] for i in range(len(rows))}
    for step in range(16):
        for i, (prompt, at, _) in enumerate(rows):
            if at == step:
                slot[i], logits = run.add(prompt)
                got[i].append(logits.copy())
        for i in [i for i in slot if len(got[i]) > len(rows[i][2])]:  # done: leaves, the last row takes its slot
            freed = slot.pop(i)
            moved = run.remove(freed)
            slot.update({j: freed for j, s in slot.items() if s == moved})
        order = sorted(slot, key=slot.get)
        if order:
            logits = run.advance(np.array([rows[i][2][len(got[i]) - 1] for i in order]))
            for r, i in enumerate(order):
                got[i].append(logits[r].copy())
    for i, (prompt, _, tokens) in enumerate(rows):
        expected = alone(model, prompt, tokens)
        assert np.abs(np.array(got[i]) - expected).max() <= TOLERANCE, (i, rows)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(1, 24), batch=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_rows_of_one_length_run_together_get_their_logits_alone(model, length, batch, seed):
    ids = np.random.default_rng(seed).integers(0, 384, (batch, length))
    run = model.session.new_run(batch, length + 1)
    logits = run.start(ids, np.ones_like(ids), np.tile(np.arange(length), (batch, 1)))
    for row in range(batch):
        assert np.abs(logits[row] - alone(model, list(ids[row]), [])[0]).max() <= TOLERANCE


def test_seeded_requests_give_the_librarys_text_alone_and_under_load(tiny_blockwise_folder, model):
    """16 clients at once, each with its own seed and settings, get `generate`'s text alone."""
    prompts = ["ROMEO:", "JULIET: O", "First Citizen:", "KING:", "To be", "HAMLET:", "Now is", "Good",
               "O, what", "MENENIUS:", "All:", "Second Citizen:\nWould", "Nay", "Come, come", "What", "I"]
    bodies = [{"prompt": p, "max_tokens": 12 + i % 5, "temperature": 0.6 + 0.05 * i, "seed": i, "top_p": 0.95}
              for i, p in enumerate(prompts)]
    expected = [model.generate(b["prompt"], max_new_tokens=b["max_tokens"], temperature=b["temperature"],
                               seed=b["seed"], top_p=b["top_p"]).text for b in bodies]
    slow = SlowGenerator(tiny_blockwise_folder, threads=1)
    slow.delay = 0.01  # keeps the requests in flight together
    replies = [None] * len(bodies)
    with running(slow, max_concurrency=16) as url:
        alone_reply = httpx.post(url + "/v1/completions", json=bodies[0], timeout=60).json()
        forwards_alone = slow.forwards

        def call(i):
            time.sleep(0.005 * i)  # they join a batch already running
            replies[i] = httpx.post(url + "/v1/completions", json=bodies[i], timeout=120).json()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert alone_reply["choices"][0]["text"] == expected[0]
    assert [r["choices"][0]["text"] for r in replies] == expected
    tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    assert slow.forwards - forwards_alone < tokens / 2  # they shared steps: the batch was busy
