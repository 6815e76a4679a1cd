"""The runtime on a real exported model: generation modes, batching, processors, scoring, threads."""

import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import edgellm
from edgellm.chat import Chat
from edgellm.generator import load
from tolerance import assert_float32_close, float32_atol, logit_scale

PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak.", "O", "What, ho!"]
GREEDY = dict(temperature=0.0, stop_token_ids=(), max_new_tokens=24)


@pytest.fixture(scope="module")
def model(tiny_folder):
    return load(tiny_folder, threads=1)


def reference_greedy(model, prompt, steps, penalise):
    """Greedy decoding by full recompute (no cache), with processors written out by hand."""
    ids = model.tokenizer.encode(prompt)
    out = []
    for _ in range(steps):
        seq = np.array([ids + out], np.int64)
        logits, _ = model.forward(seq, np.ones_like(seq), np.arange(seq.shape[1])[None], model.empty_past(1))
        out.append(int(np.argmax(penalise(logits[0, -1].astype(np.float64), ids, out))))
    return out


def test_result_stream_and_token_stream_agree(model):
    result = model.generate("ROMEO:", seed=3, max_new_tokens=20, stop_token_ids=())
    assert isinstance(result, edgellm.GenerationResult)
    assert len(result.token_ids) == 20 and result.finish_reason == "length"
    assert result.text == model.tokenizer.decode(result.token_ids)
    assert set(result.timings) >= {"prefill_ms", "decode_tokens_per_s", "prompt_tokens", "new_tokens"}
    assert result.timings["decode_tokens_per_s"] > 0
    assert "".join(model.stream("ROMEO:", seed=3, max_new_tokens=20, stop_token_ids=())) == result.text
    config = model.settings(seed=3, max_new_tokens=20, stop_token_ids=())
    assert list(model.token_stream(model.tokenizer.encode("ROMEO:"), config)) == result.token_ids
    assert model.generate("ROMEO:", config).token_ids == result.token_ids  # a GenerationConfig works too


def test_defaults_come_from_generation_config_json(model, tiny_folder):
    import json

    saved = json.loads((tiny_folder / "generation_config.json").read_text())
    assert saved["do_sample"] is True  # Hugging Face's names
    assert model.defaults.temperature == saved["temperature"] and model.defaults.top_k == saved["top_k"]
    assert model.defaults.stop_token_ids == (saved["eos_token_id"],)


def test_batched_rows_equal_single_prompts(model):
    alone = [model.generate(p, **GREEDY).token_ids for p in PROMPTS]
    together = [r.token_ids for r in model.generate(PROMPTS, **GREEDY)]
    assert together == alone
    sampled_alone = [model.generate(p, seed=7, max_new_tokens=16).text for p in PROMPTS]
    sampled_together = [r.text for r in model.generate(PROMPTS, seed=7, max_new_tokens=16)]
    assert sampled_together == sampled_alone


def test_cached_greedy_matches_full_recompute_with_penalties(model):
    bias = {5: 4.0, 101: -math.inf}

    def penalise(logits, prompt, out):
        seen = set(prompt + out)
        for t in seen:  # repetition penalty 1.3
            logits[t] = logits[t] / 1.3 if logits[t] > 0 else logits[t] * 1.3
        for t in set(out):  # presence 0.4 and frequency 0.3 over generated tokens
            logits[t] -= 0.4 + 0.3 * out.count(t)
        history = prompt + out  # no repeated 3-grams
        for i in range(len(history) - 2):
            if history[i:i + 2] == history[-2:]:
                logits[history[i + 2]] = -np.inf
        for t, b in bias.items():
            logits[t] += b
        return logits

    settings = dict(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.3, no_repeat_ngram_size=3,
                    logit_bias=bias)
    for prompt in PROMPTS[:2]:
        got = model.generate(prompt, **GREEDY, **settings).token_ids
        assert got == reference_greedy(model, prompt, GREEDY["max_new_tokens"], penalise)
        assert 101 not in got


def test_sampling_filters_through_the_model(model):
    greedy = model.generate("ROMEO:", **GREEDY).token_ids
    sampled = dict(temperature=1.0, stop_token_ids=(), max_new_tokens=24)
    assert model.generate("ROMEO:", seed=1, **sampled).token_ids != greedy
    for narrow in ({"top_k": 1}, {"top_p": 1e-6}, {"min_p": 0.9999}):
        for seed in (1, 2):
            assert model.generate("ROMEO:", seed=seed, **sampled, **narrow).token_ids == greedy, narrow
    typical = [model.generate("ROMEO:", seed=s, typical_p=1e-6, **sampled).token_ids for s in (1, 2)]
    assert typical[0] == typical[1]  # one token left at each step: the seed does not matter
    hot = model.generate("ROMEO:", seed=1, **{**sampled, "temperature": 5.0}).token_ids
    assert len(set(hot)) > len(set(greedy))


def test_seeds_and_return_sequences(model):
    three = model.generate("ROMEO:", seed=4, num_return_sequences=3, max_new_tokens=16, stop_token_ids=())
    assert len(three) == 3 and len({r.text for r in three}) == 3
    again = model.generate("ROMEO:", seed=4, num_return_sequences=3, max_new_tokens=16, stop_token_ids=())
    assert [r.text for r in again] == [r.text for r in three]
    assert model.generate("ROMEO:", seed=4, max_new_tokens=16, stop_token_ids=()).text == three[0].text
    assert model.generate("ROMEO:", seed=5, max_new_tokens=16, stop_token_ids=()).text != three[0].text
    batch = model.generate(["O", "ROMEO:"], seed=4, num_return_sequences=2, max_new_tokens=8)
    assert len(batch) == 2 and all(len(group) == 2 for group in batch)


def test_stop_strings_across_token_boundaries(model):
    greedy = model.generate("ROMEO:", **GREEDY)
    pieces = [model.tokenizer.decode([t]) for t in greedy.token_ids]
    # a stop string made of the end of one token and the start of the next
    i = next(i for i in range(3, len(pieces) - 1) if pieces[i] and pieces[i + 1])
    stop = pieces[i][-1] + pieces[i + 1][0]
    cut = greedy.text.index(stop)
    result = model.generate("ROMEO:", **GREEDY, stop_strings=[stop])
    assert result.finish_reason == "stop" and result.text == greedy.text[:cut] and stop not in result.text
    assert "".join(model.stream("ROMEO:", **GREEDY, stop_strings=[stop])) == greedy.text[:cut]


def test_stop_token_ids_and_min_new_tokens(model):
    greedy = model.generate("ROMEO:", **GREEDY).token_ids
    stop = greedy[3]
    first = greedy.index(stop)
    result = model.generate("ROMEO:", **{**GREEDY, "stop_token_ids": [stop]})
    assert result.finish_reason == "eos" and result.token_ids == greedy[:first]
    later = model.generate("ROMEO:", **{**GREEDY, "stop_token_ids": [stop], "min_new_tokens": first + 1})
    assert stop not in later.token_ids[:first + 1] and later.token_ids[:first] == greedy[:first]


def test_context_limit_and_truncation(model):
    context = model.config.context_length
    long = model.generate("ROMEO:", **{**GREEDY, "max_new_tokens": 500})
    assert long.finish_reason == "length"
    assert len(model.tokenizer.encode("ROMEO:")) + len(long.token_ids) == context
    text = "To be, or not to be, that is the question. " * 20
    with pytest.raises(ValueError, match=r"context is 64 tokens.*truncate='left'"):
        model.generate(text, **GREEDY)
    kept = model.generate(text, **{**GREEDY, "max_new_tokens": 10}, truncate="left")
    assert len(kept.token_ids) == 10 and kept.timings["prompt_tokens"] == context - 10
    batch = model.generate(["O", text], **GREEDY, truncate="left")
    assert batch[0].token_ids == model.generate("O", **GREEDY).token_ids


def test_beam_search(model):
    beams = model.generate("ROMEO:", num_beams=4, num_return_sequences=3, length_penalty=0.0, max_new_tokens=10,
                           stop_token_ids=())
    assert len(beams) == 3 and [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)
    ids = model.tokenizer.encode("ROMEO:")

    def logprob(new):
        seq = np.array([ids + new], np.int64)
        logits, _ = model.forward(seq, np.ones_like(seq), np.arange(seq.shape[1])[None], model.empty_past(1))
        logp = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
        return float(sum(logp[len(ids) - 1 + i, t] for i, t in enumerate(new)))

    for beam in beams:  # with length_penalty 0 the score is the sequence's log-probability
        # a sum of len(token_ids) log-probabilities, each computed step by step and here at once
        atol = len(beam.token_ids) * float32_atol(model.config, 2 * logit_scale(model, ids + beam.token_ids))
        assert beam.finish_reason == "length" and math.isclose(beam.score, logprob(beam.token_ids), abs_tol=atol)
    greedy = model.generate("ROMEO:", **{**GREEDY, "max_new_tokens": 10}).token_ids
    assert beams[0].score >= logprob(greedy) - len(greedy) * float32_atol(model.config, 2 * logit_scale(model, ids + greedy))
    together = model.generate(["O", "ROMEO:"], num_beams=4, length_penalty=0.0, max_new_tokens=10,
                              stop_token_ids=())
    assert together[1].token_ids == beams[0].token_ids
    for settings in (dict(num_beams=2), dict(num_return_sequences=2, temperature=1.0)):  # refused, never dropped
        with pytest.raises(ValueError, match="Streaming generates one sequence"):
            list(model.stream("ROMEO:", **settings))
        with pytest.raises(ValueError, match="Streaming generates one sequence"):
            list(model.text_steps(ids, model.settings(**settings)))
        with pytest.raises(ValueError, match="A chat reply is one sampled or greedy sequence"):
            Chat(model, **settings)


def test_in_place_and_concat_caches_give_the_same_tokens(tiny_folder, tiny_concat_folder):
    """Both graph layouts, and the Concat cache kept in OrtValues through IO binding (the path a
    GPU takes), run on the CPU: greedy batches, beams and sampling agree token for token."""
    in_place, concat, bound = load(tiny_folder), load(tiny_concat_folder), load(tiny_concat_folder)
    assert (in_place.session.kv_cache, concat.session.kv_cache) == ("in_place", "concat")
    bound.session.bind_cache = True
    for settings in (GREEDY, dict(num_beams=3, max_new_tokens=8, stop_token_ids=()),
                     dict(temperature=0.9, top_k=40, seed=3, max_new_tokens=12)):
        expected = [r.token_ids for r in concat.generate(PROMPTS, **settings)]
        assert [r.token_ids for r in in_place.generate(PROMPTS, **settings)] == expected
        assert [r.token_ids for r in bound.generate(PROMPTS, **settings)] == expected


def test_a_mask_as_wide_as_the_cache_gives_the_logits_of_a_mask_as_wide_as_the_filled_part(tiny_folder):
    """The in-place graph reads each row's filled length from its mask's last 1: the runtime's
    capacity-wide mask (fixed shape) and onnxruntime-genai's growing one give the same logits,
    with left padding."""
    wide, growing = load(tiny_folder, threads=1), load(tiny_folder, threads=1)
    assert wide.session.capacity_mask
    growing.session.capacity_mask = False  # bind the mask of the filled positions each step
    prompts = [wide.tokenizer.encode(p) for p in ("ROMEO:", "First Citizen:\nBefore we proceed")]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts], np.int64)
    mask = (np.arange(width) >= np.array([[width - len(p)] for p in prompts])).astype(np.int64)
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    runs = [m.session.new_run(2, width + 6) for m in (wide, growing)]
    logits = [r.start(ids, mask, positions) for r in runs]
    for _ in range(6):
        assert_float32_close(wide.config, logits[1], logits[0])
        tokens = logits[0].argmax(-1)
        logits = [r.advance(tokens).copy() for r in runs]
    assert_float32_close(wide.config, logits[1], logits[0])


def test_score_matches_the_model_and_slides_over_long_text(model):
    text = "ROMEO: What, ho! Good morrow, cousin."
    ids = model.tokenizer.encode(text)
    seq = np.array([ids], np.int64)
    logits, _ = model.forward(seq, np.ones_like(seq), np.arange(len(ids))[None], model.empty_past(1))
    logp = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
    result = model.score(text)
    assert_float32_close(model.config, result.logprobs, [logp[i, ids[i + 1]] for i in range(len(ids) - 1)],
                         scale=2 * np.abs(logits).max())
    assert math.isclose(result.perplexity, math.exp(-np.mean(result.logprobs)))
    long = model.score("Now is the winter of our discontent made glorious summer. " * 30)
    assert len(long.logprobs) == len(long.token_ids) - 1 > 3 * model.config.context_length
    assert all(lp <= 0 for lp in long.logprobs)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        model.score("a")


def test_one_model_serves_several_threads(model):
    expected = {p: model.generate(p, **GREEDY).token_ids for p in PROMPTS}
    got, errors = {}, []

    def work(i):
        try:
            prompt = PROMPTS[i % len(PROMPTS)]
            got[i] = (prompt, model.generate(prompt, **GREEDY).token_ids,
                      "".join(model.stream(prompt, seed=i, max_new_tokens=8)))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 8
    assert all(ids == expected[prompt] for prompt, ids, _ in got.values())


class ScriptedBytes(edgellm.Generator):
    """The real model and loop, with each decode step's logits pushed toward the next byte of
    `script` (ids 0-255 are the bytes), so the generation holds characters split across tokens."""

    script = list("naïve 🙂 日本".encode())
    calls = 0

    def step(self, run, tokens):
        logits = super().step(run, tokens).copy()
        logits[:, self.script[self.calls % len(self.script)]] += 1e4
        self.calls += 1
        return logits


def test_stream_never_breaks_a_character(tiny_folder):
    """Streamed pieces are whole characters: a character split across tokens arrives in one
    piece (decoding each token alone would put U+FFFD there), and the pieces join to the text."""
    model = ScriptedBytes(tiny_folder)
    settings = dict(temperature=0, max_new_tokens=len(ScriptedBytes.script) + 1, stop_token_ids=())
    model.calls = 0
    ids = model.generate("ROMEO:", **settings).token_ids
    model.calls = 0
    pieces = list(model.stream("ROMEO:", **settings))
    text = model.tokenizer.decode(ids)
    assert "".join(pieces) == text and text.endswith("naïve 🙂 日本")
    assert "🙂" in pieces and "\ufffd" not in text


def test_bad_arguments_are_explained(model):
    for call, message in [
        (lambda: model.generate(""), "The prompt is empty"),
        (lambda: model.generate([]), "No prompts given"),
        (lambda: model.generate("hi", top_p=1.5), r"top_p must be in \(0, 1\]. Received: top_p=1.5"),
        (lambda: model.generate("hi", temperature=-1), r"temperature must be 0 \(greedy\) or at least 1e-06"),
        (lambda: model.generate("hi", max_new_tokens=0), "max_new_tokens must be at least 1"),
        (lambda: model.generate("hi", stop_token_ids=[100000]), "below the vocabulary size 384"),
        (lambda: model.generate("hi", topk=3), "Unknown generation setting 'topk'"),
        (lambda: model.generate(5), "A prompt must be a string"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


def test_attention_cache_bench_runs_and_the_in_place_cache_agrees_with_concat():
    bench = Path(__file__).parent.parent / "bench" / "attention_cache.py"
    result = subprocess.run([sys.executable, bench, "--repeats", "3"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr  # it asserts that both caches give the same output


def test_beam_search_cuts_at_stop_strings_like_sampling(model):
    """Beams find stop strings with the same incremental tracker as sampled rows: a stop-string
    hypothesis ends just before its first stop string; no other hypothesis holds one."""
    plain = model.generate("ROMEO:", num_beams=3, num_return_sequences=3, max_new_tokens=16, stop_token_ids=())
    stop = plain[0].text[4:6]  # two characters the best beam writes, so the search meets them
    found = model.generate("ROMEO:", num_beams=3, num_return_sequences=3, max_new_tokens=16, stop_token_ids=(),
                           stop_strings=(stop,))
    assert any(h.finish_reason == "stop" for h in found)
    for h in found:
        full = model.tokenizer.decode(h.token_ids)
        assert stop not in h.text
        if h.finish_reason == "stop":
            assert full.find(stop) == len(h.text) and full.startswith(h.text)
        else:
            assert stop not in full


def test_a_batch_runs_past_a_row_that_the_context_ends(model):
    """A long prompt's row ends at the context while a short one goes on: each row gets what it
    gets alone."""
    long = "First Citizen:\nBefore we proceed any further, hear me speak. "
    assert 30 < len(model.encode_prompt(long)) < 60
    settings = dict(temperature=0, max_new_tokens=40, stop_token_ids=())
    together = model.generate([long, "O"], **settings)
    assert [r.token_ids for r in together] == [model.generate(p, **settings).token_ids for p in (long, "O")]
    assert together[0].finish_reason == "length" and len(together[1].token_ids) == 40
