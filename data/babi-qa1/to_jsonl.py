"""bAbI task files -> prompt/completion JSONL: the story so far plus the question, then the answer.

    python data/babi-qa1/to_jsonl.py [OUT_DIR]   # writes train.jsonl and test.jsonl (default: here)
"""

import json
import sys
from pathlib import Path


def examples(path: Path) -> list[dict]:
    story, out = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        number, _, text = line.partition(" ")
        if number == "1":  # a new story
            story = []
        if "\t" in text:
            question, answer, _support = text.split("\t")
            out.append({"prompt": "\n".join([*story, question.strip()]), "completion": " " + answer})
        else:
            story.append(text)
    return out


if __name__ == "__main__":
    here = Path(__file__).parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else here
    for split in ("train", "test"):
        rows = examples(here / f"qa1_single-supporting-fact_{split}.txt")
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{split}: {len(rows)} questions")
