"""bAbI task files -> prompt/completion JSONL: the story so far plus the question, then the answer.

    python data/babi-qa1/to_jsonl.py [OUT_DIR] [--relabel K] [--augment K] [--balance] [--max-statements N]

writes train.jsonl and test.jsonl (default: here). `--relabel K` adds K copies of each training
story in which the people and the places are renamed by a random permutation of those the
training stories use (seeded, so the file is the same on every run). A renamed story asks the
same question about the same events, so the answer is still right; what it removes is any
pairing of a name with a place for the model to memorise. Each story is followed by its copies,
so a validation split taken from the end of the file holds whole groups.

`--balance` evens out how far back the answer was told. In the task files 45% of the questions
are about the person in the latest statement, 29% the one before, then 13%, 9%, 4%, so a model
scores well above chance by answering the latest place, and small models trained on the file
settle there without ever reading the question. Balanced, each of these groups (by the
dataset's own supporting-fact ids) keeps at most as many questions as the third largest (a
seeded random choice), and the latest place is right only about a quarter of the time.

`--max-statements N` keeps only the training questions asked after at most N statements (the
first questions of each story): a short first stage for a curriculum, where the model learns to
match the asked name against the statements on short stories before it meets long ones.

`--augment K` adds K copies of each training question, each renamed (as above) and with every
statement except the one that answers it dropped with probability 1/2. Renaming alone keeps each
story's pattern of who moved when, which a small model can memorise; dropping statements makes
new patterns, so only reading the question against the statements fits them all.

The test file is never changed.
"""

import argparse
import json
import random
import re
from pathlib import Path


def stories(path: Path) -> list[list[str]]:
    """The task file as stories: each a list of lines, questions as `question<TAB>answer<TAB>
    statements told since the supporting one`."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        number, _, text = line.partition(" ")
        if number == "1":  # a new story
            out.append([])
            statement_at = {}  # line number -> index among the story's statements
        if "\t" in text:
            question, answer, support = text.split("\t")
            since = len(statement_at) - 1 - statement_at[support.split()[0]]
            out[-1].append(f"{question}\t{answer}\t{since}")
        else:
            statement_at[number] = len(statement_at)
            out[-1].append(text)
    return out


def examples(story: list[str]) -> list[dict]:
    told, out = [], []
    for line in story:
        if "\t" in line:
            question, answer, since = line.split("\t")
            out.append({"prompt": "\n".join([*told, question.strip()]), "completion": " " + answer,
                        "since": int(since), "statements": len(told), "told": list(told),
                        "question": question.strip()})
        else:
            told.append(line)
    return out


def balance(rows: list[dict], rng: random.Random) -> list[dict]:
    """Keep at most as many questions per `since` group as the third largest group has."""
    groups = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["since"], []).append(i)
    cap = sorted(map(len, groups.values()), reverse=True)[min(2, len(groups) - 1)]
    keep = {i for members in groups.values() for i in rng.sample(members, min(cap, len(members)))}
    return [row for i, row in enumerate(rows) if i in keep]


def relabel(story: list[str], people: list[str], places: list[str], rng: random.Random) -> list[str]:
    rename = dict(zip(people, rng.sample(people, len(people)))) | dict(zip(places, rng.sample(places, len(places))))
    word = re.compile(r"\b(" + "|".join(rename) + r")\b")
    return [word.sub(lambda m: rename[m.group(1)], line) for line in story]


def augment(row: dict, people: list[str], places: list[str], rng: random.Random) -> dict:
    """A renamed copy of one question in which each statement, except the one that answers it,
    is dropped with probability 1/2 (the answer stays right: it is the asked person's latest
    statement)."""
    support = row["statements"] - 1 - row["since"]
    keep = [i for i in range(row["statements"]) if i == support or rng.random() < 0.5]
    *told, question, answer = relabel([*(row["told"][i] for i in keep), row["question"], row["completion"]],
                                      people, places, rng)
    since = len(keep) - 1 - keep.index(support)
    return {"prompt": "\n".join([*told, question]), "completion": answer, "since": since,
            "statements": len(told), "told": told, "question": question}


def people_and_places(all_stories: list[list[str]]) -> tuple[list[str], list[str]]:
    statements = [line.rstrip(".").split() for story in all_stories for line in story if "\t" not in line]
    return sorted({s[0] for s in statements}), sorted({s[-1] for s in statements})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path(__file__).parent)
    parser.add_argument("--relabel", type=int, default=0, metavar="K",
                        help="add K renamed copies of each training story (default 0)")
    parser.add_argument("--balance", action="store_true",
                        help="even out how far back the answer was told (training file only)")
    parser.add_argument("--augment", type=int, default=0, metavar="K",
                        help="add K renamed copies of each training question with statements dropped")
    parser.add_argument("--max-statements", type=int, default=None, metavar="N",
                        help="keep only training questions asked after at most N statements")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    here = Path(__file__).parent
    for split in ("train", "test"):
        told = stories(here / f"qa1_single-supporting-fact_{split}.txt")
        if split == "train" and args.relabel:
            rng = random.Random(args.seed)
            people, places = people_and_places(told)
            # each story followed by its copies, so the held-out tail of the file is whole groups
            told = [s for story in told for s in [story] + [relabel(story, people, places, rng)
                                                           for _ in range(args.relabel)]]
        rows = [row for story in told for row in examples(story)]
        if split == "train" and args.augment:
            rng = random.Random(args.seed)
            people, places = people_and_places(told)
            rows = [r for row in rows for r in [row] + [augment(row, people, places, rng) for _ in range(args.augment)]]
        if split == "train" and args.max_statements is not None:
            rows = [row for row in rows if row["statements"] <= args.max_statements]
        if split == "train" and args.balance:
            rows = balance(rows, random.Random(args.seed))
        rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
        (args.out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{split}: {len(rows)} questions")
