"""edgellm's tokenizer against Hugging Face `tokenizers`, both on one thread, in the same run.

    python bench/tokenizer_speed.py                          # the repository's Austen and Shakespeare texts
    python bench/tokenizer_speed.py --train-files a.txt b.txt --encode-file c.txt

Prints a table: training time for a byte-level BPE vocabulary (default 4,096 ids on the
repository's Austen sample and tinyshakespeare; the figures in docs/tokenizer.md were measured
on the five Austen novels from Project Gutenberg, 3.5 MB) and encode throughput on about 1 MB of English prose, each with the ratio
edgellm / tokenizers (speed, so higher is better for edgellm). Encoding uses one vocabulary, the
one edgellm trained, loaded by both libraries; the ids are checked to be identical. Needs the dev
extra (tokenizers).
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # tokenizers' thread pool: set before it is imported
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import tokenizers  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

from edgellm.tokenizer import Tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def default_train_files() -> list[Path]:
    """The repository's English texts."""
    return [REPO / "data" / "austen" / "austen-sample.txt", REPO / "data" / "tinyshakespeare" / "input.txt"]


def best_of(repeats: int, fn) -> tuple[float, object]:
    """The fastest of `repeats` runs (the least disturbed by other work on the machine), and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def train_hf(paths: list[Path], vocab_size: int, min_frequency: int) -> tokenizers.Tokenizer:
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train([str(p) for p in paths], trainer)
    return hf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-files", nargs="+", type=Path, help="Text files to train on [default: Austen].")
    parser.add_argument("--encode-file", type=Path, help="Prose to encode [default: the training files].")
    parser.add_argument("--encode-bytes", type=int, default=1_000_000, help="How much of it to encode.")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="Encode timings are the best of this many runs.")
    args = parser.parse_args()

    train_files = args.train_files or default_train_files()
    train_mb = sum(p.stat().st_size for p in train_files) / 1e6
    prose = "".join(p.read_text(encoding="utf-8") for p in ([args.encode_file] if args.encode_file else train_files))
    prose = prose.encode("utf-8")[: args.encode_bytes].decode("utf-8", errors="ignore")
    mb = len(prose.encode("utf-8")) / 1e6
    print(f"python {platform.python_version()}, tokenizers {tokenizers.__version__}, one thread; training on "
          f"{len(train_files)} file(s), {train_mb:.2f} MB; encoding {mb:.2f} MB of "
          f"{args.encode_file or 'them'}; encode times are the best of {args.repeats}", flush=True)

    ours_s, tok = best_of(1, lambda: Tokenizer.train_from_files(train_files, args.vocab_size,
                                                                min_frequency=args.min_frequency))
    hf_train_s, _ = best_of(1, lambda: train_hf(train_files, args.vocab_size, args.min_frequency))
    rows = [(f"train {args.vocab_size} ids on {train_mb:.1f} MB", f"{ours_s:.2f} s", f"{hf_train_s:.2f} s",
             hf_train_s / ours_s)]

    with tempfile.TemporaryDirectory() as tmp:
        tok.save(Path(tmp) / "tokenizer.json")
        hf = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
    lines = prose.splitlines(keepends=True)
    fresh = iter([Tokenizer.from_json(tok.to_json()) for _ in range(args.repeats)])  # empty chunk caches
    cold_s, ids = best_of(args.repeats, lambda: next(fresh).encode(prose))
    warm_s, _ = best_of(args.repeats, lambda: tok.encode(prose))
    lines_s, line_ids = best_of(args.repeats, lambda: [tok.encode(line) for line in lines])
    hf_s, hf_ids = best_of(args.repeats, lambda: hf.encode(prose).ids)
    hf_fast_s, hf_fast_ids = best_of(args.repeats, lambda: hf.encode_batch_fast([prose])[0].ids)
    hf_lines_s, hf_line_ids = best_of(args.repeats, lambda: [e.ids for e in hf.encode_batch_fast(lines)])
    assert ids == hf_ids == hf_fast_ids and line_ids == hf_line_ids, "edgellm and tokenizers disagree on the ids"
    hf_best = min(hf_s, hf_fast_s, hf_lines_s)
    rate = lambda s: f"{mb / s:.2f} MB/s"  # noqa: E731
    rows += [
        ("encode 1 string, edgellm's cache empty / encode", rate(cold_s), rate(hf_s), hf_s / cold_s),
        ("encode 1 string / encode_batch_fast([text])", rate(warm_s), rate(hf_fast_s), hf_fast_s / warm_s),
        ("encode line by line / encode_batch_fast(lines)", rate(lines_s), rate(hf_lines_s), hf_lines_s / lines_s),
        ("encode, edgellm's cache empty / fastest of the above", rate(cold_s), rate(hf_best), hf_best / cold_s),
    ]

    print(f"| {'task':<58} | {'edgellm':>11} | {'tokenizers':>11} | edgellm/tokenizers |")
    print(f"|{'-' * 60}|{'-' * 13}:|{'-' * 13}:|{'-' * 19}:|")
    for task, ours, theirs, ratio in rows:
        print(f"| {task:<58} | {ours:>11} | {theirs:>11} | {ratio:>17.2f}x |")


if __name__ == "__main__":
    main()
