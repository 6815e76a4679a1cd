"""Logits processors and the sampler, without a model."""

import numpy as np
import pytest

from edgellm.sampling import GenerationConfig, SamplingState, min_p, next_token, repetition_penalty, top_k, top_p


def state(**settings):
    return SamplingState(GenerationConfig(**settings), [])


def test_greedy_is_argmax():
    logits = np.array([0.5, 3.0, -1.0, 2.9])
    assert next_token(logits, state(temperature=0.0), np.random.default_rng(0)) == 1


def test_top_k_keeps_k_best_and_tolerates_k_above_vocab():
    logits = np.array([1.0, 4.0, 3.0, 2.0])
    kept = top_k(logits, state(top_k=2))
    assert np.isfinite(kept).tolist() == [False, True, True, False]
    assert np.array_equal(top_k(logits, state(top_k=10)), logits)


def test_top_p_keeps_smallest_set_reaching_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert np.isfinite(top_p(logits, state(top_p=0.7))).tolist() == [True, True, False, False]
    assert np.isfinite(top_p(logits, state(top_p=0.01))).tolist() == [True, False, False, False]


def test_min_p_scales_with_the_top_token():
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    assert np.isfinite(min_p(logits, state(min_p=0.25))).tolist() == [True, True, False]


def test_repetition_penalty_lowers_seen_tokens_of_either_sign():
    s = SamplingState(GenerationConfig(repetition_penalty=2.0), [0, 1])
    assert repetition_penalty(np.array([2.0, -2.0, 1.0]), s).tolist() == [1.0, -4.0, 1.0]


def test_same_seed_same_tokens_and_distribution_follows_probabilities():
    logits = np.log(np.array([0.7, 0.2, 0.1]))
    s = state(temperature=1.0)
    draws = lambda seed: [next_token(logits, s, rng) for rng in [np.random.default_rng(seed)] for _ in range(2000)]
    first = draws(5)
    assert first == draws(5)
    freq = np.bincount(first, minlength=3) / 2000
    assert np.allclose(freq, [0.7, 0.2, 0.1], atol=0.04)


@pytest.mark.parametrize("setting", [{"top_p": 1.5}, {"top_p": 0}, {"temperature": -1}, {"max_new_tokens": 0},
                                     {"top_k": -1}, {"min_p": 1.0}, {"repetition_penalty": 0}])
def test_bad_settings_name_the_setting_and_value(setting):
    (name, value), = setting.items()
    with pytest.raises(ValueError, match=rf"^{name} .*Received: {name}={value}"):
        GenerationConfig(**setting)


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="Unknown generation setting 'topp'"):
        GenerationConfig().replace(topp=0.5)
