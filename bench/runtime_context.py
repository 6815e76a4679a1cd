"""Time per token late in a long context against early: position 900 vs position 10 of 1,024.

Needs a model with a 1,024-token context. Without --model, one is made: the shipped model's
shape (4 layers, width 256, vocabulary 2,048) with context 1,024, or with `--shape gpt2` GPT-2
small's (12 layers, 12 heads, width 768; vocabulary 2,048), trained for 2 steps on
tinyshakespeare and exported twice, with the in-place cache and with `--kv-cache concat` as the
baseline (needs the train extra; about two minutes on two cores, about twelve for gpt2). Speed
does not depend on what the weights learned, only on their shapes. onnxruntime-genai on the
same folder is timed too. Each figure is a decode step's time once that many tokens are cached,
timed after 16 untimed steps that follow the prompt (a prompt's run slows the next few steps;
see `edgellm.benchmark.time_per_token`). The last line is the ratio of the bytes a step reads:
the time ratio if weights and cache were both read at the same speed.

    python bench/runtime_context.py [--model FOLDER [--baseline FOLDER]] [--keep DIR] [--shape gpt2]
                                    [--kv-heads N] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHAPES = {"shipped": dict(num_layers=4, num_heads=4, hidden_size=256),
          "gpt2": dict(num_layers=12, num_heads=12, hidden_size=768)}


def make_long_context_model(workdir: Path, kv_heads: int = 0, shape: str = "shipped") -> tuple[Path, Path]:
    """The model folder (in-place cache) and the same checkpoint exported with the Concat cache."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgellm.export.onnx_export import export
    from edgellm.training.train import train

    checkpoint, folder, concat = workdir / "run", workdir / "long-context", workdir / "long-context-concat"
    train([str(REPO / "data" / "tinyshakespeare" / "input.txt")], str(checkpoint), vocab_size=2048,
          num_kv_heads=kv_heads, context_length=1024, batch_size=2, steps=2, warmup=1, eval_interval=2, verbose=0,
          **SHAPES[shape])
    export(checkpoint, folder)
    export(checkpoint, concat, kv_cache="concat")
    return folder, concat


def genai_time_per_token(folder: Path, prompt: list[int], steps: int = 16, settle: int = 16) -> float | None:
    """onnxruntime-genai on the same folder: ms per decode step once len(prompt) tokens are
    cached, as `edgellm.benchmark.time_per_token` times it (the last `settle` ids of the prompt
    are generated, untimed, after the rest)."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        return None
    import time

    settle = min(settle, len(prompt) - 1)
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + steps, min_length=len(prompt) + steps, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt[:len(prompt) - settle])
    for _ in range(settle):
        generator.generate_next_token()
    started = time.perf_counter()
    for _ in range(steps):
        generator.generate_next_token()
    return 1000 * (time.perf_counter() - started) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder with a 1,024-token context (default: make one)")
    parser.add_argument("--baseline", help="another 1,024-context folder to time alongside (default with a made "
                                           "model: the same checkpoint exported with --kv-cache concat)")
    parser.add_argument("--keep", help="write the models made for the bench here (to reuse with --model)")
    parser.add_argument("--kv-heads", type=int, default=0,
                        help="key/value heads of the model made (grouped-query attention; default: one per head)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="shipped", help="the shape of the model made")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)

    import edgellm
    from edgellm.benchmark import prompt_of, time_per_token

    with tempfile.TemporaryDirectory() as workdir:
        if args.model:
            folders = [Path(args.model)] + ([Path(args.baseline)] if args.baseline else [])
        else:
            folders = list(make_long_context_model(Path(args.keep or workdir), args.kv_heads, args.shape))
        models = [edgellm.load(f, providers=["CPUExecutionProvider"], threads=args.threads) for f in folders]
        for folder, model in zip(folders, models):
            if model.config.context_length < 1024:
                raise SystemExit(f"{folder} has a context of {model.config.context_length}; this bench needs 1,024.")
        times = {f: ([], []) for f in folders}
        genai_early, genai_late = [], []
        for _ in range(args.repeats):  # alternate, so a busy moment hits all
            for folder, model in zip(folders, models):
                times[folder][0].append(time_per_token(model, 10, repeats=1))
                times[folder][1].append(time_per_token(model, 900, repeats=1))
            if args.threads is None:  # the same default thread count as edgellm's
                genai_early.append(genai_time_per_token(folders[0], prompt_of(models[0], 10)))
                genai_late.append(genai_time_per_token(folders[0], prompt_of(models[0], 900)))
    model = models[0]
    print(f"model: {model.config.num_layers} layers, {model.config.num_heads} heads ({model.config.kv_heads} "
          f"key/value), width {model.config.hidden_size}, context "
          f"{model.config.context_length}; batch 1, threads {model.session.threads}, {args.repeats} alternating runs")
    print(f"{'':46} {'position 10':>12} {'position 900':>13} {'900 / 10':>9}")
    rows = [(f"edgellm, {f.name} ({m.session.kv_cache} cache)", *map(statistics.median, times[f]))
            for f, m in zip(folders, models)]
    if genai_early and None not in genai_early:
        rows.append((f"onnxruntime-genai, {folders[0].name}", statistics.median(genai_early),
                     statistics.median(genai_late)))
    for name, early, late in rows:
        print(f"{name:46} {early:9.3f} ms {late:10.3f} ms {late / early:8.2f}x")
    # at batch 1 a step reads every weight once and the cache up to its position: the ratio of
    # those bytes is the time ratio when both are read at the same speed
    weights = (folders[0] / "model.onnx").stat().st_size
    cache = lambda position: 2 * model.config.num_layers * model.config.kv_heads * model.config.head_dim * position * 4
    print(f"{'bytes read per token (weights + cache)':46} {(weights + cache(10)) / 1e6:9.1f} MB "
          f"{(weights + cache(900)) / 1e6:10.1f} MB {(weights + cache(900)) / (weights + cache(10)):8.2f}x")


if __name__ == "__main__":
    main()
