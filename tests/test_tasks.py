"""Prompt/completion data: reading, the template, and the loss mask."""

import json

import numpy as np
import pytest

from edgellm.tokenizer import Tokenizer
from edgellm.tasks import COMPLETION_TOKEN, TASK_SPECIAL_TOKENS, Example, read_examples
from edgellm.training.tasks import encode_examples, masked_batch


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(["Where is Mary? bathroom. Mary went to the garden."], 300, TASK_SPECIAL_TOKENS)


def test_loss_counts_only_completion_tokens(tok):
    examples = [Example("Where is Mary?", " bathroom"), Example("Mary went to the garden. Where is Mary?", " garden")]
    encoded, skipped = encode_examples(tok, examples, context_length=64)
    x, y, w = masked_batch(encoded, pad_id=tok.eos_token_id, length=64)
    assert skipped == 0 and x.shape == y.shape == w.shape == (2, 64)
    for b, example in enumerate(examples):
        weighted_targets = y[b][w[b] == 1].tolist()
        assert weighted_targets == tok.encode(example.completion) + [tok.eos_token_id]
        # the weighted targets follow the <|completion|> token in the inputs
        first = int(np.argmax(w[b]))
        assert x[b, first] == tok.special_tokens[COMPLETION_TOKEN]


def test_prompt_loss_weight_weights_every_prompt_target_and_never_padding(tok):
    examples = [Example("Mary went to the garden. Where is Mary?", " garden")]
    encoded, _ = encode_examples(tok, examples, context_length=64)
    x, y, w = masked_batch(encoded, pad_id=tok.eos_token_id, length=64, prompt_weight=0.25)
    prompt = tok.encode(examples[0].prompt) + [tok.special_tokens[COMPLETION_TOKEN]]
    n = len(encoded[0][0]) - 1  # targets of the example; the rest is padding
    assert y[0][w[0] == 0.25].tolist() == prompt[1:]  # every prompt id but the first is a target
    assert y[0][w[0] == 1].tolist() == tok.encode(" garden") + [tok.eos_token_id]
    assert (w[0, n:] == 0).all() and (w[0, :n] > 0).all()


def test_too_long_examples_are_skipped_and_counted_or_refused(tok):
    examples = [Example("Where is Mary?", " bathroom"), Example("Mary " * 40, " garden")]
    encoded, skipped = encode_examples(tok, examples, context_length=40)
    assert len(encoded) == 1 and skipped == 1
    with pytest.raises(ValueError, match="Example 2 is .* tokens"):
        encode_examples(tok, examples, context_length=40, too_long="error")


def test_too_long_right_keeps_the_start_of_the_prompt_as_the_runtime_does(tok):
    """--too-long right: the prompt's first ids, then <|completion|>, then the whole completion;
    the cut is the runtime's truncate="right" with the completion's length as max_new_tokens."""
    from edgellm.session.batching import fit_context

    examples = [Example("Mary " * 40 + "Where is Mary?", " garden")]
    (ids, start), = encode_examples(tok, examples, context_length=40, too_long="right")[0]
    prompt = tok.encode(examples[0].prompt) + [tok.special_tokens[COMPLETION_TOKEN]]
    completion = tok.encode(" garden") + [tok.eos_token_id]
    assert len(ids) == 41 and ids[start:] == completion
    assert ids[:start - 1] == prompt[:start - 1] and ids[start - 1] == prompt[-1]
    assert ids[:start] == fit_context(prompt, 41, len(completion), "right", tail=1)
    short = [Example("Where is Mary?", " bathroom")]
    assert encode_examples(tok, short, 40, "right") == encode_examples(tok, short, 40, "skip")  # fits: unchanged


def test_bad_lines_are_named(tmp_path):
    good = {"prompt": "a", "completion": "b"}
    (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2 is not valid JSON"):
        read_examples(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text(json.dumps({"prompt": "a", "completion": " "}) + "\n")
    with pytest.raises(ValueError, match="line 1: the completion is empty"):
        read_examples(tmp_path / "empty.jsonl")
    (tmp_path / "pairs.tsv").write_text("Go.\tVa !\nRun!\n")
    with pytest.raises(ValueError, match=r"pairs.tsv, line 2: needs prompt<TAB>completion"):
        read_examples(tmp_path / "pairs.tsv")
    (tmp_path / "ok.tsv").write_text("line one\\nline two\tanswer\n")
    assert read_examples(tmp_path / "ok.tsv") == [Example("line one\nline two", "answer")]
