"""Evaluate a model folder on a file, through the ONNX model the apps run.

Each task is a function `(model, path, **options) -> dict of metrics`, registered in `TASKS`;
`edgellm eval FILE --task NAME` runs one. The language-modelling task ("lm") reports
perplexity and loss per token and per character of a text file; "translation" (chrF, BLEU),
"qa" (exact match) and "summarization" (ROUGE-1, ROUGE-2, ROUGE-L, chrF) generate completions
of a prompt/completion file with a task model.

Example:
    >>> import edgellm
    >>> metrics = evaluate(edgellm.load("shakespeare"), "data/tinyshakespeare/input.txt", max_chars=5000)
    >>> metrics["loss_per_char"] < 2.0
    True
"""

from __future__ import annotations

import math
from pathlib import Path

from edgellm import tasks
from edgellm import text as text_files
from edgellm.generation.scoring import score_ids


def read_text(path: str | Path, max_chars: int | None = None) -> str:
    """A UTF-8 text file cleaned exactly as training cleans it (edgellm.text), cut to `max_chars`."""
    if max_chars is not None and (type(max_chars) is not int or max_chars < 1):
        raise ValueError(f"max_chars must be a positive integer, or None for the whole file. "
                         f"Received: max_chars={max_chars!r}")
    text = text_files.read_text(path, "Evaluation file")
    return text if max_chars is None else text[:max_chars]


def language_model(model, path: str | Path, max_chars: int | None = None) -> dict:
    """Perplexity, and loss (nats) per token and per character, of a text file.

    The loss per character divides the total loss by the characters of the scored tokens (all
    but the first), so it compares across tokenizers and with character-level models.
    """
    text = read_text(path, max_chars)
    ids = model.tokenizer.encode(text)
    if len(ids) < 2:
        raise ValueError(f"{path} is too short to evaluate: {len(ids)} token(s). Pass a longer text.")
    logprobs = score_ids(model, ids)
    nll = -sum(logprobs)
    characters = len(model.tokenizer.decode(ids[1:]))
    return {
        "tokens": len(ids) - 1,
        "characters": characters,
        "loss_per_token": nll / (len(ids) - 1),
        "loss_per_char": nll / characters,
        "bits_per_char": nll / characters / math.log(2),
        "perplexity": math.exp(nll / (len(ids) - 1)),
    }


def task_model(task: str):
    """Greedy (or beam, with num_beams) completions of a prompt/completion file, scored for `task`."""

    def run(model, path: str | Path, max_examples: int | None = None, progress=None, **settings) -> dict:
        examples = tasks.read_examples(path)[:max_examples]
        return tasks.evaluate(model, examples, task, progress=progress, **settings)

    run.__doc__ = f"{task}: " + METRICS[task]
    return run


METRICS = {"translation": "chrF and BLEU", "qa": "exact match", "summarization": "ROUGE-1, ROUGE-2, ROUGE-L and chrF"}
TASKS = {"lm": language_model, **{task: task_model(task) for task in tasks.TASKS}}


def evaluate(model, path: str | Path, task: str = "lm", **options) -> dict:
    """Run evaluation task `task` on the file at `path`."""
    if task not in TASKS:
        raise ValueError(f"Unknown evaluation task {task!r}. Allowed: {', '.join(TASKS)}")
    return TASKS[task](model, path, **options)


def record(folder: str | Path, task: str, path: str | Path, metrics: dict, command: str,
           settings: dict | None = None) -> None:
    """Keep an evaluation in a model folder: config.json's provenance["evaluations"] (one entry per
    task, file and settings, replaced on a rerun) and the model card rendered from it.

    Both files are replaced atomically, so an interruption leaves the folder as it was.
    """
    import datetime
    import json
    import os

    from edgellm.folder import json_file, model_card
    from edgellm.folder.model_folder import CONFIG_FILE, EDGELLM_KEY, FIX

    folder = Path(folder)
    config = json_file.read_object(folder / CONFIG_FILE, FIX).doc
    doc = config.get(EDGELLM_KEY, config)  # format 2 keeps edgellm's document under one key
    entry = {"task": task, "file": Path(path).as_posix(), "settings": settings or {}, "metrics": metrics,
             "command": command, "date": datetime.date.today().isoformat()}
    same = ("task", "file", "settings")
    kept = [e for e in doc.setdefault("provenance", {}).get("evaluations") or []
            if [e.get(k) for k in same] != [entry[k] for k in same]]
    doc["provenance"]["evaluations"] = [*kept, entry]
    card = model_card.render(folder.name, doc, folder)
    for name, text in ((CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False) + "\n"), ("README.md", card)):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
