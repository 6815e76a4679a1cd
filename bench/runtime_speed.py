"""Decode speed of edgellm against onnxruntime-genai on the same model folder, same settings.

Both runtimes load the folder unchanged (genai reads genai_config.json), decode greedily from
the same prompt ids for the same number of new tokens with the same onnxruntime thread count,
and are timed the same way: decode tokens/s after the prefill. `--runtimes` can add `loop`:
the least Python any loop over edgellm's run can do per token (advance the run, take the argmax),
a floor for what a Python runtime on onnxruntime's Python API can reach.

Each runtime runs in a process of its own, as in an app. A bench starts `--groups` fresh groups
of processes, one group after the other; within a group the processes take turns, one
generation at a time (`--runs` each, after one warm-up), all pinned to the same cores, so a
busy machine slows them alike. Which process starts first rotates from group to group. The
table shows medians over all runs; each ratio is given two ways: of the medians, and the median
over back-to-back runs (each edgellm run against the other runtime's run next to it), steadier
when the machine's load drifts; then that median within each group.

Why fresh groups with a rotating start order: on this 2-core machine two identical edgellm
processes, pinned to one core and taking turns, differed by up to 6% for as long as they lived,
and the one started first was the slower in 5 of 6 pairs (median 0.97x), so one pair of processes
measures which process was lucky as much as which runtime is faster. Why not one process: there
the two hold separate copies of onnxruntime and of the weights, and the one loaded second
decoded faster (edgellm loaded first 0.90x, 0.84x, 0.89x; genai first 0.96x, 0.89x, 0.96x).

    python bench/runtime_speed.py --model shakespeare --new-tokens 100 --groups 8 --runs 10
    python bench/runtime_speed.py --runtimes edgellm,onnxruntime-genai,loop
    python bench/runtime_speed.py --model shakespeare --baseline OLD_FOLDER   # also edgellm on another folder

`--baseline FOLDER` adds edgellm on another folder of the same model (another quantization of
model.onnx, say), taking turns with the others like one more runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNTIMES = ("edgellm", "onnxruntime-genai", "loop")


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


def genai_decoder(folder: Path, threads: int | None):
    """genai's decode; `threads` is already in the folder's genai_config.json (see genai_folder)."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))

    def decode(ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + new_tokens, min_length=len(ids) + new_tokens,
                                  do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)  # prefill
        generator.generate_next_token()
        tokens = [int(generator.get_next_tokens()[0])]
        started = time.perf_counter()
        while not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        return (len(tokens) - 1) / (time.perf_counter() - started), tokens

    return decode


def edgellm_decoder(folder: Path, threads: int | None):
    import edgellm

    model = edgellm.load(folder, providers=["CPUExecutionProvider"], threads=threads)

    def decode(ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
        timings: dict = {}
        config = model.settings(temperature=0.0, max_new_tokens=new_tokens, stop_token_ids=(), min_new_tokens=0)
        tokens = list(model.token_stream(ids, config, timings))
        return timings["decode_tokens_per_s"], tokens

    return decode


def loop_decoder(folder: Path, threads: int | None):
    import numpy as np

    import edgellm

    model = edgellm.load(folder, providers=["CPUExecutionProvider"], threads=threads)

    def decode(ids: list[int], new_tokens: int) -> tuple[float, list[int]]:
        prompt = np.array([ids], np.int64)
        run = model.session.new_run(1, len(ids) + new_tokens)
        token = np.array([run.start(prompt, np.ones_like(prompt), np.arange(len(ids))[None]).argmax()], np.int64)
        tokens = [int(token[0])]
        started = time.perf_counter()
        for _ in range(new_tokens - 1):
            token[0] = run.advance(token).argmax()
            tokens.append(int(token[0]))
        return (len(tokens) - 1) / (time.perf_counter() - started), tokens

    return decode


def worker(runtime: str, folder: Path, ids: list[int], new_tokens: int, threads: int | None) -> None:
    """A child process: load one runtime, then time one generation per line read from stdin
    and answer each with a JSON line (tokens/s and the tokens)."""
    decoders = {"edgellm": edgellm_decoder, "onnxruntime-genai": genai_decoder, "loop": loop_decoder,
                "baseline": edgellm_decoder}
    decode = decoders[runtime](folder, threads)
    decode(ids, new_tokens)  # warm up
    print("ready", flush=True)
    for _ in sys.stdin:
        rate, tokens = decode(ids, new_tokens)
        print(json.dumps({"rate": rate, "tokens": tokens}), flush=True)


def start_worker(name: str, folder: Path, ids: list[int], new_tokens: int, threads: int | None,
                 cores: list[int]) -> subprocess.Popen:
    """A worker process for runtime `name`, pinned to `cores`, loaded and warmed up."""
    command = [sys.executable, __file__, "--worker", name, "--model", str(folder), "--ids", json.dumps(ids),
               "--new-tokens", str(new_tokens)] + (["--threads", str(threads)] if threads else [])
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               preexec_fn=lambda: os.sched_setaffinity(0, cores))
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"The {name} worker failed to start (see above).")
    return process


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--runtimes", default="edgellm,onnxruntime-genai",
                        help=f"edgellm, then what to compare it with, of: {', '.join(RUNTIMES[1:])}")
    parser.add_argument("--groups", type=int, default=8, help="fresh groups of processes, one after the other")
    parser.add_argument("--runs", type=int, default=10, help="timed generations of each runtime in each group, "
                        "taking turns")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads for both (default: theirs)")
    parser.add_argument("--baseline", help="also edgellm on this folder of the same model (a shipped name or a path)")
    parser.add_argument("--worker", choices=(*RUNTIMES, "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker, Path(args.model), json.loads(args.ids), args.new_tokens, args.threads)
        return

    import edgellm
    from edgellm.folder import model_folder
    from edgellm.benchmark import prompt_of
    from edgellm.session.session import default_threads

    folder = model_folder.resolve(args.model)
    model = edgellm.load(folder, providers=["CPUExecutionProvider"])
    new_tokens = min(args.new_tokens, model.config.context_length - args.prompt_tokens)
    ids = prompt_of(model, args.prompt_tokens)
    del model
    runtimes = args.runtimes.split(",")
    if runtimes[0] != "edgellm" or len(runtimes) < 2 or not set(runtimes) <= set(RUNTIMES):
        parser.error(f"--runtimes must be edgellm then one or more of {RUNTIMES[1:]}. Received: {args.runtimes}")
    runtimes += ["baseline"] if args.baseline else []
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    group_ratios: dict[str, list[float]] = {name: [] for name in runtimes[1:]}
    tokens = {}
    with tempfile.TemporaryDirectory() as workdir:
        folders = {"edgellm": folder, "loop": folder,
                   "onnxruntime-genai": genai_folder(folder, args.threads, Path(workdir)),
                   "baseline": model_folder.resolve(args.baseline) if args.baseline else None}
        cores = sorted(os.sched_getaffinity(0))[:args.threads or default_threads()]
        for group in range(args.groups):
            order = runtimes[group % len(runtimes):] + runtimes[:group % len(runtimes)]  # who starts first
            workers = {name: start_worker(name, folders[name], ids, new_tokens, args.threads, cores)
                       for name in order}
            for _ in range(args.runs):  # one generation at a time, taking turns; the others wait
                for name, process in workers.items():
                    process.stdin.write("run\n")
                    process.stdin.flush()
                    result = json.loads(process.stdout.readline())
                    rates[name].append(result["rate"])
                    tokens[name] = result["tokens"]
            for name in group_ratios:
                group_ratios[name].append(paired_ratio(rates["edgellm"][-args.runs:], rates[name][-args.runs:]))
            for process in workers.values():
                process.stdin.close()
                process.wait()
    if args.baseline:
        print(f"baseline: edgellm on {folders['baseline']}")
    print(f"model {folder.name}: prompt {len(ids)} tokens, {new_tokens} new tokens, greedy, batch 1, threads "
          f"{args.threads or 'default'}; {args.groups} fresh groups of processes (start order rotating) x "
          f"{args.runs} runs each, taking turns on core(s) {cores}")
    print(f"{'runtime':<20} {'median tok/s':>12} {'best tok/s':>10}")
    for name, values in rates.items():
        print(f"{name:<20} {statistics.median(values):>12.0f} {max(values):>10.0f}")
    for name, ratios in group_ratios.items():
        same = tokens["edgellm"] == tokens[name]
        print(f"edgellm / {name}: {statistics.median(rates['edgellm']) / statistics.median(rates[name]):.2f}x of "
              f"the medians, {paired_ratio(rates['edgellm'], rates[name]):.2f}x the median of back-to-back runs; "
              f"in each group: {', '.join(f'{r:.2f}x' for r in ratios)} (greedy tokens identical: {same})")


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    """The median over back-to-back runs of ours / theirs: both saw nearly the same load."""
    return statistics.median(a / b for a, b in zip(ours, theirs))


if __name__ == "__main__":
    main()
