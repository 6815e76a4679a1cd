"""Make the summarization task files from the Debian package descriptions corpus.

    python data/debian-descriptions/prepare.py PATH/TO/train.jsonl.gz

The corpus (53,479 rows of {"prompt", "completion", "source", "package"}: a package's long
description and its one-line synopsis, see LICENSE.md) is split by source package, so no source
package is on two sides: the source packages are shuffled with a fixed seed, the first ones
taken until the test split holds 2% of the rows, the next ones until the validation split holds
exactly VAL_FRACTION of the training file's rows (topped up with one-row source packages).

Writes here:
- train.jsonl.gz: {"prompt", "completion"} rows, the training rows then the validation rows, so
  that `edgellm train --val-fraction 0.02` holds out exactly the validation source packages
  (the corpus has no repeated prompt, and the last 2% of the distinct prompts are held out);
- test.jsonl.gz: {"prompt", "completion", "source", "package"} rows, never seen in training.
"""

import gzip
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

SEED = 20260
TEST_FRACTION = 0.02
VAL_FRACTION = 0.02  # pass the same number to `edgellm train --val-fraction`


def split_sources(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, validation, test) rows, each a whole set of source packages."""
    by_source = defaultdict(list)
    for row in rows:
        by_source[row["source"]].append(row)
    sources = sorted(by_source)
    random.Random(SEED).shuffle(sources)
    test, rest, count = [], [], 0
    for source in sources:
        if count < TEST_FRACTION * len(rows):
            test.append(source)
            count += len(by_source[source])
        else:
            rest.append(source)
    held = int((len(rows) - sum(len(by_source[s]) for s in test)) * VAL_FRACTION)
    val, train, singles, count = [], [], [], 0
    for source in rest:
        size = len(by_source[source])
        if size == 1 and count < held:
            singles.append(source)  # kept for the top-up
        elif count + size <= held - 200:  # leave room for the one-row packages
            val.append(source)
            count += size
        else:
            train.append(source)
    while count < held:
        val.append(singles.pop())
        count += 1
    train += singles
    pick = lambda names: [row for s in names for row in by_source[s]]  # noqa: E731
    return pick(train), pick(val), pick(test)


def main(path: str) -> None:
    here = Path(__file__).parent
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    train, val, test = split_sources(rows)
    training_file = train + val
    # edgellm train holds out the last int(len * f) distinct prompts, and no prompt repeats
    assert len({r["prompt"] for r in training_file}) == len(training_file)
    assert int(len(training_file) * VAL_FRACTION) == len(val)
    for name, split in (("validation", val), ("test", test)):
        shared = {r["source"] for r in train} & {r["source"] for r in split}
        assert not shared, f"source packages on both sides of the {name} split: {sorted(shared)[:5]}"
    with gzip.open(here / "train.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        for row in training_file:
            f.write(json.dumps({"prompt": row["prompt"], "completion": row["completion"]}, ensure_ascii=False) + "\n")
    with gzip.open(here / "test.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        for row in test:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"train {len(train)} rows, validation {len(val)} rows (the last {VAL_FRACTION:.0%} of train.jsonl.gz), "
          f"test {len(test)} rows; {len({r['source'] for r in rows})} source packages")


if __name__ == "__main__":
    main(sys.argv[1])
