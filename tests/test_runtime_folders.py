"""Model folders that cannot be used get one clear line; shipped models are found by name,
from a checkout and from an installed wheel; providers are chosen and checked."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgellm.folder import model_folder
from edgellm.cli import main
from edgellm.generator import load
from edgellm.session.session import choose_providers
from edgellm.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parent.parent


def broken_copy(tiny_folder, tmp_path, change):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_folder, folder)
    change(folder)
    return folder


def edit_json(name, **changes):
    def change(folder):
        doc = json.loads((folder / name).read_text())
        for key, value in changes.items():
            *sections, field = key.split("__")
            target = doc
            for section in sections:
                target = target[section]
            target[field] = value
        (folder / name).write_text(json.dumps(doc))
    return change


def truncate_model(size):
    def change(folder):
        data = (folder / "model.onnx").read_bytes()
        (folder / "model.onnx").write_bytes(data[:size if size > 0 else len(data) // 2])
    return change


def other_tokenizer(folder):
    tok = Tokenizer.train(["a b c d e f g h i j k l m n o p q r s t u v w x y z " * 50], 300, min_frequency=1)
    tok.save(folder / "tokenizer.json")


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "tokenizer.json").unlink(), "is incomplete: tokenizer.json is missing"),
    (lambda f: (f / "model.onnx").unlink(), "is incomplete: model.onnx is missing"),
    (edit_json("config.json", edgellm__format_version=99),
     r"edgellm.format_version must be one of \[1, 2\]. Received: edgellm.format_version=99. Upgrade edgellm \(pip install -U edgellm\)"),
    (edit_json("config.json", edgellm__format_version="two"), "format_version must be one of .*Received: edgellm.format_version=\"two\". Re-export"),
    (lambda f: (f / "tokenizer_config.json").unlink(), "is incomplete: tokenizer_config.json is missing"),
    (edit_json("generation_config.json", top_p=1.5), r"generation_config.json: top_p must be in \(0, 1\]"),
    (edit_json("generation_config.json", eos_token_id=9999), "token id 9999 is outside the vocabulary"),
    (other_tokenizer, r"tokenizer.json has \d+ tokens but config.json says vocab_size 384"),
    (edit_json("config.json", edgellm__architecture__num_layers=3), "has inputs .* for 3 layers"),
    (edit_json("config.json", edgellm__architecture__vocab_size=500), "tokens but config.json says vocab_size 500"),
    (edit_json("config.json", edgellm__onnx__kv_cache="paged"), "edgellm.onnx.kv_cache must be one of in_place, concat. Received: edgellm.onnx.kv_cache=\"paged\""),
    (truncate_model(0), "Cannot load .*model.onnx.*Re-export"),
    (truncate_model(100), "is only 100 bytes: it is truncated"),
    (lambda f: (f / "config.json").write_text("{not json"), "config.json is not valid JSON"),
])
def test_broken_folders_are_explained(tiny_folder, tmp_path, change, message):
    folder = broken_copy(tiny_folder, tmp_path, change)
    with pytest.raises(ValueError, match=message):
        load(folder)
    out = CliRunner().invoke(main, ["generate", "hi", "-m", str(folder)])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit)
    assert out.output.startswith("Error: ") and len(out.output.strip().splitlines()) == 1


def test_unknown_name_lists_shipped_models():
    with pytest.raises(ValueError, match="No model folder or shipped model named 'nope'. Shipped models: "):
        load("nope")


def test_shipped_models_are_found_by_name_in_a_checkout():
    assert model_folder.shipped_models_dir() == REPO / "models"
    for name in model_folder.shipped_model_names():
        assert model_folder.resolve(name) == REPO / "models" / name


def test_providers_default_to_cuda_when_present_and_are_checked():
    assert choose_providers(None, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("CPUExecutionProvider", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="'CUDAExecutionProvider' is not available.*Available: CPUExecutionProvider"):
        choose_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"])


def test_a_chosen_provider_and_threads_are_used(tiny_folder):
    model = load(tiny_folder, providers=["CPUExecutionProvider"], threads=1)
    assert model.providers == ["CPUExecutionProvider"]
    assert model.session.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.slow
def test_shipped_model_found_by_name_from_an_installed_wheel(tiny_folder, tmp_path):
    """Build a wheel from a copy of the source with the tiny model shipped under models/, install
    it into a target folder and run `edgellm generate -m tiny` from another folder."""
    source = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.startswith("data/"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, source / name)
    shutil.copytree(tiny_folder, source / "models" / "tiny")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheels), str(source)], check=True, timeout=600)
    target = tmp_path / "site"
    wheel = next(wheels.glob("edgellm-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    code = ("import edgellm, edgellm.folder.model_folder as f; print(f.shipped_models_dir()); "
            "print(edgellm.load('tiny').generate('ROMEO:', max_new_tokens=4, temperature=0).finish_reason)")
    # PYTHONPATH comes before the development install, so edgellm is imported from the wheel
    # (checked below); numpy and onnxruntime come from the environment
    result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    where, reason = result.stdout.split()
    assert Path(where) == target / "edgellm" / "models" and reason in ("eos", "length")
    cli = subprocess.run([sys.executable, "-m", "edgellm", "generate", "ROMEO:", "-m", "tiny", "-n", "4"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and cli.stdout.startswith("ROMEO:"), cli.stderr


HUGE_PAGES_CHECK = """
import edgellm
model = edgellm.load("shakespeare", providers=["CPUExecutionProvider"])
print(next(line.split()[1] for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages")))
"""


def transparent_huge_pages_mode() -> str | None:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")]


def kernel_version() -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", os.uname().release)[:2])


@pytest.mark.skipif(transparent_huge_pages_mode() != "madvise" or kernel_version() < (6, 1),
                    reason="needs Linux 6.1+ with transparent huge pages in madvise mode")
def test_loading_a_model_puts_its_memory_in_huge_pages_unless_turned_off():
    def huge_kb(setting):
        env = {**os.environ, "EDGELLM_HUGE_PAGES": setting}
        done = subprocess.run([sys.executable, "-c", HUGE_PAGES_CHECK], capture_output=True, text=True, env=env,
                              cwd=REPO, check=True)
        return int(done.stdout.split()[-1])

    assert huge_kb("1") >= 8 * 1024  # the shipped model (4.2 MB of int8 weights) and onnxruntime's buffers: 24 MB
    assert huge_kb("0") == 0
