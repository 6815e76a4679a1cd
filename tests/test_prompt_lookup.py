"""Prompt-lookup decoding on real exported models: the same output as plain decoding, on both
KV-cache layouts, at batch 1 and in batches, with every way a generation ends; streaming, the
server and the CLI; refusals."""

import itertools
import json
import shutil

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

import edgellm
from edgellm.cli import main
from edgellm.folder.generation_config import GenerationConfig
from edgellm.generator import Generator
from edgellm.generation.prompt_lookup import find_draft
from serving import running
from tolerance import assert_float32_close

PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak.", "O", "What, ho! the king, the king!"]
GREEDY = dict(temperature=0.0, stop_token_ids=(), max_new_tokens=28)  # the longest prompt + 28 fit the context


@pytest.fixture(scope="module", params=["in_place", "concat"])
def model(request, tiny_folder, tiny_concat_folder):
    folder = tiny_folder if request.param == "in_place" else tiny_concat_folder
    loaded = edgellm.load(folder, threads=1)
    assert loaded.folder.kv_cache == request.param
    return loaded


def drafted(results) -> tuple[int, int]:
    return (sum(r.timings["draft_tokens"] for r in results), sum(r.timings["accepted_draft_tokens"] for r in results))


def test_find_draft_takes_what_followed_the_latest_earlier_match():
    assert find_draft([1, 2, 3, 9, 1, 2, 4, 7, 1, 2], 2) == [4, 7]  # the bigram (1, 2), latest first
    assert find_draft([5, 6, 1, 8, 2, 1], 3) == [8, 2, 1]  # no earlier (2, 1): the unigram 1
    assert find_draft([5, 6, 7, 1], 3) == []
    assert find_draft([4, 4], 5) == [4]
    assert find_draft([3], 5) == [] and find_draft([], 5) == []


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_output_is_plain_greedy(model, k):
    plain = [model.generate(p, **GREEDY) for p in PROMPTS]
    found = [model.generate(p, **GREEDY, prompt_lookup_num_tokens=k) for p in PROMPTS]
    assert [r.token_ids for r in found] == [r.token_ids for r in plain]
    assert [r.text for r in found] == [r.text for r in plain]
    tried, kept = drafted(found)
    assert 0 < kept < tried  # drafts were both kept and rolled back


class Recording(Generator):
    """The real model, keeping the logits of every decode step the loop is handed."""

    def step(self, run, tokens):
        logits = super().step(run, tokens)
        self.seen.append(logits.copy())
        return logits


@pytest.mark.parametrize("prompts", [PROMPTS[3], PROMPTS])
def test_every_step_gets_the_plain_logits(model, prompts):
    # stronger than equal argmaxes, which a barely trained model keeps even for a wrong context
    recording = Recording(model.folder.path, threads=1)
    runs = []
    for k in (0, 4):
        recording.seen = []
        results = recording.generate(prompts, **GREEDY, prompt_lookup_num_tokens=k)
        runs.append(np.stack(recording.seen))  # (steps, rows, vocab)
    assert runs[0].shape == runs[1].shape
    assert_float32_close(model.config, runs[1], runs[0])
    assert drafted(_list(results))[1] > 0


def test_batches_give_each_row_its_plain_greedy(model):
    plain = model.generate(PROMPTS, **GREEDY)
    found = model.generate(PROMPTS, **GREEDY, prompt_lookup_num_tokens=4)
    assert [r.token_ids for r in found] == [r.token_ids for r in plain]
    assert 0 < found[0].timings["accepted_draft_tokens"]


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_max_new_tokens_limits(model, limit):
    settings = {**GREEDY, "max_new_tokens": limit}
    for prompts in (PROMPTS[0], PROMPTS):
        plain = model.generate(prompts, **settings)
        found = model.generate(prompts, **settings, prompt_lookup_num_tokens=5)
        assert [r.token_ids for r in _list(found)] == [r.token_ids for r in _list(plain)]
        assert all(len(r.token_ids) == limit and r.finish_reason == "length" for r in _list(found))


def test_the_context_limit(model):
    prompt = " ".join(["the king"] * 40)  # most of the 64-token context
    settings = {**GREEDY, "max_new_tokens": 64, "truncate": "left"}
    plain = model.generate(prompt, **settings)
    found = model.generate(prompt, **settings, prompt_lookup_num_tokens=8)
    assert found.token_ids == plain.token_ids and found.finish_reason == "length"


def test_stop_token_ids_and_stop_strings(model):
    plain = [model.generate(p, **GREEDY) for p in PROMPTS]
    # stop at tokens and at text the plain output reaches midway, so drafts run past the end
    for prompt, result in zip(PROMPTS, plain):
        middle = result.token_ids[len(result.token_ids) // 2]
        text = result.text[len(result.text) // 2:][:3]
        for settings in ({"stop_token_ids": (middle,)}, {"stop_strings": (text,)},
                         {"stop_strings": (text,), "stop_token_ids": (middle,)}):
            expected = model.generate(prompt, **{**GREEDY, **settings})
            got = model.generate(prompt, **{**GREEDY, **settings}, prompt_lookup_num_tokens=4)
            assert (got.token_ids, got.text, got.finish_reason) == \
                (expected.token_ids, expected.text, expected.finish_reason)
            assert expected.finish_reason in ("eos", "stop")
    batch = dict(GREEDY, stop_strings=("\n",), stop_token_ids=(plain[0].token_ids[5],))
    assert [r.token_ids for r in model.generate(PROMPTS, **batch, prompt_lookup_num_tokens=3)] == \
        [r.token_ids for r in model.generate(PROMPTS, **batch)]


def test_seeded_sampling_draws_the_same_tokens(model):
    # each token is drawn from the model's own distribution with the same random number
    settings = dict(temperature=0.7, top_k=20, repetition_penalty=1.1, max_new_tokens=28, stop_token_ids=())
    for seed in (1, 2):
        plain = model.generate(PROMPTS, **settings, seed=seed)
        found = model.generate(PROMPTS, **settings, seed=seed, prompt_lookup_num_tokens=3)
        assert [r.token_ids for r in found] == [r.token_ids for r in plain]
    several = dict(settings, seed=5, num_return_sequences=3)
    assert [r.token_ids for r in model.generate("ROMEO:", **several, prompt_lookup_num_tokens=3)] == \
        [r.token_ids for r in model.generate("ROMEO:", **several)]


def test_streamed_pieces_are_plain_greedy_pieces(model):
    for prompt in PROMPTS:
        settings = dict(GREEDY, stop_strings=("\n\n",))
        plain = list(model.stream(prompt, **settings))
        timings = {}
        assert list(model.stream(prompt, **settings, prompt_lookup_num_tokens=4, timings=timings)) == plain
        assert "draft_tokens" in timings
        assert list(model.token_stream(model.encode_prompt(prompt), model.settings(**GREEDY,
                                       prompt_lookup_num_tokens=4))) == model.generate(prompt, **GREEDY).token_ids


def test_beam_search_is_refused_or_turns_a_default_off():
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens works with greedy decoding and sampling, not beam"):
        GenerationConfig(num_beams=4, prompt_lookup_num_tokens=3)
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens must be >= 0"):
        GenerationConfig(prompt_lookup_num_tokens=-1)
    default = GenerationConfig(prompt_lookup_num_tokens=3)
    assert default.replace(num_beams=4).prompt_lookup_num_tokens == 0  # a default gives way to beams
    with pytest.raises(ValueError, match="not beam search"):
        default.replace(num_beams=4, prompt_lookup_num_tokens=2)


def test_cli_option(tiny_folder):
    args = ["generate", "ROMEO:", "-m", str(tiny_folder), "-t", "0", "-n", "30", "--ignore-eos"]
    plain = CliRunner().invoke(main, args)
    found = CliRunner().invoke(main, [*args, "--prompt-lookup-num-tokens", "4"])
    assert plain.exit_code == 0 and found.exit_code == 0 and found.output == plain.output
    bad = CliRunner().invoke(main, [*args, "--prompt-lookup-num-tokens", "3", "--num-beams", "2"])
    assert bad.exit_code != 0 and "not beam search" in bad.output and "Traceback" not in bad.output


def test_server_streams_the_plain_pieces(tiny_folder, tmp_path):
    folder = tmp_path / "tiny-lookup"
    shutil.copytree(tiny_folder, folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "prompt_lookup_num_tokens": 4}))
    looking, plain = edgellm.load(folder, threads=1), edgellm.load(tiny_folder, threads=1)
    assert looking.defaults.prompt_lookup_num_tokens == 4
    body = {"model": folder.name, "prompt": PROMPTS[1], "max_tokens": 30, "temperature": 0, "stream": True}
    expected = list(plain.stream(PROMPTS[1], max_new_tokens=30, temperature=0))
    with running(looking) as url:
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as reply:
            events = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: {")]
        whole = httpx.post(url + "/v1/completions", json={**body, "stream": False}, timeout=30).json()
    pieces = [e["choices"][0]["text"] for e in events if e["choices"] and e["choices"][0]["text"]]
    assert whole["choices"][0]["text"] == "".join(expected), whole
    # the same pieces, or several of them in one chunk (a busy server joins what came together)
    ends = set(itertools.accumulate(map(len, expected)))
    assert "".join(pieces) == "".join(expected) and set(itertools.accumulate(map(len, pieces))) <= ends
    assert looking.generate(PROMPTS[1], max_new_tokens=30, temperature=0).timings["accepted_draft_tokens"] > 0


def _list(results):
    return results if isinstance(results, list) else [results]


def test_shipped_models_keep_their_output():
    # trained models, whose next token follows the context closely
    for name, prompt in (("shakespeare", "ROMEO:\nO, she doth teach the torches to burn bright!"),
                         ("en-fr", "English: Tom and Mary went to Boston in 2013.\nFrench:")):
        model = edgellm.load(name, threads=1)
        plain = model.generate(prompt, temperature=0, max_new_tokens=60)
        found = model.generate(prompt, temperature=0, max_new_tokens=60, prompt_lookup_num_tokens=4)
        assert found.token_ids == plain.token_ids and found.timings["accepted_draft_tokens"] > 0
