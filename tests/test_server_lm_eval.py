"""lm-eval-harness against edgellm serve: its `local-completions` model scores a small
multiple-choice task (a YAML over tests/lm_eval/shakespeare_next.jsonl) through
/v1/completions (`prompt` as token ids, `echo`, `logprobs: 1`), and every log-likelihood it
reports equals the library's `Generator.score`. In the interop run (-m interop): lm-eval and
transformers (for its tokenizer) come with the interop extra."""

import json
from pathlib import Path

import numpy as np
import pytest

import edgellm
from serving import running

DATA = Path(__file__).parent / "lm_eval" / "shakespeare_next.jsonl"
TASK = """task: shakespeare_next
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
"""


@pytest.mark.interop
def test_lm_eval_harness_log_likelihoods_equal_the_library(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    model = edgellm.load("shakespeare")
    (tmp_path / "shakespeare_next.yaml").write_text(TASK.format(data=DATA))
    with running(model) as url:
        results = lm_eval.simple_evaluate(
            model="local-completions", tasks=["shakespeare_next"], task_manager=TaskManager(include_path=str(tmp_path)),
            model_args=f"model=shakespeare,base_url={url}/v1/completions,tokenizer={model.folder.path},"
                       f"tokenizer_backend=huggingface,max_length={model.config.context_length},num_concurrent=1,"
                       "max_retries=1", log_samples=True)
    samples = results["samples"]["shakespeare_next"]
    docs = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(samples) == len(docs)
    correct = 0
    for sample in samples:
        doc = docs[sample["doc_id"]]
        context = len(model.tokenizer.encode(doc["context"]))
        expected = [sum(model.score(doc["context"] + choice).logprobs[context - 1:]) for choice in doc["choices"]]
        got = [float(r[0][0]) for r in sample["resps"]]
        assert np.allclose(got, expected, atol=1e-3), (got, expected)
        correct += int(np.argmax(expected) == doc["answer"])
    assert results["results"]["shakespeare_next"]["acc,none"] == pytest.approx(correct / len(docs))
