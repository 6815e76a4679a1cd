"""The model card (README.md of a model folder), written from config.json's provenance."""

from __future__ import annotations

from pathlib import Path

from edgellm.folder.config import SHORT_NAMES


def render(name: str, config: dict, folder: Path) -> str:
    arch = config["architecture"]
    prov = config["provenance"]
    metrics = prov.get("metrics") or {}
    training = prov.get("training") or {}
    parity = prov.get("parity") or {}
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    data = ", ".join(f"`{d}`" for d in prov.get("data") or []) or "unknown"
    command = prov.get("command") or _train_command(prov)
    lines = [
        f"# {name}",
        "",
        "A small decoder-only Transformer language model trained with edgellm (Keras 3), exported to "
        "ONNX with tf2onnx, runnable with `edgellm generate` or any onnxruntime(-genai) app.",
        "",
        "## Model",
        "",
        f"- parameters: {metrics.get('parameters', 'unknown'):,}" if metrics.get("parameters") else
        "- parameters: unknown",
        f"- layers {arch['num_layers']}, heads {arch['num_heads']}, width {arch['hidden_size']}, "
        f"context {arch['context_length']} tokens, vocabulary {arch['vocab_size']} (byte-level BPE)",
        "",
        "## Data and training",
        "",
        f"- data: {data}" + ("" if prov.get("data_licences") else
                             " (see the licence note beside each file in the edgellm repository)"),
        f"- steps: {metrics.get('steps')}, batch {training.get('batch_size')} x {arch['context_length']} "
        f"tokens, seed {training.get('seed')}, {_fmt(metrics.get('train_seconds'), '.0f')} s of training",
        f"- command: `{command}`",
        "",
        "## Metrics (held-out validation: the last "
        f"{_fmt(100 * (training.get('val_fraction') or 0), '.0f')}% of "
        + ("the distinct prompts; completion tokens only)" if training.get("examples") else "each file)"),
        "",
        "| metric | value |",
        "|---|---|",
        f"| validation loss (nats/token) | {_fmt(metrics.get('val_loss'), '.4f')} |",
        f"| validation perplexity | {_fmt(metrics.get('val_perplexity'), '.2f')} |",
        f"| validation loss (nats/character) | {_fmt(metrics.get('val_loss_per_char'), '.4f')} |",
        f"| train loss (last interval) | {_fmt(metrics.get('train_loss'), '.4f')} |",
        "",
    ]
    if (folder / "loss_curve.png").is_file():
        lines += ["![loss curve](loss_curve.png)", ""]
    lines += _evaluations(prov.get("evaluations") or [])
    onnx_info = config.get("onnx", {})
    flags = {"float32": " --quantize none", "float16": " --fp16"}.get(onnx_info.get("weights"), "")
    flags += " --kv-cache concat" if onnx_info.get("kv_cache") == "concat" else ""
    lines += [
        "## Export parity (ONNX with KV cache vs Keras full recompute, float32)",
        "",
        f"- command: `edgellm export {prov.get('checkpoint')} models/{name}{flags}`; KV cache: "
        + ("in place (onnxruntime GroupQueryAttention)" if onnx_info.get("kv_cache") == "in_place"
           else "Concat (standard ONNX operators)"),
        f"- {parity.get('prompts')} prompts, {parity.get('new_tokens_per_prompt')} greedy tokens each, at batch "
        f"sizes {parity.get('batch_sizes')} (left-padded); greedy tokens identical: {parity.get('greedy_tokens_equal')}",
        f"- max |logit difference|: prefill {_fmt(parity.get('max_abs_logit_diff_prefill'), '.2e')}, "
        f"decode {_fmt(parity.get('max_abs_logit_diff_decode'), '.2e')} (gate {parity.get('atol')})",
        "",
        *_variants_table((prov.get("quantization") or {}).get("figures") or prov.get("variants") or {},
                         config["onnx"].get("weights", "float32")),
        *_quantization(prov.get("quantization")),
        *_runtimes(config, folder),
        "## Files",
        "",
        "| file | bytes |",
        "|---|---|",
        *[f"| {n} | {s:,} |" for n, s in sizes.items()],
        "",
        "## Intended use and licence",
        "",
        TASK_USE if config.get("prompt_template") == "completion" else TEXT_USE,
        "",
        "The weights are released under the edgellm licence (Apache-2.0); the training data's own "
        "licence " + ("and attribution follow." if prov.get("data_licences") else "is noted beside it in the repository."),
        "",
    ]
    for path, text in (prov.get("data_licences") or {}).items():
        lines += [f"### Data licence: `{path}`", "", *[f"> {line}".rstrip() for line in text.strip().splitlines()], ""]
    return "\n".join(lines)


TEXT_USE = ("A demonstration and test model for edgellm: text in the style of its training data. Not "
            "for factual answers.")
TASK_USE = ("A task model: give it a prompt written like the prompts of its training pairs; the "
            "runtime adds the completion template (config.json's `prompt_template`) and stops at the "
            "end of the completion. It knows only its task and the words of its training data.")


def _runtimes(config: dict, folder: Path) -> list[str]:
    """Which runtimes open the folder (docs/interop.md), and how it came to this format."""
    opens = ("edgellm; onnxruntime-genai with its own tokenizer, chat template and generator; transformers' "
             "AutoTokenizer (with the chat template); Optimum's ORTModelForCausalLM; transformers.js; "
             "onnxruntime-web with a growing cache")
    if (folder / "model.safetensors").is_file():
        opens += "; transformers' GPT2LMHeadModel (model.safetensors)"
    lines = ["## Runtimes", "", f"Folder format {config.get('format_version')}. Opens unchanged in: {opens}; "
             "greedy ids identical to edgellm's (see docs/interop.md for the lines each needs).", ""]
    upgrade = config.get("provenance", {}).get("upgrade")
    if upgrade:
        lines += [f"Upgraded from format {upgrade.get('from_format_version')} with `{upgrade.get('command')}` "
                  f"(edgellm {upgrade.get('edgellm')}, onnx {upgrade.get('onnx')}): config.json, "
                  "tokenizer_config.json, generation_config.json, genai_config.json and model.onnx's dimension "
                  "names were rewritten; the graph, the weights and the figures above are the export's"
                  + (" (of the float32 weights; the quantized ones were made from them afterwards, as above)."
                     if config["provenance"].get("quantization") else "."), ""]
    return lines


def _evaluations(evaluations: list) -> list[str]:
    """A table per evaluation kept by `edgellm eval --record`."""
    lines = []
    for entry in evaluations:
        metrics = entry["metrics"]
        settings = ", ".join(f"{k} {v}" for k, v in entry.get("settings", {}).items())
        lines += [f"## Evaluation: {entry['task']} on `{entry['file']}`{', ' + settings if settings else ''} "
                  f"({entry['date']})", "",
                  "| metric | value |", "|---|---|",
                  *[f"| {k} | {format(v, '.4f') if isinstance(v, float) else v} |" for k, v in metrics.items()],
                  "", f"- command: `{entry['command']}`", ""]
    return lines


def _variants_table(variants: dict, shipped: str) -> list[str]:
    if not variants:
        return []
    base = variants["float32"]
    lines = [
        "## model.onnx variants (measured at export, against float32)",
        "",
        f"model.onnx in this folder holds **{shipped}** weights.",
        "",
        "| weights | file MB | size vs float32 | val perplexity | perplexity vs float32 | decode tokens/s | speed vs float32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        ppl = v.get("val_perplexity")
        lines.append(
            f"| {name} | {v['file_bytes'] / 1e6:.2f} | {v['file_bytes'] / base['file_bytes']:.0%} | "
            f"{_fmt(ppl, '.3f')} | "
            f"{'n/a' if ppl is None else format(ppl / base['val_perplexity'] - 1, '+.2%')} | "
            f"{v['decode_tokens_per_s']:.0f} | {v['decode_tokens_per_s'] / base['decode_tokens_per_s']:.2f}x |")
    return [*lines, "", "Perplexity is on held-out windows of the training files' validation split.", ""]


def _quantization(q: dict | None) -> list[str]:
    """The quantization decision: what was compared, greedy agreement, the command, how to get float32 back."""
    if not q:
        return []
    agree = q["greedy_agreement"]
    name = next(k for k in q["figures"] if k != "float32")  # the variant measured: int8 or int4
    scheme = q.get("scheme")
    lines = [f"## {name} weights (measured against float32)", "",
             f"- decision: {q['decision']}",
             f"- greedy agreement (the export gate's prompts and held-out prompts, up to {agree['max_new_tokens']} "
             f"tokens each): {agree['identical_prompts']} of {agree['prompts']} prompts identical, "
             f"{agree['token_agreement']:.1%} of tokens match up to the first difference"]
    if scheme:
        lines.append(f"- {name}: block-wise {scheme['bits']}-bit weights, blocks of {scheme['block_size']}, symmetric "
                     f"({scheme['operator']}, accuracy_level {scheme['accuracy_level']}: activations quantized row "
                     "by row, so a row's logits do not depend on the rows beside it); embedding tables the same, "
                     "looked up with standard ONNX operators")
    f32, quantized = q["figures"]["float32"], q["figures"][name]
    if f32.get("task_metric") is not None:
        scores = {k: ", ".join(f"{m} {v:.4f}" for m, v in f["task_metrics"].items() if isinstance(v, float))
                  for k, f in (("float32", f32), (name, quantized))}
        lines.append(f"- {f32['task_metrics'].get('task')} (greedy, {f32['task_metrics'].get('examples')} examples): "
                     f"float32 {scores['float32']}; {name} {scores[name]}")
    if q.get("command"):
        lines.append(f"- command: `{q['command']}`")
    if q["weights"] != "float32":
        lines.append("- float32 weights: `edgellm export CHECKPOINT OUT --quantize none`; for a folder quantized "
                     "by `edgellm quantize`, its float32 model.onnx is in the edgellm repository's history "
                     "(`git log -- models/NAME/model.onnx`)")
    return [*lines, ""]


def _train_command(prov: dict) -> str:
    t = prov.get("training") or {}
    names = {k: SHORT_NAMES.get(k, k).replace("_", "-") for k in t}  # the flags: --layers for num_layers
    flags = " ".join(
        (f"--{names[k]}" if v else f"--no-{names[k]}") if isinstance(v, bool) else f"--{names[k]} {v}"
        for k, v in t.items())
    return f"edgellm train {' '.join(prov.get('data') or [])} --out {prov.get('checkpoint')} {flags}"


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
