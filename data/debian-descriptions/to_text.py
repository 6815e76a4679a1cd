"""Write the training rows of train.jsonl.gz as plain text, for pretraining a text model.

    python data/debian-descriptions/to_text.py runs/summarize-text/descriptions.txt

Each training row becomes its description, a line "Synopsis: " + its synopsis, and a blank
line. The validation rows (the last VAL_FRACTION of train.jsonl.gz) are left out, so the
fine-tuning run's validation split stays unseen; test.jsonl.gz is never read.
"""

import gzip
import json
import sys
from pathlib import Path

from prepare import VAL_FRACTION


def main(out: str) -> None:
    with gzip.open(Path(__file__).parent / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    train = rows[: len(rows) - int(len(rows) * VAL_FRACTION)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{r['prompt']}\nSynopsis: {r['completion']}\n\n" for r in train)
    Path(out).write_text(text, encoding="utf-8")
    print(f"{out}: {len(train)} descriptions, {len(text):,} characters")


if __name__ == "__main__":
    main(sys.argv[1])
