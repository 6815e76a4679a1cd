"""The runtime commands of `edgellm`: generate, chat, eval, bench and info.

They need only numpy and onnxruntime (TensorFlow and Keras are never imported); results go to
stdout, progress and timings to stderr; library errors become one line and exit code 1 in the
group that runs them (group.py), so the commands here have no try blocks for them.
"""

from __future__ import annotations

import json
import shlex
import sys

import click

from edgellm.cli.options import (CONTEXT, THREADS, constraint_from_options, constraint_options, generation_options,
                                  settings_from_options)


def _model_options(command):
    command = click.option("--threads", type=THREADS, help="onnxruntime intra-op threads. [default: half the logical cores, at most 16]")(command)
    command = click.option("--provider", "providers", multiple=True,
                           help="onnxruntime execution provider, e.g. CPUExecutionProvider; repeatable. "
                                "[default: CUDA when available, else CPU]")(command)
    return click.option("--model", "-m", default="shakespeare", show_default=True,
                        help="A shipped model's name or a model folder written by `edgellm export`.")(command)


def _load(model: str, providers: tuple, threads: int | None):
    from edgellm.generator import load

    return load(model, providers=list(providers) or None, threads=threads)


def _timings_line(timings: dict) -> str:
    return (f"prompt {timings.get('prompt_tokens', 0)} tokens, prefill {timings.get('prefill_ms', 0):.1f} ms, "
            f"{timings.get('new_tokens', 0)} new tokens at {timings.get('decode_tokens_per_s', 0):.0f} tokens/s")


@click.command(context_settings=CONTEXT)
@click.argument("prompt")
@_model_options
@generation_options
@constraint_options
@click.option("--timings", is_flag=True, help="Print prefill time and decode speed to stderr.")
def generate(prompt, model, providers, threads, timings, **options):
    """Continue PROMPT with a model and print the text ("-" reads the prompt from stdin).

    One sequence streams to stdout as it is generated; several (--num-return-sequences,
    --num-beams) are printed one after the other, separated by a line of dashes. With
    --json-schema, --regex or --json the continuation is constrained to match (a text cut by
    --max-new-tokens may not parse). A text model's output starts with the prompt; a task model
    (trained with --examples) prints its completion alone.
    """
    settings = settings_from_options(options)
    constraint = constraint_from_options(options)
    if prompt == "-":
        prompt = sys.stdin.read()
    generator = _load(model, providers, threads)
    config = generator.settings(**settings)
    if constraint is not None:
        try:  # checked before any text is printed
            generator.compile(constraint)
        except ModuleNotFoundError as error:  # the structured extra is missing: its message says what to install
            raise click.ClickException(str(error)) from None
    echoed = "" if generator.task_template else prompt
    try:
        if config.num_return_sequences == 1 and config.num_beams == 1:
            prompt_ids = generator.encode_prompt(prompt, config)  # a prompt too long is refused before printing
            click.echo(echoed, nl=False)
            figures: dict = {}
            for piece in generator.text_steps(prompt_ids, config, timings=figures, constraint=constraint):
                click.echo(piece, nl=False)
            click.echo()
        else:
            results = generator.generate(prompt, config, constraint=constraint)
            results = results if isinstance(results, list) else [results]
            for i, result in enumerate(results):
                click.echo(("" if i == 0 else "\n---\n") + echoed + result.text)
            figures = results[0].timings
    except KeyboardInterrupt:  # Ctrl-C: end the line and stop, without timings
        click.echo()
        return
    if timings:
        click.echo(_timings_line(figures), err=True)


@click.command(context_settings=CONTEXT)
@_model_options
@generation_options
@click.option("--user", default="User", show_default=True, help="Your name in the transcript.")
@click.option("--bot", default="Model", show_default=True, help="The model's name in the transcript.")
@click.option("--system", default="", help="Text placed before the conversation.")
def chat(model, providers, threads, user, bot, system, **options):
    """Talk with a model: type a message, read the streamed reply; Ctrl-D or Ctrl-C ends.

    The conversation is kept as a transcript; the oldest turns are dropped when it would no
    longer fit in the model's context.
    """
    from edgellm.chat import Chat

    settings = settings_from_options(options)
    conversation = Chat(_load(model, providers, threads), user=user, bot=bot, system=system, **settings)
    click.echo(f"chatting with {model} as {user}; Ctrl-D or Ctrl-C ends", err=True)
    typed = sys.stdin.isatty()  # piped or redirected input is echoed, so the transcript reads right
    try:
        while True:
            click.echo(f"{user}: ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line:  # Ctrl-D
                break
            if not typed:
                click.echo(line.rstrip("\n"), err=True)
            if not line.strip():
                continue
            click.echo(f"{bot}: ", nl=False, err=True)
            for piece in conversation.send(line.rstrip("\n")):
                click.echo(piece, nl=False)
            click.echo()
    except KeyboardInterrupt:  # Ctrl-C ends the conversation like Ctrl-D
        pass
    click.echo(err=True)


@click.command("eval", context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_model_options
@click.option("--task", default="lm", show_default=True,
              help="What to measure: lm (perplexity and loss per character of a text file), "
                   "translation (chrF and BLEU), qa (exact match) or summarization (ROUGE-1, ROUGE-2, "
                   "ROUGE-L and chrF) of a JSONL/TSV prompt/completion file, generated greedily by a "
                   "task model.")
@click.option("--max-chars", type=click.IntRange(min=1), help="lm: evaluate only the first N characters.")
@click.option("--max-examples", type=click.IntRange(min=1), help="Task models: only the first N examples.")
@click.option("--num-beams", type=click.IntRange(min=1), default=1, help="Task models: beam search width.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--record", is_flag=True,
              help="Also keep the metrics, with this command, in the model folder's config.json and "
                   "model card (README.md).")
def evaluate_command(file, model, providers, threads, task, max_chars, max_examples, num_beams, as_json, record):
    """Evaluate a model on FILE through its ONNX model (the one apps run)."""
    from edgellm.evaluate import TASKS, evaluate

    if task not in TASKS:
        raise click.BadParameter(f"must be one of {', '.join(TASKS)}. Received: {task!r}", param_hint="--task")
    loaded = _load(model, providers, threads)
    if task == "lm":
        metrics = evaluate(loaded, file, task, max_chars=max_chars)
    else:
        from edgellm import tasks

        examples = tasks.read_examples(file)[:max_examples]
        prompts = len({e.prompt for e in examples})
        with click.progressbar(length=prompts, label=f"{task} eval", file=sys.stderr) as bar:
            metrics = tasks.evaluate(loaded, examples, task, num_beams=num_beams, progress=lambda: bar.update(1))
    _print_metrics(metrics, as_json)
    if record:
        from edgellm.evaluate import record as record_evaluation

        command = "edgellm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        settings = {} if task == "lm" else {"decoding": f"beam search, {num_beams} beams" if num_beams > 1 else "greedy"}
        record_evaluation(loaded.folder.path, task, file, metrics, command, settings)
        click.echo(f"recorded in {loaded.folder.path / 'README.md'}", err=True)


@click.command(context_settings=CONTEXT)
@_model_options
@click.option("--prompt-tokens", default=16, type=click.IntRange(min=1), show_default=True,
              help="Prompt length (below the model's context).")
@click.option("--new-tokens", default=64, type=click.IntRange(min=1), show_default=True,
              help="Tokens generated per run (fewer when the context ends first).")
@click.option("--batch", "batches", default="1,4", show_default=True, help="Batch sizes, comma separated.")
@click.option("--repeats", default=5, type=click.IntRange(min=1), show_default=True,
              help="Runs per figure (the median is shown).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench(model, providers, threads, prompt_tokens, new_tokens, batches, repeats, as_json):
    """Measure prefill time and greedy decode speed of a model on this machine."""
    from edgellm.benchmark import decode_speed, time_per_token

    try:
        sizes = [int(b) for b in batches.split(",")]
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"must be positive integers separated by commas. Received: {batches!r}",
                                 param_hint="--batch") from None
    generator = _load(model, providers, threads)
    rows = [decode_speed(generator, prompt_tokens, new_tokens, b, repeats) for b in sizes]
    context = generator.config.context_length
    late = max(1, context - 32)
    per_token = {"early_ms": time_per_token(generator, min(10, late), repeats=repeats),
                 "late_ms": time_per_token(generator, late, repeats=repeats), "late_position": late}
    if as_json:
        click.echo(json.dumps({"model": model, "providers": generator.providers, "runs": rows,
                               "time_per_token": per_token}, indent=2))
        return
    click.echo(f"{model} on {generator.providers[0]}")
    click.echo(f"{'batch':>5} {'prompt':>6} {'new':>5} {'prefill ms':>10} {'decode tok/s':>12}")
    for r in rows:
        click.echo(f"{r['batch']:>5} {r['prompt_tokens']:>6} {r['new_tokens']:>5} {r['prefill_ms']:>10.1f} "
                   f"{r['decode_tokens_per_s']:>12.0f}")
    click.echo(f"time per token: {per_token['early_ms']:.2f} ms at position 10, {per_token['late_ms']:.2f} ms "
               f"at position {late} ({per_token['late_ms'] / per_token['early_ms']:.2f}x)")


@click.command(context_settings=CONTEXT)
@click.argument("model", default="shakespeare")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(model, as_json):
    """Describe MODEL (a shipped model's name or a model folder): shape, files, defaults, provenance."""
    from edgellm.folder.model_folder import describe

    details = describe(model)
    if as_json:
        click.echo(json.dumps(details, indent=2, default=str))
        return
    for key, value in details.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")


def _print_metrics(metrics: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    read = metrics.get("examples_read", metrics.get("examples"))
    for key, value in metrics.items():
        if key == "examples_read":
            continue
        line = f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}"
        if key == "examples" and read != value:
            line += (f" (distinct prompts of the {read} read: a repeated prompt is scored once, against all "
                     "its completions)")
        click.echo(line)
