"""Task models: the prompt template they are trained with, and their evaluation.

A task model (translation, question answering) is trained on prompt/completion pairs in this
template, and generation must use the same one:

    prompt ids + [<|completion|>]  ->  the model writes the completion, then <|endoftext|>

The user's prompt is encoded as plain text (a special-token string inside it stays text); the
template's <|completion|> is the special id. Model folders of task models say so in
config.json ("prompt_template": "completion"), and the runtime then applies the template to
every prompt (`generate`, `stream`, `edgellm generate`, `edgellm serve`).

Evaluation runs greedy generation through the ONNX model and scores the completions:
translation with chrF and BLEU (sacrebleu; several references per source when a prompt appears
more than once in the file), question answering with exact match after trimming whitespace,
summarization with ROUGE-1, ROUGE-2 and ROUGE-L (F1 with stemming, rouge-score; the best
reference of each prompt) and chrF.

Example:
    >>> import edgellm
    >>> tokenizer = edgellm.load("en-fr").tokenizer
    >>> ids = template_ids(tokenizer, "English: Go.\\nFrench:")
    >>> ids[-1] == tokenizer.special_tokens[COMPLETION_TOKEN]
    True
"""

from __future__ import annotations

import gzip
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from edgellm.folder import json_file
from edgellm.session.batching import PromptTooLong
from edgellm.tokenizer import Tokenizer

COMPLETION_TOKEN = "<|completion|>"
END_TOKEN = "<|endoftext|>"
TASK_SPECIAL_TOKENS = (END_TOKEN, COMPLETION_TOKEN)
TASKS = ("translation", "qa", "summarization")


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


def read_examples(path: str | Path) -> list[Example]:
    """Read prompt/completion pairs: JSONL ({"prompt": ..., "completion": ...} per line) or TSV
    (prompt<TAB>completion, a literal \\n standing for a newline), either possibly gzipped.
    A bad line is named."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        lines = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8").splitlines()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"Cannot read examples file {path}: {getattr(error, 'strerror', None) or error}.") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"Examples file {path} is not UTF-8 (byte offset {error.start}).") from None
    jsonl = ".jsonl" in path.suffixes or ".json" in path.suffixes
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        if jsonl:
            try:
                record = json_file.parse(line, where)
            except ValueError as error:
                raise ValueError(f'{error} Each line must be one {{"prompt": ..., "completion": ...}} object.') \
                    from None
            if not isinstance(record, dict):
                raise ValueError(f'{where}: needs a {{"prompt": ..., "completion": ...}} object. Received: {line[:80]}')
            missing = [key for key in ("prompt", "completion") if not isinstance(record.get(key), str)]
            if missing:
                raise ValueError(f'{where}: needs a string field "{missing[0]}". Received: {line[:80]}')
            prompt, completion = record["prompt"], record["completion"]
        else:
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(f"{where}: needs prompt<TAB>completion. Received {len(fields)} field(s).")
            prompt, completion = (f.replace("\\n", "\n") for f in fields)
        if not prompt.strip():
            raise ValueError(f"{where}: the prompt is empty. Every example needs a prompt.")
        if not completion.strip():
            raise ValueError(f"{where}: the completion is empty. Every example needs a completion.")
        examples.append(Example(prompt, completion))
    if not examples:
        raise ValueError(f"Examples file {path} holds no examples.")
    return examples


def template_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Encode a user prompt in the task template (chat_template.TASK_TEMPLATE, the chat template
    of task model folders, rendered with the prompt as one user message)."""
    from edgellm.chat import template as chat_template

    if COMPLETION_TOKEN not in tokenizer.special_tokens:
        raise ValueError(f"This model's tokenizer has no {COMPLETION_TOKEN} token, so it is not a task "
                         "model. Use a model trained with `edgellm train --examples`.")
    return chat_template.encode(tokenizer, chat_template.TASK_TEMPLATE, [{"role": "user", "content": prompt}])


def complete(model, prompt: str, **settings) -> str:
    """Greedy (by default; beam search with num_beams) completion of one prompt by a task model."""
    if not model.task_template:
        raise ValueError(f"{model.folder.path} is not a task model (its config.json has no "
                         '"prompt_template": "completion"). Pass a model trained with --examples.')
    settings.setdefault("temperature", 0.0)
    return model.generate(prompt, **settings).text


def evaluate(model, examples, task: str, progress=None, **settings) -> dict:
    """Score a task model on (prompt, completion) examples; returns the metrics and the count.

    Args:
        model: a loaded `Generator` whose tokenizer has the task tokens.
        examples: objects with `.prompt` and `.completion`.
        task: "translation" (chrF, BLEU), "qa" (exact match, in percent) or "summarization"
            (ROUGE-1, ROUGE-2, ROUGE-L, chrF); all on a 0-100 scale like sacrebleu's.
        progress: an optional callable called once per prompt done.
        **settings: generation settings (e.g. num_beams=4); greedy unless told.

    Example:
        >>> pairs = [Example("English: I like cats.\\nFrench:", "J'aime les chats.")]
        >>> sorted(evaluate(edgellm.load("en-fr"), pairs, "translation"))
        ['bleu', 'chrf', 'examples', 'examples_read', 'task', 'too_long']
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}. Received: task={task!r}")
    references: OrderedDict[str, list[str]] = OrderedDict()
    for example in examples:
        references.setdefault(example.prompt, []).append(example.completion.strip())
    hypotheses, too_long = [], 0
    for prompt in references:
        try:
            hypotheses.append(complete(model, prompt, **settings).strip())
        except PromptTooLong:
            too_long += 1  # scored as an empty (wrong) answer, and counted
            hypotheses.append("")
        if progress is not None:
            progress()
    refs = list(references.values())
    # examples: the distinct prompts scored; examples_read: the pairs read (a repeated prompt is
    # scored once, against each of its completions)
    counts = {"task": task, "examples": len(refs), "examples_read": len(examples)}
    if task == "qa":
        correct = sum(h in r for h, r in zip(hypotheses, refs))
        return {**counts, "exact_match": 100 * correct / len(refs), "too_long": too_long}
    sacrebleu = _metrics_library("sacrebleu", task)
    width = max(len(r) for r in refs)
    # sacrebleu takes one stream per reference position; missing references are None
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    chrf = sacrebleu.corpus_chrf(hypotheses, streams).score
    if task == "summarization":
        return {**counts, **rouge(hypotheses, refs), "chrf": chrf, "too_long": too_long}
    return {**counts, "chrf": chrf,
            "bleu": sacrebleu.corpus_bleu(hypotheses, streams).score, "too_long": too_long}


def rouge(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (x 100) with Porter stemming, each hypothesis
    scored against its best reference (rouge-score's `score_multi`)."""
    import logging

    rouge_scorer = _metrics_library("rouge_score.rouge_scorer", "summarization")
    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score logs each new scorer at INFO
    names = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=True)
    totals = dict.fromkeys(names, 0.0)
    for hypothesis, refs in zip(hypotheses, references):
        scores = scorer.score_multi(refs, hypothesis)
        for name in names:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(hypotheses) for name, total in totals.items()}


def _metrics_library(module: str, task: str):
    """Import a metrics module of the eval extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0].replace("_", "-")
        raise ValueError(f"{task.capitalize()} metrics need {package}. Install it with: "
                         "pip install 'edgellm[eval]'") from None
