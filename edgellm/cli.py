"""The `edgellm` command: thin click commands over the library.

Results go to stdout; progress and timings to stderr. Library errors become one line on stderr
and exit code 1. `edgellm train` and `edgellm export` need the train extra and are imported only
when called, so `edgellm generate` never loads TensorFlow or Keras.
"""

from __future__ import annotations

import sys

import click

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
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
def export(checkpoint, out_dir, opset, quantize, fp16, force):
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
        parity = run_export(checkpoint, out_dir, opset=opset, weights=weights, force=force)["parity"]
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {out_dir} (max logit difference vs Keras: prefill "
               f"{parity['max_abs_logit_diff_prefill']:.1e}, decode {parity['max_abs_logit_diff_decode']:.1e})",
               err=True)
    click.echo(out_dir)


@main.command(context_settings=CONTEXT)
@click.argument("prompt")
@click.option("--model", "-m", default="shakespeare",
              help="A shipped model's name or a model folder written by `edgellm export`.")
@click.option("--max-new-tokens", "-n", type=int, help="Tokens to generate at most. [default: the model's]")
@click.option("--temperature", "-t", type=float, help="0 for greedy; higher is more random. [default: the model's]")
@click.option("--top-k", type=int, help="Sample among the k most likely tokens (0 = off).")
@click.option("--top-p", type=float, help="Sample among the tokens making up this probability mass (1 = off).")
@click.option("--min-p", type=float, help="Drop tokens less likely than this fraction of the top one.")
@click.option("--repetition-penalty", type=float, help="Penalise tokens already seen (1 = off).")
@click.option("--seed", type=int, help="Seed of the sampler: the same seed gives the same text.")
@click.option("--threads", type=int, help="onnxruntime intra-op threads.")
def generate(prompt, model, threads, **settings):
    """Continue PROMPT with a model, streaming the text to stdout ("-" reads the prompt from stdin)."""
    from edgellm.generator import load

    if prompt == "-":
        prompt = sys.stdin.read()
    settings = {k: v for k, v in settings.items() if v is not None}
    try:
        generator = load(model, threads=threads)
        click.echo(prompt, nl=False)
        for piece in generator.stream(prompt, **settings):
            click.echo(piece, nl=False)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        pass
    click.echo()


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
