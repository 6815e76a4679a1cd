"""Settings, logits processors, the sampler, beam search and stop strings, without a model."""

import math
import re

import numpy as np
import pytest

from edgellm.generation import sampling
from edgellm.generation.search import BeamSearch
from edgellm.folder.generation_config import GenerationConfig
from edgellm.generation.sampling import PROCESSORS, Sampler, SamplingState, build_processors, process
from edgellm.generation.stopping import TextTracker
from edgellm.tokenizer import Tokenizer


def state(rows=1, history=(), vocab=4, **settings):
    return SamplingState(GenerationConfig(**settings), [list(history)] * rows, vocab)


def row(x):
    return np.array([x], np.float64)  # (1, vocab)


def test_greedy_is_argmax_with_or_without_processors():
    logits = row([0.5, 3.0, -1.0, 2.9])
    assert Sampler(GenerationConfig(temperature=0), [0]).choose(logits, state(temperature=0)).tolist() == [1]
    s = state(history=[1], temperature=0, repetition_penalty=2.0)
    assert Sampler(s.config, [0]).choose(logits, s).tolist() == [3]  # 3.0 / 2 < 2.9


def test_temperature_scales_logits():
    assert sampling.temperature(row([1.0, 2.0]), state(temperature=0.5)).tolist() == [[2.0, 4.0]]


def test_top_k_keeps_k_best_and_tolerates_k_above_vocab():
    logits = row([1.0, 4.0, 3.0, 2.0])
    assert np.isfinite(sampling.top_k(logits, state(top_k=2))).tolist() == [[False, True, True, False]]
    assert np.array_equal(sampling.top_k(logits, state(top_k=10)), logits)
    assert np.isfinite(sampling.top_k(logits, state(top_k=1))).sum() == 1


def test_top_p_keeps_smallest_set_reaching_p():
    logits = np.log(row([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(sampling.top_p(logits, state(top_p=0.7))).tolist() == [[True, True, False, False]]
    assert np.isfinite(sampling.top_p(logits, state(top_p=0.01))).tolist() == [[True, False, False, False]]


def test_min_p_scales_with_the_top_token():
    logits = np.log(row([0.6, 0.3, 0.1]))
    assert np.isfinite(sampling.min_p(logits, state(min_p=0.25, vocab=3))).tolist() == [[True, True, False]]


def test_typical_p_keeps_tokens_near_the_entropy():
    # entropy of [0.4, 0.3, 0.2, 0.1] is 1.28 nats; surprises 0.92, 1.20, 1.61, 2.30: closest to
    # the entropy are token 1 (0.08 away), token 2 (0.33), token 0 (0.36), token 3 (1.02)
    logits = np.log(row([0.4, 0.3, 0.2, 0.1]))
    kept = np.isfinite(sampling.typical_p(logits, state(typical_p=0.45)))
    assert kept.tolist() == [[False, True, True, False]]  # 0.3, then 0.3 + 0.2 passes 0.45
    with_zero = row([0.0, 0.0, -np.inf, -np.inf])  # banned tokens must not give NaN
    assert np.isfinite(sampling.typical_p(with_zero, state(typical_p=0.9))).tolist() == [[True, True, False, False]]


def test_repetition_penalty_lowers_seen_tokens_of_either_sign():
    s = state(history=[0, 1], vocab=3, repetition_penalty=2.0)
    assert sampling.repetition_penalty(row([2.0, -2.0, 1.0]), s).tolist() == [[1.0, -4.0, 1.0]]


def test_repetition_penalty_on_every_token_still_picks_the_best():
    s = state(history=[0, 1, 2, 3], repetition_penalty=3.0, temperature=0)
    out = process(row([3.0, 1.0, -0.5, 0.3]), s, build_processors(s.config))
    assert np.isfinite(out).all() and int(out.argmax()) == 0


def test_presence_and_frequency_penalties_count_generated_tokens_only():
    s = state(history=[2], presence_penalty=1.0, frequency_penalty=0.5)
    s.append(np.array([0]))
    s.append(np.array([0]))
    s.append(np.array([1]))
    out = sampling.presence_frequency_penalty(row([0.0, 0.0, 0.0, 0.0]), s)
    assert out.tolist() == [[-2.0, -1.5, 0.0, 0.0]]  # the prompt's token 2 is not penalised


def test_no_repeat_ngram_bans_the_token_that_would_repeat():
    s = state(history=[1, 2, 3, 1], no_repeat_ngram_size=2)
    out = sampling.no_repeat_ngram(row([0.0, 0.0, 5.0, 0.0]), s)
    assert out[0, 2] == -np.inf and np.isfinite(out[0, [0, 1, 3]]).all()
    s.append(np.array([0]))  # (1, 0) is new; after 0 nothing is banned
    assert np.isfinite(sampling.no_repeat_ngram(row([0.0] * 4), s)).all()


def test_min_new_tokens_suppresses_stop_ids_then_lets_them_through():
    s = state(min_new_tokens=2, stop_token_ids=[3])
    assert sampling.min_new_tokens(row([0.0, 0.0, 0.0, 9.0]), s)[0, 3] == -np.inf
    s.append(np.array([0]))
    s.append(np.array([0]))
    assert sampling.min_new_tokens(row([0.0, 0.0, 0.0, 9.0]), s)[0, 3] == 9.0


def test_logit_bias_adds_and_bans():
    s = state(logit_bias={1: -math.inf, 2: 1.5})
    assert sampling.logit_bias(row([1.0, 1.0, 1.0, 1.0]), s).tolist() == [[1.0, -np.inf, 2.5, 1.0]]


def test_every_token_banned_falls_back_to_the_raw_logits():
    s = state(logit_bias={i: -math.inf for i in range(4)}, temperature=1.0, seed=0)
    token = Sampler(s.config, [0]).choose(row([0.0, 5.0, 0.0, 0.0]), s)
    assert token.tolist() == [1]  # a valid id, from the unbanned distribution (p(1) = 0.98)


def test_processors_run_in_the_documented_order():
    names = [p.__name__ for p, _, _ in PROCESSORS]
    assert names == ["repetition_penalty", "presence_frequency_penalty", "no_repeat_ngram", "logit_bias",
                     "min_new_tokens", "constraint", "temperature", "top_k", "top_p", "typical_p", "min_p"]
    config = GenerationConfig(temperature=0.5, top_k=3, min_p=0.1, repetition_penalty=1.2)
    assert [p.__name__ for p in build_processors(config)] == ["repetition_penalty", "temperature", "top_k", "min_p"]
    assert [p.__name__ for p in build_processors(config.replace(temperature=0))] == ["repetition_penalty"]


def test_same_seed_same_tokens_and_distribution_follows_probabilities():
    logits = np.log(np.array([[0.7, 0.2, 0.1]] * 2000))  # 2000 rows, one draw each
    config = GenerationConfig(temperature=1.0, seed=5)
    s = SamplingState(config, [[]] * 2000, 3)
    first = Sampler(config, list(range(2000))).choose(logits, s)
    assert first.tolist() == Sampler(config, list(range(2000))).choose(logits, s).tolist()
    freq = np.bincount(first, minlength=3) / 2000
    assert np.allclose(freq, [0.7, 0.2, 0.1], atol=0.04)


def test_a_rows_draw_depends_on_seed_and_sequence_number_not_on_its_batch():
    logits = np.zeros((1, 50))
    config = GenerationConfig(temperature=1.0, seed=11)
    alone = Sampler(config, [2]).choose(logits, SamplingState(config, [[]], 50))
    in_batch = Sampler(config, [0, 1, 2]).choose(np.zeros((3, 50)), SamplingState(config, [[]] * 3, 50))
    assert alone[0] == in_batch[2]


def test_beam_search_finds_the_likelier_sequence_that_greedy_misses():
    # token 1 looks best first (0.6 vs 0.4) but after it every continuation is flat;
    # after token 2 the next token is nearly certain: 0.4 * 0.95 beats 0.6 * 0.25
    vocab, stop = 4, 3
    def logits_for(history):
        last = history[-1]
        table = {0: [1e-9, 0.6, 0.4, 1e-9], 1: [0.25, 0.25, 0.25, 0.25], 2: [0.01, 0.02, 0.02, 0.95]}
        return np.log(np.array(table.get(last, [0.25] * 4)))
    config = GenerationConfig(num_beams=2, stop_token_ids=[stop], length_penalty=0.0, max_new_tokens=3)
    s = SamplingState(config, [[0], [0]], vocab)
    search = BeamSearch(s, [1], [3])
    while not search.done:
        search.step(np.stack([logits_for(h) for h in s.histories]), s)
    best = search.results(0, 2)
    assert best[0].token_ids == [2] and best[0].finish_reason == "eos"
    assert math.isclose(best[0].score, math.log(0.4 * 0.95), rel_tol=1e-6)
    assert best[0].score > best[1].score


def test_text_tracker_finds_stop_strings_across_tokens_and_holds_back_prefixes():
    tok = Tokenizer([bytes([b]) for b in range(256)])  # bytes only: one token per byte
    text = TextTracker(tok, ("END",))
    out = []
    for b in "abc EN".encode():
        text.push(b)
        out.append(text.take())
    assert "".join(out) == "abc "  # "EN" may be the start of "END": held back
    assert text.push(ord("D")) and text.text == "abc " and text.take() == ""
    multi = TextTracker(tok, ("\n\n",))
    pieces = [(multi.push(b), multi.take())[1] for b in "é\nx\n\ny".encode()]
    assert "".join(pieces) == "é\nx" and multi.stopped


def test_text_tracker_never_splits_a_character():
    tok = Tokenizer([bytes([b]) for b in range(256)])
    text = TextTracker(tok)
    pieces = []
    for b in "naïve 🙂".encode():
        text.push(b)
        pieces.append(text.take())
    text.finish()
    pieces.append(text.take())
    assert "".join(pieces) == "naïve 🙂"
    assert "ï" in pieces and "🙂" in pieces  # each character of several bytes arrives whole, in one piece


@pytest.mark.parametrize("setting", [{"top_p": 1.5}, {"top_p": 0}, {"temperature": -1}, {"max_new_tokens": 0},
                                     {"top_k": -1}, {"min_p": 1.0}, {"repetition_penalty": 0}, {"typical_p": 2},
                                     {"presence_penalty": 3}, {"num_beams": 0}, {"min_new_tokens": 500},
                                     {"truncate": "middle"}, {"seed": -1}, {"max_new_tokens": 2.5},
                                     # values the arithmetic cannot take: divisors that overflow float32
                                     # logits (subnormal or tiny), an exponent that overflows
                                     {"temperature": 1e-320}, {"temperature": 5e-324}, {"temperature": 1e-7},
                                     {"repetition_penalty": 1e-320}, {"repetition_penalty": 1e300},
                                     {"length_penalty": 1e300}, {"length_penalty": -1e300}])
def test_bad_settings_name_the_setting_and_value(setting):
    (name, value), = setting.items()
    with pytest.raises(ValueError, match=rf"^{name} .*Received: {name}={re.escape(repr(value))}"):
        GenerationConfig(**setting)


@pytest.mark.parametrize("setting, message", [
    ({"stop_strings": [""]}, "stop_strings must be non-empty"),
    ({"logit_bias": {"a": 1}}, "logit_bias token id must be an integer"),
    ({"logit_bias": {1: math.inf}}, "logit_bias must map"),
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences must be <= num_beams"),
    ({"temperature": 0, "num_return_sequences": 2}, "needs sampling"),
])
def test_bad_combinations_are_explained(setting, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**setting)


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="Unknown generation setting 'topp'"):
        GenerationConfig().replace(topp=0.5)


def test_config_round_trips_through_json_form():
    config = GenerationConfig(stop_strings=["\n\n"], logit_bias={5: -2.0}, stop_token_ids=[1, 1, 2])
    assert config.stop_token_ids == (1, 2)
    assert GenerationConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="^gen.json: top_k must be"):
        GenerationConfig.from_dict({"top_k": -3, "unknown_key": 1}, source="gen.json")
