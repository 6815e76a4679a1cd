"""The tokenizer commands of `edgellm`: train a tokenizer, show how text is cut into tokens."""

from __future__ import annotations

import sys

import click

from edgellm.cli.options import CONTEXT


@click.group(context_settings=CONTEXT)
def tokenizer():
    """Train byte-level BPE tokenizers, saved as Hugging Face tokenizer.json files.

    \b
    edgellm tokenizer train data/tinyshakespeare/input.txt --vocab-size 2048 -o tokenizer.json
    edgellm tokenize "ROMEO: Is the day so young?" --tokenizer tokenizer.json
    """


@tokenizer.command("train", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True)
@click.option("--vocab-size", "-v", type=click.IntRange(min=257), default=4096,
              help="Number of ids: 256 bytes + merges + special tokens.")
@click.option("--min-frequency", type=click.IntRange(min=1), default=2, help="Pairs seen fewer times are never merged.")
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
    tok = Tokenizer.train_from_files(files, vocab_size, special_tokens, min_frequency, progress=_progress_bar)
    try:
        tok.save(output)
    except OSError as error:  # named by its option, which the library cannot know
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


@click.command(context_settings=CONTEXT)
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
    from edgellm.folder import model_folder
    from edgellm.tokenizer import Tokenizer

    if (tokenizer_path is None) == (model is None):
        raise click.ClickException("tokenize needs exactly one tokenizer. Received: "
                                   f"--tokenizer {tokenizer_path}, --model {model}. Pass --tokenizer PATH or --model NAME")
    if text == "-":
        text = sys.stdin.read()
    path = tokenizer_path or model_folder.resolve(model) / model_folder.TOKENIZER_FILE
    tok = Tokenizer.load(path)
    token_ids = tok.encode(text, allow_special=allow_special)
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
