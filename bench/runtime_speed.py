"""Decode speed of edgellm against onnxruntime-genai on the same model folder, same settings.

Both runtimes load the folder unchanged (genai reads genai_config.json), decode greedily from
the same prompt ids for the same number of new tokens with the same onnxruntime thread count,
and are timed the same way: decode tokens/s after the prefill.

Each runtime runs in its own process, as in an app; the two processes take turns, one
generation at a time (`--runs` each, after one warm-up), so a busy machine slows both alike. The
table shows medians; the ratio is given two ways: of the medians, and the median over
back-to-back pairs (each edgellm run against the genai run right after it), which is steadier
when the machine's load drifts during the bench.

Why not one process: there the two hold separate copies of onnxruntime and of the weights, and
the one loaded second decoded faster (on 2 shared cores, 21 alternating runs: edgellm loaded
first 0.90x, 0.84x, 0.89x; onnxruntime-genai loaded first 0.96x, 0.89x, 0.96x), so the figure
measured the load order as much as the runtime.

    python bench/runtime_speed.py --model shakespeare --new-tokens 100 --runs 40
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNTIMES = ("edgellm", "onnxruntime-genai")


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


def genai_decoder(folder: Path):
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


def worker(runtime: str, folder: Path, ids: list[int], new_tokens: int, threads: int | None) -> None:
    """A child process: load one runtime, then time one generation per line read from stdin
    and answer each with a JSON line (tokens/s and the tokens)."""
    decode = edgellm_decoder(folder, threads) if runtime == "edgellm" else genai_decoder(folder)
    decode(ids, new_tokens)  # warm up
    print("ready", flush=True)
    for _ in sys.stdin:
        rate, tokens = decode(ids, new_tokens)
        print(json.dumps({"rate": rate, "tokens": tokens}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare", help="a shipped model's name or a model folder")
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--runs", type=int, default=40, help="timed generations of each runtime, alternating")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads for both (default: theirs)")
    parser.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker, Path(args.model), json.loads(args.ids), args.new_tokens, args.threads)
        return

    import edgellm
    from edgellm import model_folder
    from edgellm.benchmark import prompt_of

    folder = model_folder.resolve(args.model)
    model = edgellm.load(folder, providers=["CPUExecutionProvider"])
    new_tokens = min(args.new_tokens, model.config.context_length - args.prompt_tokens)
    ids = prompt_of(model, args.prompt_tokens)
    del model
    rates = {name: [] for name in RUNTIMES}
    tokens = {}
    with tempfile.TemporaryDirectory() as workdir:
        folders = {"edgellm": folder, "onnxruntime-genai": genai_folder(folder, args.threads, Path(workdir))}
        workers = {}
        for name in RUNTIMES:
            command = [sys.executable, __file__, "--worker", name, "--model", str(folders[name]),
                       "--ids", json.dumps(ids), "--new-tokens", str(new_tokens)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            workers[name] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if workers[name].stdout.readline().strip() != "ready":
                raise SystemExit(f"The {name} worker failed to start (see above).")
        for _ in range(args.runs):  # one generation at a time, alternating; the other process waits
            for name, process in workers.items():
                process.stdin.write("run\n")
                process.stdin.flush()
                result = json.loads(process.stdout.readline())
                rates[name].append(result["rate"])
                tokens[name] = result["tokens"]
        for process in workers.values():
            process.stdin.close()
            process.wait()
    same = tokens["edgellm"] == tokens["onnxruntime-genai"]
    ratio = statistics.median(rates["edgellm"]) / statistics.median(rates["onnxruntime-genai"])
    # each edgellm run against the genai run right after it: both saw nearly the same load
    paired = statistics.median(a / b for a, b in zip(rates["edgellm"], rates["onnxruntime-genai"]))
    print(f"model {folder.name}: prompt {len(ids)} tokens, {new_tokens} new tokens, greedy, batch 1, threads "
          f"{args.threads or 'default'}; {args.runs} alternating runs each, one process per runtime")
    print(f"{'runtime':<20} {'median tok/s':>12} {'best tok/s':>10}")
    for name, values in rates.items():
        print(f"{name:<20} {statistics.median(values):>12.0f} {max(values):>10.0f}")
    print(f"ratio edgellm / onnxruntime-genai: {ratio:.2f}x of the medians, {paired:.2f}x the median of "
          f"back-to-back pairs (greedy tokens identical: {same})")


if __name__ == "__main__":
    main()
