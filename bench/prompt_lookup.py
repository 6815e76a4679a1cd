"""Prompt-lookup decoding against plain decoding: tokens/s and the share of drafts kept.

For each model, the same prompts are generated greedily at batch 1 with prompt lookup
(`prompt_lookup_num_tokens` = each of `--num-tokens`) and without, in one process, taking turns:
one pass over the prompts with each setting, then the next repeat, the order of the settings
rotating from repeat to repeat. Greedy by default; `--own-settings` uses each folder's generation_config.json, seeded. A pass's
speed is its new tokens over its wall time (prefill
included: a call is what an app waits for). The table gives, per model and setting, the median
tokens/s, the median ratio of each repeat's pass to the plain pass of the same repeat, and the
acceptance rate (draft tokens kept / draft tokens run). The outputs are checked to be identical.

Models and prompts, all from this repository:
- en-fr: English sentences of data/tatoeba-fra-eng/test.tsv;
- babi-qa1: stories and questions of data/babi-qa1's test file;
- summarize (when models/summarize exists): package descriptions of data/debian-descriptions' test file;
- shakespeare: openings of scenes of data/tinyshakespeare, continued for `--new-tokens` tokens.

    python bench/prompt_lookup.py                       # every model, k = 2, 3, 4, 6; 7 repeats
    python bench/prompt_lookup.py --models en-fr --num-tokens 3 --repeats 11
    python bench/prompt_lookup.py --models shakespeare --own-settings   # its sampling defaults
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import edgellm

REPO = Path(__file__).resolve().parent.parent


def prompts_for(name: str, count: int) -> list[str]:
    """Prompts for a shipped model, from the repository's data."""
    if name == "en-fr":
        lines = (REPO / "data/tatoeba-fra-eng/test.tsv").read_text(encoding="utf-8").splitlines()
        prompts = list(dict.fromkeys(line.split("\t")[0].replace("\\n", "\n") for line in lines))
        return prompts[::max(1, len(prompts) // count)][:count]
    if name == "babi-qa1":
        spec = importlib.util.spec_from_file_location("to_jsonl", REPO / "data/babi-qa1/to_jsonl.py")
        to_jsonl = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(to_jsonl)
        stories = to_jsonl.stories(REPO / "data/babi-qa1/qa1_single-supporting-fact_test.txt")
        rows = [row["prompt"] for story in stories for row in to_jsonl.examples(story)]
        return rows[::max(1, len(rows) // count)][:count]
    if name == "summarize":
        from edgellm.tasks import read_examples

        rows = list(dict.fromkeys(e.prompt for e in read_examples(REPO / "data/debian-descriptions/test.jsonl.gz")))
        return rows[::max(1, len(rows) // count)][:count]
    text = (REPO / "data/tinyshakespeare/input.txt").read_text(encoding="utf-8")
    scenes = [part.strip() for part in text.split("\n\n") if part.strip()]
    return [scene[:120] for scene in scenes[::max(1, len(scenes) // count)][:count]]


def one_pass(model, prompts: list[str], settings: dict) -> tuple[float, int, list, dict]:
    """Generate every prompt alone; returns the seconds, new tokens, ids and summed draft figures."""
    figures = {"draft_tokens": 0, "accepted_draft_tokens": 0}
    ids, tokens = [], 0
    started = time.perf_counter()
    for prompt in prompts:
        result = model.generate(prompt, **settings)
        ids.append(result.token_ids)
        tokens += len(result.token_ids)
        for key in figures:
            figures[key] += result.timings.get(key, 0)
    return time.perf_counter() - started, tokens, ids, figures


def bench(name: str, num_tokens: list[int], repeats: int, count: int, new_tokens: int, threads: int,
          own_settings: bool) -> list[dict]:
    model = edgellm.load(name, providers=["CPUExecutionProvider"], threads=threads)
    prompts = prompts_for(name, count)
    # greedy, or the folder's own settings seeded (the same text with and without drafts)
    base = {"seed": 0} if own_settings else {"temperature": 0.0}
    base["prompt_lookup_num_tokens"] = 0
    if not model.task_template:
        base["max_new_tokens"] = new_tokens
    sides = [0, *num_tokens]
    speeds = {k: [] for k in sides}
    ratios = {k: [] for k in sides}
    figures = {k: {"draft_tokens": 0, "accepted_draft_tokens": 0} for k in sides}
    reference = one_pass(model, prompts, base)[2]  # a warm-up, and the plain output
    for repeat in range(repeats):
        order = sides[repeat % len(sides):] + sides[:repeat % len(sides)]
        seconds = {}
        for k in order:
            elapsed, tokens, ids, found = one_pass(model, prompts, {**base, "prompt_lookup_num_tokens": k})
            assert ids == reference, f"{name}: the output with prompt_lookup_num_tokens={k} differs"
            seconds[k] = elapsed
            speeds[k].append(tokens / elapsed)
            for key in found:
                figures[k][key] += found[key]
        for k in sides:
            ratios[k].append(seconds[0] / seconds[k])
    rows = []
    for k in sides:
        drafted = figures[k]["draft_tokens"]
        rows.append({"model": name, "k": k, "tokens_per_s": statistics.median(speeds[k]),
                     "ratio": statistics.median(ratios[k]), "min": min(ratios[k]), "max": max(ratios[k]),
                     "acceptance": figures[k]["accepted_draft_tokens"] / drafted if drafted else None,
                     "prompts": len(prompts), "new_tokens": tokens})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="en-fr,babi-qa1,summarize,shakespeare",
                        help="Comma-separated shipped models (summarize is skipped when absent).")
    parser.add_argument("--num-tokens", default="2,3,4,6", help="prompt_lookup_num_tokens values to measure.")
    parser.add_argument("--repeats", type=int, default=7, help="Passes over the prompts per setting.")
    parser.add_argument("--prompts", type=int, default=24, help="Prompts per model.")
    parser.add_argument("--new-tokens", type=int, default=100, help="New tokens per prompt of a text model.")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads.")
    parser.add_argument("--own-settings", action="store_true",
                        help="Each folder's generation_config.json (seeded) instead of greedy.")
    args = parser.parse_args()
    num_tokens = [int(k) for k in args.num_tokens.split(",")]
    print(f"{'model':<12} {'k':>2} {'tokens/s':>9} {'ratio':>6} {'range':>12} {'accepted':>9}  prompts, new tokens")
    for name in args.models.split(","):
        if name == "summarize" and not (REPO / "models" / "summarize").exists():
            print(f"{name:<12} (models/summarize is not in this checkout: skipped)")
            continue
        for row in bench(name, num_tokens, args.repeats, args.prompts, args.new_tokens, args.threads,
                         args.own_settings):
            accepted = "-" if row["acceptance"] is None else f"{row['acceptance']:.0%}"
            print(f"{row['model']:<12} {row['k']:>2} {row['tokens_per_s']:>9.0f} {row['ratio']:>5.2f}x "
                  f"{row['min']:>5.2f}-{row['max']:.2f}x {accepted:>9}  {row['prompts']}, {row['new_tokens']}",
                  flush=True)


if __name__ == "__main__":
    main()
