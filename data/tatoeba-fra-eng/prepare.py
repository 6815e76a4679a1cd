"""Make the English -> French task files from Tatoeba's eng-fra.tsv (manythings.org/anki).

    python data/tatoeba-fra-eng/prepare.py PATH/TO/eng-fra.tsv

Keeps pairs whose English side has at most 8 words and splits them by English sentence: a
sentence goes to the test split when the first 8 hex digits of its SHA-256 are below 2% of the
range, so no English sentence is on both sides. Writes train.tsv.gz and test.tsv here, as
prompt<TAB>completion lines in the translation template ("English: ...\\nFrench:", " ...").
"""

import gzip
import hashlib
import sys
from pathlib import Path

MAX_WORDS = 8
TEST_FRACTION = 0.02


def main(source: str) -> None:
    here = Path(__file__).parent
    train, test = [], []
    for line in Path(source).read_text(encoding="utf-8").splitlines():
        english, french = line.split("\t")[:2]
        if len(english.split()) > MAX_WORDS:
            continue
        row = f"English: {english}\\nFrench:\t {french}\n"
        bucket = int(hashlib.sha256(english.encode("utf-8")).hexdigest()[:8], 16) / 16**8
        (test if bucket < TEST_FRACTION else train).append(row)
    with gzip.open(here / "train.tsv.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        f.writelines(train)
    (here / "test.tsv").write_text("".join(test), encoding="utf-8")
    print(f"train {len(train)} pairs, test {len(test)} pairs")


if __name__ == "__main__":
    main(sys.argv[1])
