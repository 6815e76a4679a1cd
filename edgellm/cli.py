"""The `edgellm` command: thin click commands over the library.

Results go to stdout; progress and timings to stderr. Library errors become one line on stderr
and exit code 1. `edgellm train` and `edgellm export` need the train extra and are imported only
when called, so `edgellm generate` never loads TensorFlow or Keras.
"""

from __future__ import annotations

import json
import shlex
import sys

import click

from edgellm.cli_options import generation_options, settings_from_options

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
TRAIN_EXTRA = "pip install 'edgellm[train]'"


class LazyGroup(click.Group):
    """Commands that live in modules needing optional dependencies load only when invoked."""

    lazy = {"train": ("edgellm.training.train", "command", "Train a model on text files (train extra).")}

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx, name):
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module_name, attr, help_text = self.lazy[name]
        try:
            module = __import__(module_name, fromlist=[attr])
        except ImportError as error:
            return _missing_extra(name, help_text, error)
        return getattr(module, attr)


def _missing_extra(name: str, help_text: str, error: ImportError) -> click.Command:
    def fail(**_):
        raise click.ClickException(f"edgellm {name} needs {error.name}, which is not installed. "
                                   f"Install it with: {TRAIN_EXTRA}")

    return click.Command(name, callback=fail, help=help_text, context_settings={"ignore_unknown_options": True},
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)])


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="edgellm")
def main():
    """edgellm: train a small Transformer language model with Keras, export it to ONNX, and
    generate text with numpy and onnxruntime.

    \b
    edgellm train data/tinyshakespeare/input.txt --out runs/shakespeare
    edgellm export runs/shakespeare models/my-model
    edgellm generate "ROMEO:" --model models/my-model
    """


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--opset", default=17, help="ONNX opset to convert to.")
@click.option("--quantize", type=click.Choice(["int8"]), help="Ship int8 weights (onnxruntime dynamic quantization).")
@click.option("--fp16", is_flag=True, help="Ship float16 weights (inputs and outputs stay float32).")
@click.option("--kv-cache", type=click.Choice(["in_place", "concat"]), default="in_place", show_default=True,
              help="in_place: attention as onnxruntime's GroupQueryAttention, which updates one preallocated "
                   "cache (fast late in a long context). concat: standard ONNX operators only, for other "
                   "ONNX runtimes; the cache is copied each step.")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
def export(checkpoint, out_dir, opset, quantize, fp16, kv_cache, force):
    """Export a training CHECKPOINT to a validated ONNX model folder OUT_DIR.

    The float32 ONNX model (with KV cache) is checked against the Keras model before anything
    is written: at batch sizes 1 and 3 (left-padded), greedy tokens must be identical for 32 new
    tokens and logits within 1e-4. With --quantize int8 or --fp16, model.onnx holds the smaller
    weights and the model card compares size, perplexity and speed with float32. The folder
    appears only when complete. Needs the train extra.
    """
    if quantize and fp16:
        raise click.UsageError("Choose one of --quantize int8 and --fp16.")
    weights = "int8" if quantize else "float16" if fp16 else "float32"
    try:
        from edgellm.export.onnx_export import export as run_export
    except ImportError as error:
        raise click.ClickException(f"edgellm export needs {error.name}. Install it with: {TRAIN_EXTRA}")
    try:
        parity = run_export(checkpoint, out_dir, opset=opset, weights=weights, force=force,
                            kv_cache=kv_cache)["parity"]
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {out_dir} (max logit difference vs Keras: prefill "
               f"{parity['max_abs_logit_diff_prefill']:.1e}, decode {parity['max_abs_logit_diff_decode']:.1e})",
               err=True)
    click.echo(out_dir)


# ---- runtime commands: generate, chat, eval, bench, info -------------------------------------

def _model_options(command):
    command = click.option("--threads", type=int, help="onnxruntime intra-op threads. [default: half the logical cores, at most 16]")(command)
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


@main.command(context_settings=CONTEXT)
@click.argument("prompt")
@_model_options
@generation_options
@click.option("--timings", is_flag=True, help="Print prefill time and decode speed to stderr.")
def generate(prompt, model, providers, threads, timings, **options):
    """Continue PROMPT with a model and print the text ("-" reads the prompt from stdin).

    One sequence streams to stdout as it is generated; several (--num-return-sequences,
    --num-beams) are printed one after the other, separated by a line of dashes.
    """
    settings = settings_from_options(options)
    if prompt == "-":
        prompt = sys.stdin.read()
    try:
        generator = _load(model, providers, threads)
        config = generator.settings(**settings)
        if config.num_return_sequences == 1 and config.num_beams == 1:
            click.echo(prompt, nl=False)
            figures: dict = {}
            for piece in generator.stream(prompt, config, timings=figures):
                click.echo(piece, nl=False)
            click.echo()
        else:
            results = generator.generate(prompt, config)
            results = results if isinstance(results, list) else [results]
            for i, result in enumerate(results):
                click.echo(("" if i == 0 else "\n---\n") + prompt + result.text)
            figures = results[0].timings
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo()
        return
    if timings:
        click.echo(_timings_line(figures), err=True)


@main.command(context_settings=CONTEXT)
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
    try:
        conversation = Chat(_load(model, providers, threads), user=user, bot=bot, system=system, **settings)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"chatting with {model} as {user}; Ctrl-D or Ctrl-C ends", err=True)
    try:
        while True:
            click.echo(f"{user}: ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line:  # Ctrl-D
                break
            if not line.strip():
                continue
            click.echo(f"{bot}: ", nl=False, err=True)
            for piece in conversation.send(line.rstrip("\n")):
                click.echo(piece, nl=False)
            click.echo()
    except KeyboardInterrupt:
        pass
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(err=True)


@main.command("eval", context_settings=CONTEXT)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_model_options
@click.option("--task", default="lm", show_default=True,
              help="What to measure: lm (perplexity and loss per character of a text file), "
                   "translation (chrF and BLEU) or qa (exact match) of a JSONL/TSV prompt/completion "
                   "file, generated greedily by a task model.")
@click.option("--max-chars", type=int, help="lm: evaluate only the first N characters.")
@click.option("--max-examples", type=click.IntRange(min=1), help="translation, qa: only the first N examples.")
@click.option("--num-beams", type=click.IntRange(min=1), default=1, help="translation, qa: beam search width.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--record", is_flag=True,
              help="Also keep the metrics, with this command, in the model folder's config.json and "
                   "model card (README.md).")
def evaluate_command(file, model, providers, threads, task, max_chars, max_examples, num_beams, as_json, record):
    """Evaluate a model on FILE through its ONNX model (the one apps run)."""
    from edgellm.evaluate import TASKS, evaluate

    if task not in TASKS:
        raise click.BadParameter(f"must be one of {', '.join(TASKS)}. Received: {task!r}", param_hint="--task")
    try:
        loaded = _load(model, providers, threads)
        if task == "lm":
            metrics = evaluate(loaded, file, task, **({"max_chars": max_chars} if max_chars else {}))
        else:
            from edgellm import tasks

            examples = tasks.read_examples(file)[:max_examples]
            prompts = len({e.prompt for e in examples})
            with click.progressbar(length=prompts, label=f"{task} eval", file=sys.stderr) as bar:
                metrics = tasks.evaluate(loaded, examples, task, num_beams=num_beams, progress=lambda: bar.update(1))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    _print_metrics(metrics, as_json)
    if record:
        from edgellm.evaluate import record as record_evaluation

        command = "edgellm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        settings = {} if task == "lm" else {"decoding": f"beam search, {num_beams} beams" if num_beams > 1 else "greedy"}
        record_evaluation(loaded.folder.path, task, file, metrics, command, settings)
        click.echo(f"recorded in {loaded.folder.path / 'README.md'}", err=True)


@main.command(context_settings=CONTEXT)
@_model_options
@click.option("--prompt-tokens", default=16, show_default=True, help="Prompt length.")
@click.option("--new-tokens", default=64, show_default=True, help="Tokens generated per run.")
@click.option("--batch", "batches", default="1,4", show_default=True, help="Batch sizes, comma separated.")
@click.option("--repeats", default=5, show_default=True, help="Runs per figure (the median is shown).")
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
    try:
        generator = _load(model, providers, threads)
        rows = [decode_speed(generator, prompt_tokens, new_tokens, b, repeats) for b in sizes]
        context = generator.config.context_length
        late = max(1, context - 32)
        per_token = {"early_ms": time_per_token(generator, min(10, late), repeats=repeats),
                     "late_ms": time_per_token(generator, late, repeats=repeats), "late_position": late}
    except ValueError as error:
        raise click.ClickException(str(error)) from None
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


@main.command(context_settings=CONTEXT)
@click.argument("model", default="shakespeare")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(model, as_json):
    """Describe MODEL (a shipped model's name or a model folder): shape, files, defaults, provenance."""
    from edgellm.model_folder import describe

    try:
        details = describe(model)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
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
    for key, value in metrics.items():
        click.echo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")


# ---- tokenizer commands: train a tokenizer, show how text is cut into tokens ------------------


@main.group(context_settings=CONTEXT)
def tokenizer():
    """Train byte-level BPE tokenizers, saved as Hugging Face tokenizer.json files.

    \b
    edgellm tokenizer train data/tinyshakespeare/input.txt --vocab-size 2048 -o tokenizer.json
    edgellm tokenize "ROMEO: Is the day so young?" --tokenizer tokenizer.json
    """


@tokenizer.command("train", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True)
@click.option("--vocab-size", "-v", type=int, default=4096,
              help="Number of ids: 256 bytes + merges + special tokens.")
@click.option("--min-frequency", type=int, default=2, help="Pairs seen fewer times are never merged.")
@click.option("--special-token", "special_tokens", multiple=True, default=["<|endoftext|>"],
              help="A special token, given ids after the merges (repeat for several).")
@click.option("--output", "-o", default="tokenizer.json", type=click.Path(dir_okay=False), help="File to write.")
def tokenizer_train(files, vocab_size, min_frequency, special_tokens, output):
    """Train a byte-level BPE tokenizer on UTF-8 text FILES and write it as tokenizer.json.

    Deterministic: the same files and options give the same file. Progress goes to stderr,
    the path written to stdout.
    """
    import time

    from edgellm.tokenizer import Tokenizer

    start = time.perf_counter()
    try:
        tok = Tokenizer.train_from_files(files, vocab_size, special_tokens, min_frequency, progress=_progress_bar)
        tok.save(output)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"Cannot write the tokenizer: {error.strerror}. Received: --output {output}. "
                                   "Pass a path in an existing, writable folder") from None
    click.echo(f"{tok.vocab_size} ids ({len(tok.merges)} merges) from {len(files)} file(s) in "
               f"{time.perf_counter() - start:.1f} s", err=True)
    if tok.vocab_size < vocab_size:
        click.echo(f"stopped below --vocab-size {vocab_size}: no pair left seen {min_frequency} times or more",
                   err=True)
    click.echo(output)


def _progress_bar(items, label):
    """A progress bar on stderr when it is a terminal; logs and pipes get no bar lines."""
    if not sys.stderr.isatty():
        yield from items
        return
    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


@main.command(context_settings=CONTEXT)
@click.argument("text")
@click.option("--tokenizer", "tokenizer_path", help="A tokenizer.json file.")
@click.option("--model", "-m", help="A shipped model's name or a model folder: use its tokenizer.json.")
@click.option("--ids", is_flag=True, help="Print ids instead of tokens.")
@click.option("--allow-special", is_flag=True, help="Encode special-token text (<|endoftext|>) as its special id.")
def tokenize(text, tokenizer_path, model, ids, allow_special):
    """Show how TEXT is cut into tokens ("-" reads the text from stdin).

    Prints the tokens as a list (str, or bytes for a piece of a UTF-8 character), or with --ids
    the ids; the count goes to stderr.
    """
    from edgellm import model_folder
    from edgellm.tokenizer import Tokenizer

    if (tokenizer_path is None) == (model is None):
        raise click.ClickException("tokenize needs exactly one tokenizer. Received: "
                                   f"--tokenizer {tokenizer_path}, --model {model}. Pass --tokenizer PATH or --model NAME")
    if text == "-":
        text = sys.stdin.read()
    try:
        path = tokenizer_path or model_folder.resolve(model) / model_folder.TOKENIZER_FILE
        tok = Tokenizer.load(path)
        token_ids = tok.encode(text, allow_special=allow_special)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if ids:
        click.echo(" ".join(map(str, token_ids)))
    else:
        click.echo(repr([_token_text(tok.decode_bytes([i])) for i in token_ids]))
    click.echo(f"{len(token_ids)} tokens, {len(text)} characters", err=True)


def _token_text(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


@main.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("--host", default="127.0.0.1", help="Address to listen on; the default answers this machine only.")
@click.option("--port", default=8000, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
@click.option("--max-concurrency", default=2, type=click.IntRange(min=1),
              help="Generations running at once, each in a worker thread.")
@click.option("--queue-size", default=64, type=click.IntRange(min=0),
              help="Requests waiting for a turn; more are refused with 429.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads.")
@click.option("--log-level", default="info", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="Server log level (access lines at info).")
def serve(model, host, port, max_concurrency, queue_size, threads, log_level):
    """Serve MODEL with OpenAI's API at http://HOST:PORT/v1 until Ctrl-C or SIGTERM (serve extra).

    \b
    POST /v1/completions, POST /v1/chat/completions (with "stream": true: server-sent events),
    GET /v1/models, GET /health. See docs/server.md.
    """
    try:
        from edgellm.server import serve as run_server
    except ImportError as error:
        raise click.ClickException(f"edgellm serve needs {error.name}, which is not installed. "
                                   "Install it with: pip install 'edgellm[serve]'")
    try:
        run_server(model, host=host, port=port, max_concurrency=max_concurrency, queue_size=queue_size,
                   threads=threads, log_level=log_level)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


if __name__ == "__main__":
    main()
