"""Block-wise int8 or int4 weights, kept only where they measure as good as float32: the export
default (int8) and `edgellm quantize`.

    edgellm quantize models/shakespeare models/shakespeare-int8
    edgellm quantize models/shakespeare models/shakespeare-int4 --weights int4
    edgellm quantize models/en-fr OUT --task translation --eval-file data/tatoeba-fra-eng/test.tsv

The quantized model.onnx is made from the folder's float32 model.onnx by `variants.make_variant`
(blockwise.py, the same quantizer `edgellm export` runs) and measured against it: greedy agreement on the export
gate's prompts, and the change in quality. A text model is scored on held-out windows of its
training files (perplexity must rise by at most 0.5%); a task model by its task metric on an
evaluation file (chrF or exact match within 0.5 points). Otherwise the float32 weights stay, and
the decision says why.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path

MAX_PERPLEXITY_CHANGE = 0.005  # relative: +0.5%
MAX_TASK_METRIC_DROP = 0.5  # points (chrF and ROUGE-L 0-100, exact match in percent)
TASK_METRICS = {"translation": "chrf", "qa": "exact_match", "summarization": "rougeL"}


def greedy_agreement(float32_folder: Path, quantized_folder: Path, prompts=(), new_tokens: int = 32) -> dict:
    """How often quantized greedy decoding gives float32's ids, over the export gate's prompts and
    `prompts`: prompts whose ids are identical, and tokens that match up to the first difference
    (of the longer of the two; generation stops at the folder's stop tokens)."""
    from edgellm.export.validate import DEFAULT_PROMPTS
    from edgellm.generator import Generator

    prompts = [*DEFAULT_PROMPTS, *prompts]
    runs = [Generator(f, providers=["CPUExecutionProvider"]) for f in (float32_folder, quantized_folder)]
    same_prompts = same_tokens = total = 0
    for prompt in prompts:
        a, b = (r.generate(prompt, max_new_tokens=new_tokens, temperature=0.0).token_ids for r in runs)
        same_prompts += a == b
        same_tokens += next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        total += max(len(a), len(b))
    return {"prompts": len(prompts), "max_new_tokens": new_tokens, "identical_prompts": same_prompts,
            "token_agreement": same_tokens / total if total else 1.0}


def decide(float32: dict, quantized: dict, weights: str = "int8") -> tuple[bool, str]:
    """Keep the `weights` variant? Compares `val_perplexity` (text models) or `task_metric` (task models)."""
    if float32.get("val_perplexity") is not None:
        change = quantized["val_perplexity"] / float32["val_perplexity"] - 1
        if change <= MAX_PERPLEXITY_CHANGE:
            return True, f"{weights}: held-out perplexity {change:+.2%} vs float32 (limit +{MAX_PERPLEXITY_CHANGE:.1%})"
        return False, (f"float32 kept: {weights} raises held-out perplexity by {change:+.2%} "
                       f"(limit +{MAX_PERPLEXITY_CHANGE:.1%})")
    if float32.get("task_metric") is not None:
        name, change = float32["task_metric_name"], quantized["task_metric"] - float32["task_metric"]
        drop = -change
        if drop <= MAX_TASK_METRIC_DROP:
            return True, f"{weights}: {name} {change + 0.0:+.2f} points vs float32 (limit -{MAX_TASK_METRIC_DROP})"
        return False, f"float32 kept: {weights} lowers {name} by {drop:.2f} points (limit {MAX_TASK_METRIC_DROP})"
    return False, (f"float32 kept: no held-out text to measure {weights} against (a task model: run "
                   "`edgellm quantize FOLDER OUT --task TASK --eval-file FILE`)")


def task_metric(folder: Path, task: str, eval_file: str, max_examples: int | None = None) -> dict:
    """The task metric of a folder (greedy), in points: chrF, exact match in percent, or ROUGE-L."""
    from edgellm.evaluate import evaluate
    from edgellm.generator import Generator

    if task not in TASK_METRICS:
        raise ValueError(f"task must be one of {tuple(TASK_METRICS)}. Received: task={task!r}")
    metrics = evaluate(Generator(folder, providers=["CPUExecutionProvider"]), eval_file, task,
                       max_examples=max_examples)
    value = metrics[TASK_METRICS[task]]
    return {"task_metric_name": TASK_METRICS[task], "task_metric": value, "task_metrics": metrics}


QUANTIZED_OPERATORS = {"MatMulNBits", "GatherBlockQuantized", "MatMulInteger", "DynamicQuantizeLinear",
                       "DequantizeLinear", "QLinearMatMul"}


def quantize_folder(folder: str | Path, out_dir: str | Path, task: str | None = None,
                    eval_file: str | None = None, max_examples: int | None = None, force: bool = False,
                    weights: str = "int8") -> dict:
    """Write OUT_DIR: FOLDER with `weights` model.onnx if it measures within the limits, else float32.

    Args:
        folder: a model folder whose model.onnx holds float32 weights.
        out_dir: the folder to write (refused if it exists, unless `force`; may not be `folder`,
            inside it or around it).
        task: "translation", "qa" or "summarization" for a task model, measured on `eval_file`
            (chrF, exact match, ROUGE-L); None: a text model,
            measured on held-out windows of the training files named in its provenance.
        eval_file: the task's prompt/completion file.
        max_examples: evaluate only the first N examples of `eval_file`.
        force: replace `out_dir` if it exists.
        weights: "int8" or "int4" (block-wise, blockwise.py).
    Returns: the `quantization` entry written to config.json's provenance.

    Example:
        >>> quantize_folder("models/my-model", "models/my-model-int8")["decision"]  # a float32 folder
        'int8: held-out perplexity +0.01% vs float32 (limit +0.5%)'
    """
    from edgellm.folder import model_card
    from edgellm.export import blockwise, folder_files, variants

    if weights not in blockwise.BITS:
        raise ValueError(f"weights must be one of {tuple(blockwise.BITS)}. Received: weights={weights!r}")
    folder, out_dir = Path(folder), Path(out_dir)
    config = copy.deepcopy(_float32_document(folder))
    inside, around = folder.resolve(), out_dir.resolve()
    if around == inside or inside in around.parents or around in inside.parents:
        raise ValueError(f"The output folder must be outside {folder} and not hold it. Received: {out_dir}. "
                         "Pass a folder beside it.")
    if out_dir.exists() and not force:
        raise ValueError(f"Output folder {out_dir} already exists. Pass a new folder (or --force to replace it).")
    if (task is None) != (eval_file is None):
        raise ValueError("Pass --task and --eval-file together (a task model), or neither (a text model).")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        tmp.chmod(0o755)
        float32_file = tmp / "model.float32.onnx"
        os.replace(tmp / "model.onnx", float32_file)
        variants.make_variant(float32_file, tmp / "model.onnx", weights)
        result = measure_quantized(folder, tmp, config, weights, task, eval_file, max_examples)
        if result["weights"] == "float32":
            os.replace(float32_file, tmp / "model.onnx")
        else:
            float32_file.unlink()
        result["command"] = (f"edgellm quantize {folder} {out_dir}"
                             + (f" --weights {weights}" if weights != "int8" else "")
                             + (f" --task {task} --eval-file {eval_file}" if task else "")
                             + (f" --max-examples {max_examples}" if max_examples else ""))
        config["onnx"]["weights"] = result["weights"]
        config["provenance"]["quantization"] = result
        folder_files.write_config(tmp, _model_config(config), config)
        (tmp / "README.md").write_text(model_card.render(out_dir.name, config, tmp), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _float32_document(folder: Path) -> dict:
    """edgellm's document of a current-format folder whose model.onnx is the float32 graph, read
    through the runtime's checked reader; anything else is refused with what to do."""
    import onnx

    from edgellm.folder import model_folder

    found = model_folder.read(folder)
    if found.format_version != model_folder.FORMAT_VERSION:
        raise ValueError(f"{folder} is a format {found.format_version} model folder. Run `edgellm upgrade {folder}` "
                         "first, then quantize it.")
    weights = found.meta.get("onnx", {}).get("weights", "float32")
    operators = {n.op_type for n in onnx.load(str(folder / model_folder.MODEL_FILE), load_external_data=False)
                 .graph.node} & QUANTIZED_OPERATORS
    if weights != "float32" or operators:
        held = f"{weights} weights" if weights != "float32" else f"quantized operators ({', '.join(sorted(operators))})"
        raise ValueError(f"{folder}/model.onnx holds {held}; edgellm quantize needs the float32 graph. Pass a "
                         "float32 folder: `edgellm export CHECKPOINT OUT --quantize none`, or for a shipped model "
                         "its float32 model.onnx from the repository's history (`git log -- models/NAME/model.onnx`).")
    return found.meta


def measure_quantized(float32_folder: Path, folder: Path, config: dict, weights: str = "int8", task=None,
                      eval_file=None, max_examples=None) -> dict:
    """Figures of float32 and `weights` (size, quality, decode speed), greedy agreement and the decision."""
    from edgellm.export import blockwise, variants
    from edgellm.tokenizer import Tokenizer

    prov = config["provenance"]
    windows = None
    if task is None and config.get("prompt_template") != "completion":  # a task model has no held-out text
        tokenizer = Tokenizer.load(Path(float32_folder) / "tokenizer.json")
        windows = variants.validation_windows(prov, tokenizer, config["architecture"]["context_length"])
    figures = {}
    for name, path in (("float32", float32_folder), (weights, folder)):
        figures[name] = variants.measure(path, windows)
        if task:
            figures[name].update(task_metric(path, task, eval_file, max_examples))
    keep, decision = decide(figures["float32"], figures[weights], weights)
    return {"weights": weights if keep else "float32", "decision": decision, "scheme": blockwise.scheme(weights),
            "figures": figures,
            "greedy_agreement": greedy_agreement(float32_folder, folder, _prompts(windows, task, eval_file,
                                                                                  float32_folder)),
            "limits": {"perplexity_change": MAX_PERPLEXITY_CHANGE, "task_metric_points": MAX_TASK_METRIC_DROP}}


def _prompts(windows, task, eval_file, folder: Path, count: int = 16) -> list[str]:
    """Held-out prompts: the first 16 tokens of `count` validation windows spread over the split,
    or the first `count` prompts of a task's evaluation file."""
    if task:
        from edgellm.tasks import read_examples

        return [e.prompt for e in read_examples(eval_file)[:count]]
    if windows is None:
        return []
    from edgellm.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(Path(folder) / "tokenizer.json")
    step = max(1, len(windows) // count)
    return [tokenizer.decode([int(t) for t in w[:16]]) for w in windows[::step][:count]]


def _model_config(config: dict):
    from edgellm.folder.config import ModelConfig

    return ModelConfig.from_dict(config["architecture"])
