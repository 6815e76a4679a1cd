"""The `edgellm` command: thin click commands over the library.

Results go to stdout; progress and timings to stderr. Library errors become one line on stderr
and exit code 1, for every command at once (group.py). `edgellm train` and `edgellm export` need
the train extra and are imported only when called, so `edgellm generate` never loads TensorFlow
or Keras. The runtime commands live in runtime.py, the tokenizer commands in tokenizer.py, their
shared options in options.py.
"""

from __future__ import annotations

import click

from edgellm import libraries
from edgellm.cli.group import Group
from edgellm.cli.options import CONTEXT
from edgellm.cli.runtime import bench, chat, evaluate_command, generate, info
from edgellm.cli.tokenizer import tokenize, tokenizer
from edgellm.folder.model_folder import KV_CACHES


@click.group(cls=Group, context_settings=CONTEXT)
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
@click.argument("checkpoint", metavar="SOURCE", type=click.Path(exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--opset", default=17, type=click.IntRange(17, 18),  # export/onnx_export.py's OPSETS
              help="ONNX opset to convert to.")
@click.option("--quantize", type=click.Choice(["int8", "int4", "none"]),
              help="int8 (the default) or int4: block-wise weights (onnxruntime's MatMulNBits, blocks of 32), "
                   "kept where held-out perplexity rises by at most 0.5% (else float32, saying why). "
                   "none: float32 weights.")
@click.option("--fp16", is_flag=True, help="Ship float16 weights (inputs and outputs stay float32).")
@click.option("--kv-cache", type=click.Choice(KV_CACHES), default="in_place", show_default=True,
              help="in_place: attention as onnxruntime's GroupQueryAttention, which updates one preallocated "
                   "cache (fast late in a long context). concat: standard ONNX operators only, for other "
                   "ONNX runtimes; the cache is copied each step.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "hf"]), default="onnx", show_default=True,
              help="hf: also write model.safetensors, so transformers' GPT2LMHeadModel loads the folder "
                   "(architectures that are exactly GPT-2's only).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
@libraries.option
def export(checkpoint, out_dir, opset, quantize, fp16, kv_cache, fmt, force):
    """Export SOURCE to a validated ONNX model folder OUT_DIR.

    SOURCE is a training checkpoint folder, or a pretrained model: a GGUF file or a Hugging Face
    model folder (Llama family or GPT-2; docs/pretrained.md).

    The float32 ONNX model (with KV cache) is checked against the Keras model before anything
    is written: at batch sizes 1 and 3 (left-padded), greedy tokens must be identical for 32 new
    tokens and logits within 1e-4. Then model.onnx gets block-wise int8 weights if they measure as good as
    float32 (--quantize int4: int4; none: float32; --fp16: float16), and the model card compares size,
    perplexity, greedy agreement and speed with float32. The folder
    appears only when complete. Needs the train extra.
    """
    if quantize and fp16:
        raise click.UsageError(f"Choose one of --quantize {quantize} and --fp16.")
    weights = "float16" if fp16 else {"none": "float32", None: "int8"}.get(quantize, quantize)
    from edgellm.export.onnx_export import export as run_export

    provenance = run_export(checkpoint, out_dir, opset=opset, weights=weights, force=force, kv_cache=kv_cache,
                            fmt=fmt)
    parity = provenance["parity"]
    click.echo(f"wrote {out_dir} (max logit difference vs Keras: prefill "
               f"{parity['max_abs_logit_diff_prefill']:.1e}, decode {parity['max_abs_logit_diff_decode']:.1e})",
               err=True)
    if "quantization" in provenance:
        click.echo(provenance["quantization"]["decision"], err=True)
    click.echo(out_dir)


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--task", type=click.Choice(["translation", "qa", "summarization"]),
              help="A task model: compare chrF (translation), exact match (qa) or ROUGE-L (summarization) "
                   "on --eval-file.")
@click.option("--eval-file", type=click.Path(exists=True, dir_okay=False), help="The task's prompt/completion file.")
@click.option("--max-examples", type=click.IntRange(min=1), help="Evaluate only the first N examples.")
@click.option("--weights", type=click.Choice(["int8", "int4"]), default="int8", show_default=True,
              help="Block-wise weights (onnxruntime's MatMulNBits, blocks of 32): 8 or 4 bits.")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
def quantize(folder, out_dir, task, eval_file, max_examples, weights, force):
    """Write OUT_DIR: the float32 model FOLDER with int8 (or int4) weights, if they measure as good.

    The quantized model.onnx comes from FOLDER's float32 one by the quantizer `edgellm export` runs. A
    text model keeps them where held-out perplexity (its training files' validation split) rises
    by at most 0.5%, a task model where its metric on --eval-file drops by at most 0.5 points;
    otherwise OUT_DIR keeps float32 and the decision says why. Greedy agreement and the figures
    go into config.json and the model card. Needs onnx (train extra).
    """
    from edgellm.export.quantize import quantize_folder

    result = quantize_folder(folder, out_dir, task=task, eval_file=eval_file, max_examples=max_examples, force=force,
                             weights=weights)
    click.echo(result["decision"], err=True)
    click.echo(out_dir)


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def upgrade(folder):
    """Rewrite a format 1 model FOLDER in place into the current format: config.json,
    tokenizer_config.json, generation_config.json, genai_config.json and model.onnx's dimension
    names, so transformers, Optimum, transformers.js and onnxruntime-genai open it. The weights
    and the graph stay as they are; greedy ids are checked to be unchanged. Needs onnx (train extra).
    """
    from edgellm.export.upgrade import upgrade as run_upgrade

    run_upgrade(folder)
    click.echo(folder)


@main.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("--host", default="127.0.0.1", help="Address to listen on; the default answers this machine only.")
@click.option("--port", default=8000, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
@click.option("--max-concurrency", type=click.IntRange(1, 4096),
              help="Sequences decoding at once (a request takes one per choice, its n). In-place folders on the "
                   "CPU decode them together in one continuous batch of this many rows (default 32); other "
                   "folders run each request in a worker thread, this many at once (default 2).")
@click.option("--queue-size", default=64, type=click.IntRange(min=0),
              help="Requests waiting for a turn; more are refused with 429.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads.")
@click.option("--log-level", default="info", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="Server log level (access lines at info).")
@click.option("--no-ui", is_flag=True, help="Do not answer GET / with the chat page.")
def serve(model, host, port, max_concurrency, queue_size, threads, log_level, no_ui):
    """Serve MODEL with OpenAI's API at http://HOST:PORT/v1 until Ctrl-C or SIGTERM (serve extra).

    \b
    POST /v1/completions, POST /v1/chat/completions (with "stream": true: server-sent events),
    GET /v1/models, GET /health, and a chat page at http://HOST:PORT/. See docs/server.md.
    """
    from edgellm.server.process import serve as run_server

    run_server(model, host=host, port=port, max_concurrency=max_concurrency, queue_size=queue_size,
               threads=threads, log_level=log_level, ui=not no_ui)


@main.command(context_settings=CONTEXT)
@click.argument("model")
@click.option("--node-modules", default="node_modules", show_default=True, type=click.Path(file_okay=False),
              help="A node_modules folder holding onnxruntime-web, @huggingface/tokenizers and @huggingface/jinja "
                   "(npm install onnxruntime-web@1.30.0 @huggingface/tokenizers@0.2.0 @huggingface/jinja@0.5.13).")
@click.option("--host", default="127.0.0.1", help="Address to listen on; the default answers this machine only.")
@click.option("--port", default=8000, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
def web(model, node_modules, host, port):
    """Serve a page that runs MODEL entirely in the browser (onnxruntime-web, WASM), at
    http://HOST:PORT/, until Ctrl-C (serve extra). Greedy decoding; see docs/server.md.
    """
    from edgellm.server.web import serve_folder

    serve_folder(model, node_modules, host=host, port=port)


for _command in (generate, chat, evaluate_command, bench, info, tokenizer, tokenize):
    main.add_command(_command)


if __name__ == "__main__":
    main()
