"""Decode speed of edgellm against onnxruntime-genai on the same model folder, same settings.

Both runtimes load the folder unchanged (genai reads genai_config.json), decode greedily from
the same prompt ids for the same number of new tokens with the same onnxruntime thread count,
and are timed the same way: decode tokens/s after the prefill. Runs alternate between the two,
so a busy machine slows both alike; the table shows medians and their ratio.

    python bench/runtime_speed.py --model shakespeare --new-tokens 100 --runs 15
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import edgellm
from edgellm import model_folder
from edgellm.benchmark import prompt_of


def genai_folder(folder: Path, threads: int | None, workdir: Path) -> Path:
    """The folder as genai should see it: unchanged, or a copy whose session uses `threads`."""
    if threads is None:
        return folder
    copy = workdir / folder.name
    shutil.copytree(folder, copy)
    config = json.loads((copy / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    (copy / "genai_config.json").write_text(json.dumps(config))
    return copy


def genai_decode(og, model, ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)  # prefill
    generator.generate_next_token()
    tokens = [int(generator.get_next_tokens()[0])]
    started = time.perf_counter()
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return (len(tokens) - 1) / (time.perf_counter() - started), tokens


def edgellm_decode(model, ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
    timings: dict = {}
    config = model.settings(temperature=0.0, max_new_tokens=new_tokens, stop_token_ids=(), min_new_tokens=0)
    tokens = list(model.token_stream(ids, config, timings))
    return timings["decode_tokens_per_s"], tokens


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads for both (default: theirs)")
    args = parser.parse_args(argv)
    import onnxruntime_genai as og

    folder = model_folder.resolve(args.model)
    ours = edgellm.load(folder, providers=["CPUExecutionProvider"], threads=args.threads)
    new_tokens = min(args.new_tokens, ours.config.context_length - args.prompt_tokens)
    ids = prompt_of(ours, args.prompt_tokens)
    with tempfile.TemporaryDirectory() as workdir:
        theirs = og.Model(str(genai_folder(folder, args.threads, Path(workdir))))
        edgellm_decode(ours, ids, new_tokens)  # warm up both
        genai_decode(og, theirs, ids, new_tokens)
        rates = {"edgellm": [], "onnxruntime-genai": []}
        for _ in range(args.runs):
            rate, our_tokens = edgellm_decode(ours, ids, new_tokens)
            rates["edgellm"].append(rate)
            rate, their_tokens = genai_decode(og, theirs, ids, new_tokens)
            rates["onnxruntime-genai"].append(rate)
    same = our_tokens == their_tokens
    ratio = statistics.median(rates["edgellm"]) / statistics.median(rates["onnxruntime-genai"])
    print(f"model {folder.name}: {ours.config.num_layers} layers, width {ours.config.hidden_size}, "
          f"vocab {ours.config.vocab_size}; prompt {len(ids)} tokens, {new_tokens} new tokens, greedy, "
          f"batch 1, threads {args.threads or 'default'}, {args.runs} alternating runs")
    print(f"{'runtime':<20} {'median tok/s':>12} {'best tok/s':>10}")
    for name, values in rates.items():
        print(f"{name:<20} {statistics.median(values):>12.0f} {max(values):>10.0f}")
    print(f"ratio edgellm / onnxruntime-genai: {ratio:.2f}x (greedy tokens identical: {same})")


if __name__ == "__main__":
    main()
