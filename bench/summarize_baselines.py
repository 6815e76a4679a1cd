"""Baselines for the summarization test split, scored as `edgellm eval --task summarization` scores.

    python bench/summarize_baselines.py [--test data/debian-descriptions/test.jsonl.gz]

- lead: the first N words (8, 12) of the description's first sentence;
- nearest: the synopsis of the most similar training description (TF-IDF of words, cosine;
  the training rows of data/debian-descriptions/train.jsonl.gz, validation rows excluded).

Needs scikit-learn (TF-IDF) on top of the eval extra; the edgellm runtime never imports it.
Prints one Markdown table row per baseline: ROUGE-1, ROUGE-2, ROUGE-L (F1 with stemming) and chrF.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import sacrebleu

from edgellm.tasks import read_examples, rouge

DATA = Path(__file__).resolve().parent.parent / "data" / "debian-descriptions"
VAL_FRACTION = 0.02  # as in data/debian-descriptions/prepare.py and the training recipe
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s|\n")


def first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def lead(texts: list[str], words: int) -> list[str]:
    return [" ".join(first_sentence(t).split()[:words]).rstrip(".:") for t in texts]


def nearest(texts: list[str], train) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import linear_kernel

    vectorizer = TfidfVectorizer(sublinear_tf=True)
    matrix = vectorizer.fit_transform([e.prompt for e in train])  # rows are L2-normalised: dot = cosine
    best = linear_kernel(vectorizer.transform(texts), matrix).argmax(axis=1)
    return [train[i].completion for i in best]


def scores(hypotheses: list[str], references: list[str]) -> dict:
    refs = [[r.strip()] for r in references]
    return {**rouge([h.strip() for h in hypotheses], refs),
            "chrf": sacrebleu.corpus_chrf([h.strip() for h in hypotheses], [references]).score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", default=str(DATA / "test.jsonl.gz"))
    parser.add_argument("--train", default=str(DATA / "train.jsonl.gz"))
    args = parser.parse_args()
    test = read_examples(args.test)
    rows = read_examples(args.train)
    train = rows[: len(rows) - int(len(rows) * VAL_FRACTION)]
    texts, references = [e.prompt for e in test], [e.completion.strip() for e in test]
    print(f"{len(test)} test descriptions, {len(train)} training descriptions\n")
    print("| baseline | ROUGE-1 | ROUGE-2 | ROUGE-L | chrF |\n|---|---|---|---|---|")
    for name, hypotheses in (("first sentence, first 8 words", lead(texts, 8)),
                             ("first sentence, first 12 words", lead(texts, 12)),
                             ("synopsis of the most similar training description (TF-IDF, cosine)",
                              nearest(texts, train))):
        s = scores(hypotheses, references)
        print(f"| {name} | {s['rouge1']:.1f} | {s['rouge2']:.1f} | {s['rougeL']:.1f} | {s['chrf']:.1f} |")


if __name__ == "__main__":
    main()
