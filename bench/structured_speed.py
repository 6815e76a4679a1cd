"""Constrained decoding speed: decode tokens/s with a grammar's token mask against the same
model decoding freely, and the time to compile a schema.

Both runs decode greedily from the same prompt for up to the same number of new tokens, in one
process, taking turns run by run (so a busy machine slows them alike), timed the same way
(decode tokens/s after the prefill: `GenerationResult.timings`). The constrained run asks for a
JSON array of at least `--items` objects of a fixed schema, long enough to use every new token;
the free run has no stop token, so it too decodes every token. The ratio is of the medians, and
the median of each constrained run over the free run next to it.

Compile time: a fresh schema (a new property name each time, so no cache helps) through
`Generator.compile`, which builds llguidance's matcher and its first token mask; and, once per
model, reading tokenizer.json into llguidance.

    python bench/structured_speed.py --model shakespeare --new-tokens 100 --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import time

import edgellm
from edgellm.generation import constraints
from edgellm.generation.constraints import Compiler
from edgellm.folder.model_folder import TOKENIZER_FILE

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "mood"],
          "properties": {"name": {"type": "string", "maxLength": 12},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "mood": {"enum": ["merry", "sad", "wroth"]}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shakespeare")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    model = edgellm.load(args.model, threads=args.threads)
    people = constraints.json_schema({"type": "array", "minItems": args.items, "items": PERSON})
    settings = dict(max_new_tokens=args.new_tokens, temperature=0, stop_token_ids=())
    model.generate(args.prompt, constraint=people, **settings)  # warm-up, and the grammar is compiled
    model.generate(args.prompt, **settings)
    free, constrained, pairs = [], [], []
    for _ in range(args.runs):
        a = model.generate(args.prompt, **settings)
        b = model.generate(args.prompt, constraint=people, **settings)
        assert len(b.token_ids) == len(a.token_ids) == args.new_tokens, (b.text, b.finish_reason)
        free.append(a.timings["decode_tokens_per_s"])
        constrained.append(b.timings["decode_tokens_per_s"])
        pairs.append(constrained[-1] / free[-1])
    print(f"{args.model}: greedy, {args.new_tokens} new tokens, {args.runs} runs each, taking turns")
    print(f"{'run':<34} {'decode tok/s':>12}")
    print(f"{'free':<34} {statistics.median(free):>12.0f}")
    print(f"{'JSON schema (array of objects)':<34} {statistics.median(constrained):>12.0f}")
    print(f"ratio constrained / free: {statistics.median(constrained) / statistics.median(free):.2f}x of the "
          f"medians, {statistics.median(pairs):.2f}x median of back-to-back pairs")
    print(f"sample: {b.text[:100]!r}")

    text = (model.folder.path / TOKENIZER_FILE).read_text(encoding="utf-8")
    started = time.perf_counter()
    Compiler(text, model.config.vocab_size, model.folder.special_tokens.get("eos_token_id"))
    tokenizer_ms = 1000 * (time.perf_counter() - started)
    times = []
    for i in range(args.runs):
        fresh = {**PERSON, "properties": {**PERSON["properties"], f"field{i}": {"type": "boolean"}}}
        started = time.perf_counter()
        model.compile(constraints.json_schema({"type": "array", "items": fresh}))
        times.append(1000 * (time.perf_counter() - started))
    print(f"compile a new schema: {statistics.median(times):.2f} ms median (max {max(times):.2f} ms); "
          f"tokenizer.json into llguidance, once per model: {tokenizer_ms:.1f} ms")


if __name__ == "__main__":
    main()
