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


if __name__ == "__main__":
    main()
