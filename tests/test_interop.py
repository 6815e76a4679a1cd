"""One model folder, every runtime: the real loaders open each shipped folder and freshly exported
tiny ones unchanged, with their own tokenizers, chat templates and generators, and their greedy
ids are edgellm's.

Loaders: onnxruntime-genai (og.Tokenizer, og.Generator), transformers' AutoTokenizer, Optimum's
ORTModelForCausalLM, transformers.js in Node (onnxruntime-node) and onnxruntime-web (WASM) in
Node with a growing cache; for `--format hf`, transformers' GPT2LMHeadModel against Keras.
Behind the `interop` marker (`python -m pytest -m interop`): they need the interop extra, torch
(CPU) and `npm install` in tests/interop (see .ci/run).
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgellm
from edgellm.folder import model_folder
from edgellm.chat import template as chat_template
from tolerance import assert_float32_close

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "interop"
TEXT_CASES = [{"text": "ROMEO:", "new_tokens": 20},
              {"messages": [{"role": "system", "content": "A play."},
                            {"role": "user", "content": "Good morrow, my lord."}], "new_tokens": 12}]
TASK_CASES = {
    "en-fr": [{"messages": [{"role": "user", "content": "English: I love you.\nFrench:"}], "new_tokens": 12},
              {"messages": [{"role": "user", "content": "English: Where is the station?\nFrench:"}], "new_tokens": 12}],
    "babi-qa1": [{"messages": [{"role": "user", "content": "Mary moved to the bathroom.\nJohn went to the hallway."
                                                           "\nWhere is Mary?"}], "new_tokens": 4}],
    "summarize": [{"messages": [{"role": "user", "content": "A command-line tool to convert images between formats."
                                                            "\nIt supports PNG, JPEG and GIF."}], "new_tokens": 12}],
}
SHIPPED = ["shakespeare", "en-fr", "babi-qa1", "summarize"]


@pytest.fixture(scope="module")
def rope_gqa_folder(corpus_file, tmp_path_factory):
    """Rotary positions and grouped-query attention (no exact Hugging Face twin: model_type llama)."""
    from conftest import TINY
    from edgellm.export.onnx_export import export
    from edgellm.training.train import train

    ckpt = tmp_path_factory.mktemp("runs") / "rope-gqa"
    train([str(corpus_file)], str(ckpt), **{**TINY, "steps": 10, "position_embedding": "rope", "num_kv_heads": 1})
    out = tmp_path_factory.mktemp("models") / "rope-gqa"
    export(ckpt, out)
    return out


@pytest.fixture(params=SHIPPED + ["tiny", "rope-gqa"])
def folder(request) -> Path:
    if request.param == "tiny":
        return request.getfixturevalue("tiny_folder")
    if request.param == "rope-gqa":
        return request.getfixturevalue("rope_gqa_folder")
    return model_folder.resolve(request.param)


def cases_of(folder: Path) -> list[dict]:
    return TASK_CASES.get(folder.name, TEXT_CASES)


def reference(folder: Path) -> list[dict]:
    """edgellm's prompt ids, rendered template and greedy new ids for each case."""
    model = edgellm.load(folder)
    out = []
    for case in cases_of(folder):
        if "messages" in case:
            rendered = chat_template.render(model.folder.chat_template, case["messages"])
            ids = chat_template.encode(model.tokenizer, model.folder.chat_template, case["messages"])
            if model.task_template:  # the task template `generate` applies is the chat template
                assert ids == model.encode_prompt(case["messages"][0]["content"])
        else:
            rendered, ids = None, model.tokenizer.encode(case["text"])
        settings = model.settings(temperature=0.0, max_new_tokens=case["new_tokens"])
        out.append({"prompt_ids": ids, "rendered": rendered, "new_ids": list(model.token_stream(ids, settings))})
    return out


def until_eos(ids, eos: int) -> list[int]:
    ids = [int(i) for i in ids]
    return ids[:ids.index(eos)] if eos in ids else ids


def eos_of(folder: Path) -> int:
    return model_folder.read(folder).special_tokens["eos_token_id"]


def node(script: str, request: dict) -> dict:
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.fail(f"Run `ONNXRUNTIME_NODE_INSTALL=skip npm install` in {NODE_DIR} first (see .ci/run).")
    done = subprocess.run(["node", script, json.dumps(request)], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_onnxruntime_genai_with_its_own_tokenizer_template_and_generator(folder):
    og = pytest.importorskip("onnxruntime_genai")
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    for case, ours in zip(cases_of(folder), reference(folder)):
        if "messages" in case:
            rendered = tokenizer.apply_chat_template(json.dumps(case["messages"]), add_generation_prompt=True)
            assert rendered == ours["rendered"]
            ids = [int(i) for i in tokenizer.encode(rendered)]
        else:
            ids = [int(i) for i in tokenizer.encode(case["text"])]
        assert ids == ours["prompt_ids"]
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(ids) + case["new_tokens"])
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
        assert until_eos(generator.get_sequence(0)[len(ids):], eos_of(folder)) == ours["new_ids"]


def test_transformers_auto_tokenizer_and_chat_template(folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = edgellm.load(folder)
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == ours.folder.special_tokens["eos_token_id"]
    assert tokenizer.model_max_length == ours.config.context_length
    for case, expected in zip(cases_of(folder), reference(folder)):
        if "messages" in case:
            assert tokenizer.apply_chat_template(case["messages"], tokenize=False,
                                                 add_generation_prompt=True) == expected["rendered"]
            assert list(tokenizer.apply_chat_template(case["messages"], add_generation_prompt=True)) \
                == expected["prompt_ids"]
        else:
            assert tokenizer(case["text"])["input_ids"] == expected["prompt_ids"]
    # the one difference: a typed special-token string is the special id in transformers only
    typed = "Hi <|endoftext|>"
    assert tokenizer(typed)["input_ids"] == ours.tokenizer.encode(typed, allow_special=True)
    assert tokenizer(typed)["input_ids"] != ours.tokenizer.encode(typed)


def test_optimum_ort_model_for_causal_lm(folder):
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    model = ORTModelForCausalLM.from_pretrained(folder)
    for case, ours in zip(cases_of(folder), reference(folder)):
        ids = torch.tensor([ours["prompt_ids"]])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=case["new_tokens"])
        assert until_eos(out[0, ids.shape[1]:].tolist(), eos_of(folder)) == ours["new_ids"]


def test_transformers_js_in_node(folder):
    theirs = node("transformers_js.mjs", {"folder": str(folder), "cases": cases_of(folder)})["cases"]
    for got, ours in zip(theirs, reference(folder), strict=True):
        assert got["rendered"] == ours["rendered"]
        assert got["prompt_ids"] == ours["prompt_ids"]
        assert until_eos(got["new_ids"], eos_of(folder)) == ours["new_ids"]


def test_onnxruntime_web_wasm_with_a_growing_cache(folder):
    ours = reference(folder)
    cases = [{"prompt_ids": o["prompt_ids"], "new_tokens": c["new_tokens"], "eos": eos_of(folder)}
             for c, o in zip(cases_of(folder), ours)]
    theirs = node("onnxruntime_web.mjs", {"folder": str(folder), "cases": cases})["cases"]
    assert [t["new_ids"] for t in theirs] == [o["new_ids"] for o in ours]


def test_onnxruntime_web_shared_past_present_buffer_gives_wrong_ids_as_documented():
    """docs/interop.md: why a web app feeds present back as past rather than sharing one buffer."""
    folder = model_folder.resolve("shakespeare")
    ours = reference(folder)[0]
    case = {"prompt_ids": ours["prompt_ids"], "new_tokens": 12, "eos": eos_of(folder)}
    shared = node("onnxruntime_web.mjs", {"folder": str(folder), "shared": True, "capacity": 128, "cases": [case]})
    assert shared["cases"][0]["new_ids"] != ours["new_ids"][:12]


def test_export_format_hf_loads_in_gpt2_lm_head_model(tiny_checkpoint, tmp_path):
    import torch
    from transformers import GPT2LMHeadModel

    from edgellm.export.onnx_export import export
    from edgellm.training import checkpoint

    folder = tmp_path / "tiny-hf"
    export(tiny_checkpoint, folder, fmt="hf")
    keras_model, tokenizer, _ = checkpoint.load_model(tiny_checkpoint)
    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    ids = tokenizer.encode("ROMEO:\nWhat say you, my lord? I am")
    with torch.no_grad():
        theirs = hf(torch.tensor([ids])).logits[0].numpy()
    keras_logits = np.asarray(keras_model(np.array([ids], np.int32), training=False))[0]
    ours = edgellm.load(folder)
    assert_float32_close(ours.config, theirs, keras_logits)
    out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      do_sample=False, max_new_tokens=24)
    expected = list(ours.token_stream(ids, ours.settings(temperature=0.0, max_new_tokens=24)))
    assert until_eos(out[0, len(ids):].tolist(), tokenizer.eos_token_id) == expected
