"""`edgellm upgrade FOLDER`: rewrite a format 1 model folder into the current format, in place.

Format 1 kept edgellm's document at the top of config.json (which Hugging Face's loaders do not
understand), had no tokenizer_config.json, named generation_config.json's settings in edgellm's
words and model.onnx's dynamic dimensions batch/sequence/past_sequence/total_sequence. The upgrade
writes the same four JSON files as `edgellm export` (folder_files.py) from the folder's own
document, renames the dimensions to Optimum's (onnx library; the graph and weights are kept),
and re-renders the model card. It then checks that edgellm's greedy ids on a few prompts are the
same before and after, and only then swaps the new folder in.

Example:
    >>> upgrade("models/shakespeare")
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from edgellm.folder import model_folder

PROBE_PROMPTS = ("ROMEO:", "The king is", "\n", "What is the matter, my lord?")
PROBE_TOKENS = 16


def upgrade(folder: str | Path) -> dict:
    """Upgrade `folder` in place; returns its new edgellm document (config.json's "edgellm")."""
    import onnx

    from importlib.metadata import version

    from edgellm.folder import model_card
    from edgellm.export import folder_files
    from edgellm.export.graph.tidy import name_dimensions

    path = Path(folder)
    old = model_folder.read(path)
    if old.format_version == model_folder.FORMAT_VERSION:
        raise ValueError(f"{path} is already a format {model_folder.FORMAT_VERSION} folder: nothing to upgrade.")
    tokenizer = model_folder.read_tokenizer(old)
    doc = {k: v for k, v in old.meta.items() if k != "model_type"}  # "edgellm-gpt": config.json's key now
    doc["format_version"] = model_folder.FORMAT_VERSION
    doc.setdefault("provenance", {})["upgrade"] = {
        "from_format_version": old.format_version, "command": f"edgellm upgrade {folder}",
        "edgellm": version("edgellm"), "onnx": onnx.__version__}
    before = _greedy_ids(path)

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp.chmod(0o755)
        for item in path.iterdir():
            if item.is_file() and item.name != "README.md":  # the card is rendered anew below
                shutil.copy2(item, tmp / item.name)
        proto = onnx.load(str(tmp / model_folder.MODEL_FILE))
        name_dimensions(proto, old.config)
        onnx.save(proto, str(tmp / model_folder.MODEL_FILE))
        folder_files.write(tmp, old.config, tokenizer, doc, dict(old.generation))
        (tmp / "README.md").write_text(model_card.render(path.name, doc, tmp), encoding="utf-8")
        after = _greedy_ids(tmp)
        if after != before:
            raise ValueError(f"Upgrading {path} changed edgellm's greedy ids ({before} became {after}); "
                             "the folder was left as it was. Re-export it from its checkpoint instead.")
        old_copy = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.replace(path, old_copy / path.name)
        os.replace(tmp, path)
        shutil.rmtree(old_copy)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


def _greedy_ids(path: Path) -> list[list[int]]:
    from edgellm.generator import Generator

    model = Generator(path, providers=["CPUExecutionProvider"])
    return [list(r.token_ids) for r in model.generate(list(PROBE_PROMPTS), temperature=0.0,
                                                      max_new_tokens=PROBE_TOKENS)]
