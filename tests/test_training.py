"""Training on real text: options, data cache, optimizer, exact resume, stops, backends, errors."""

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

from edgellm.folder.config import ModelConfig
from edgellm.tokenizer import Tokenizer
from edgellm.training import checkpoint, data, optim
from edgellm.training.callbacks import LossNotFinite
from edgellm.training.model import GPT
from edgellm.training.options import read_config_file, resolve
from edgellm.training.train import train

SMALL = dict(vocab_size=300, num_layers=1, num_heads=2, hidden_size=32, context_length=32, batch_size=8,
             warmup=2, lr=3e-3, seed=3, verbose=0, tensorboard=False, xla=False)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


# ---- options, schedule, optimizer --------------------------------------------------------------

def test_options_resolve_check_and_read_config_files(tmp_path):
    assert resolve({"steps": 5}).steps == 5 and resolve({}).lr == 1e-3
    assert resolve({"batch_size": 4}, resumed={"batch_size": 4, "steps": 9}).steps == 9
    for bad, match in [({"stepz": 1}, "Unknown training option"), ({"lr": -1.0}, "lr must be positive"),
                       ({"init_std": 0.0}, "init_std must be positive"),
                       ({"hidden_size": 30, "num_heads": 4}, "divisible"), ({"precision": "fp8"}, "one of"),
                       ({"num_kv_heads": 3, "num_heads": 4}, r"num_kv_heads \(--kv-heads\) must divide num_heads"),
                       ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"), ({"steps": 1.5}, "steps must be int")]:
        with pytest.raises(ValueError, match=match):
            resolve(bad)
    with pytest.raises(ValueError, match="--context cannot change when resuming"):
        resolve({"context_length": 64}, resumed={"context_length": 32})
    (tmp_path / "run.toml").write_text('batch-size = 12\nlr = 0.002\nxla = false\n')
    assert read_config_file(tmp_path / "run.toml") == {"batch_size": 12, "lr": 0.002, "xla": False}
    (tmp_path / "run.json").write_text('{"steps": 7, "colour": "red"}')
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['colour'\]"):
        read_config_file(tmp_path / "run.json")


def test_init_std_sets_the_initial_weights():
    from edgellm.folder.config import ModelConfig
    from edgellm.training.model import GPT

    config = ModelConfig(vocab_size=512, context_length=16, num_layers=2, num_heads=2, hidden_size=64)
    for std in (0.02, 0.125):
        weights = {w.path.split("/", 1)[1]: np.asarray(w) for w in GPT(config, init_std=std).build_weights().weights}
        assert np.std(weights["wte/embeddings"]) == pytest.approx(std, rel=0.05)
        assert np.std(weights["block_0/attn/qkv/kernel"]) == pytest.approx(std, rel=0.05)
        assert np.std(weights["block_1/fc_proj/kernel"]) == pytest.approx(std / 2, rel=0.05)  # / sqrt(2 layers)


def test_schedule_warms_up_linearly_then_decays_by_cosine_in_optimizer_steps():
    s = optim.WarmupCosine(peak=1.0, warmup=4, total=20, min_ratio=0.1)
    lrs = [float(s(i)) for i in range(22)]
    assert np.allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0]) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[20] == lrs[21] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.55)  # half way down the cosine
    accumulated = optim.WarmupCosine(peak=1.0, warmup=4, total=20, min_ratio=0.1, grad_accum=3)
    assert [float(accumulated(3 * i + r)) for i in range(22) for r in range(3)] == pytest.approx(
        [x for x in lrs for _ in range(3)])


def test_a_time_budget_plans_the_steps_from_the_measured_speed(monkeypatch):
    """RunControl's plan on a clock that this test moves: the steps that fit in the time left at
    the speed since the first batch (evaluations included), at most the cap; the schedule's
    decay ends with the plan, and a slower machine gets a shorter plan."""
    import keras

    from edgellm.training import callbacks

    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock[0])
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # as fit sets it
    schedule = optim.WarmupCosine(peak=1.0, warmup=2, total=10**6, min_ratio=0.1)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    optimizer.build(model.trainable_variables)
    schedule.plan_with(optimizer)
    control = callbacks.RunControl(tokens_per_batch=1, grad_accum=1, cap=10**6, time_budget=100.0, started=0.0,
                                   schedule=schedule)
    control.set_model(model)
    control.begin(0)
    control.on_epoch_begin(0)

    def run(batches: range, seconds_each: float):
        for batch in batches:
            control.on_train_batch_begin(batch)
            clock[0] += seconds_each
            control.on_train_batch_end(batch)

    run(range(0, 1), 5.0)  # the first step compiles: not counted in the speed
    run(range(1, 51), 0.1)  # 10 steps/s: after 50 of them (t = 10 s), 90 s at 10 steps/s are left
    control.on_train_batch_begin(51)
    assert control.total == 52 + 900 and not model.stop_training
    assert float(schedule(control.total)) == pytest.approx(0.1) and float(schedule(51)) > 0.9
    run(range(51, 151), 0.2)  # slower: 150 steps and a 1 s pause (an evaluation) in 26 s, 69 s left
    clock[0] += 1.0
    control.on_train_batch_begin(151)
    assert control.total == 152 + int(69 * 150 / 26)
    capped = callbacks.RunControl(1, 1, cap=300, time_budget=100.0, started=0.0, schedule=schedule)
    capped.set_model(model)
    capped.begin(0)
    capped.on_epoch_begin(0)
    control = capped
    run(range(0, 1), 5.0)
    run(range(1, 51), 0.1)
    control.on_train_batch_begin(51)
    assert control.total == 300  # --steps is the most it plans


def test_weight_decay_reaches_matrices_only():
    model = GPT(ModelConfig(vocab_size=64, context_length=8, num_layers=1, num_heads=2, hidden_size=16,
                            use_bias=True, tie_embeddings=False)).build_weights()
    opts = resolve({"lr": 0.1, "weight_decay": 0.5, "warmup": 0, "clip_norm": 0.0, "steps": 10})
    optimizer = optim.make_optimizer(model, optim.make_schedule(opts), opts)
    before = {v.path: v.numpy() for v in model.trainable_variables}
    # zero gradients: Adam's step is zero, so only the decoupled decay moves a weight
    optimizer.apply([keras.ops.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
    decayed, kept = [], []
    for v in model.trainable_variables:
        with np.errstate(invalid="ignore"):  # zero-initialised biases and offsets give 0/0
            factor = v.numpy() / before[v.path]
        if np.allclose(factor, 1 - 0.1 * 0.5):
            decayed.append(v.path)
        else:
            assert np.array_equal(v.numpy(), before[v.path]), v.path
            kept.append(v.path)
    assert all(p.endswith("kernel") for p in decayed) and len(decayed) == 5  # qkv, proj, fc, fc_proj, lm_head
    assert sorted(p.rsplit("/", 1)[1] for p in kept) == sorted(
        ["embeddings"] * 2 + ["gamma", "beta"] * 3 + ["bias"] * 4)


def fused_minus_standard(positions: str) -> tuple[float, float]:
    """Max |logits| difference between fused and standard attention on the same random weights,
    and max |logits|. Runs under whichever backend Keras has (the JAX test runs this source).
    Rotary and ALiBi run with grouped-query attention: 2 key/value heads for 4 query heads."""
    import keras
    import numpy as np

    from edgellm.folder.config import ModelConfig
    from edgellm.training.model import GPT

    config = ModelConfig(vocab_size=97, context_length=24, num_layers=2, num_heads=4, hidden_size=32,
                         position_embedding=positions, num_kv_heads=0 if positions == "learned" else 2)
    rng = np.random.default_rng(0)
    standard = GPT(config).build_weights()
    # weights far from the 0.02 initialisation, so attention is far from uniform
    standard.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in standard.get_weights()])
    fused = GPT(config, attention="fused").build_weights()
    fused.set_weights(standard.get_weights())
    ids = rng.integers(0, 97, (3, 20)).astype("int32")
    a, b = (keras.ops.convert_to_numpy(m(ids, training=True)) for m in (standard, fused))
    return float(np.abs(a - b).max()), float(np.abs(a).max())


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_fused_attention_gives_the_standard_logits(backend):
    kinds = ("learned", "rope", "alibi")
    if backend == "tensorflow":
        results = {kind: fused_minus_standard(kind) for kind in kinds}
    else:
        pytest.importorskip("jax")
        code = inspect.getsource(fused_minus_standard) + f"print(json.dumps({{k: fused_minus_standard(k) for k in {kinds!r}}}))"
        results = json.loads(run_python("import json\n" + code, {"KERAS_BACKEND": "jax"}).stdout)
    for kind, (difference, size) in results.items():
        assert difference < 1e-5 and size > 1.0, (kind, difference, size)
    with pytest.raises(ValueError, match="attention must be one of standard, fused. Received: attention='flash'"):
        GPT(ModelConfig(vocab_size=64, context_length=8, num_heads=2, hidden_size=16), attention="flash")


# ---- data --------------------------------------------------------------------------------------

def test_token_ids_are_stored_once_and_keyed_by_fingerprint(corpus_file, tmp_path):
    text = corpus_file.read_text()
    texts = [text[:20_000], text[20_000:30_000]]
    tokenizer = data.train_tokenizer(texts, 300, 0.1, tmp_path)
    assert data.train_tokenizer(texts, 300, 0.1, tmp_path).merges == tokenizer.merges  # cached copy
    ids = data.tokenize(texts, tokenizer, 0.1, tmp_path)
    assert isinstance(ids.train, np.memmap) and ids.train.dtype == np.uint16
    folder = next((tmp_path / "tokens").iterdir())
    stamp = (folder / "train.bin").stat().st_mtime_ns
    again = data.tokenize(texts, tokenizer, 0.1, tmp_path)
    assert again.fingerprint == ids.fingerprint and (folder / "train.bin").stat().st_mtime_ns == stamp
    # validation = the last 10% of each file, each followed by end-of-text
    eos = [tokenizer.eos_token_id]
    expected_val = sum((tokenizer.encode(data.split_text(t, 0.1)[1]) + eos for t in texts), [])
    assert ids.val.tolist() == expected_val
    assert len(ids.train) == sum(len(tokenizer.encode(data.split_text(t, 0.1)[0])) + 1 for t in texts)
    changed = data.tokenize([texts[0] + "!", texts[1]], tokenizer, 0.1, tmp_path)
    assert changed.fingerprint != ids.fingerprint and len(list((tmp_path / "tokens").iterdir())) == 2


def test_large_vocabularies_are_stored_as_uint32():
    pairs = [(a, b) for a in range(256) for b in range(256)][:65_300]  # ids 256 .. 65555
    vocab = [bytes([b]) for b in range(256)] + [bytes(pair) for pair in pairs] + [b"<|endoftext|>"]
    tokenizer = Tokenizer(vocab, pairs, {"<|endoftext|>": 65_556})
    ids = data.tokenize(["zz"], tokenizer, 0.0)
    assert tokenizer.vocab_size == 65_557 and ids.train.dtype == np.uint32
    assert ids.train.tolist() == [256 + 122 * 256 + 122, 65_556]


def test_each_batch_depends_only_on_seed_and_position():
    ids = np.arange(1000, dtype=np.uint16)
    whole = data.WindowBatches(ids, 16, 4, seed=5, start=0, length=10)
    later = data.WindowBatches(ids, 16, 4, seed=5, start=6, length=4)
    x, y = later[1]
    assert np.array_equal(x, whole[7][0]) and np.array_equal(y, x + 1) and x.shape == (4, 16)
    assert not np.array_equal(data.WindowBatches(ids, 16, 4, seed=6, length=10)[7][0], x)


def test_training_eval_and_the_tokenizer_trainer_read_one_cleaned_text(tiny_folder, tmp_path):
    """\r\n, lone \r and control characters: training, `edgellm eval` and `edgellm tokenizer
    train` all see the text as if it had been written clean."""
    from edgellm.evaluate import evaluate
    from edgellm.generator import load

    line = "First Citizen:\r\nBefore we proceed\x00 any further,\x07 hear me speak.\r\rAll:\tSpeak,\x1b speak.\x7f\r\n"
    clean = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\tSpeak, speak.\n" * 30
    (tmp_path / "dirty.txt").write_bytes((line * 30).encode("utf-8"))
    (tmp_path / "clean.txt").write_bytes(clean.encode("utf-8"))
    assert data.read_texts([tmp_path / "dirty.txt"]) == [clean]
    model = load(tiny_folder)
    scored = evaluate(model, tmp_path / "dirty.txt")
    assert scored == evaluate(model, tmp_path / "clean.txt")
    assert scored["tokens"] == len(model.tokenizer.encode(clean)) - 1
    trained = [Tokenizer.train_from_files([tmp_path / name], 300).to_json() for name in ("dirty.txt", "clean.txt")]
    assert trained[0] == trained[1]


# ---- training runs -----------------------------------------------------------------------------

class AfterMicroBatches(keras.callbacks.Callback):
    """Runs `action(model)` once, after `n` micro-batches."""

    def __init__(self, n, action):
        super().__init__()
        self.n, self.action, self.seen = n, action, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.n:
            self.action(self.model)


def ctrl_c_at(n):
    """A real SIGINT to this process after `n` micro-batches, as Ctrl-C in a terminal sends."""
    return AfterMicroBatches(n, lambda model: os.kill(os.getpid(), signal.SIGINT))


def test_ctrl_c_then_resume_follows_the_uninterrupted_run(corpus_file, tmp_path, cache):
    options = dict(SMALL, steps=12, eval_interval=4, dropout=0.1, grad_accum=2, cache_dir=cache, xla=True)
    whole = tmp_path / "whole"
    train([corpus_file], whole, **options)

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train([corpus_file], cut, callbacks=[ctrl_c_at(11)], **options)
    state = checkpoint.load_meta(cut)["state"]
    assert (state["step"], state["micro_step"], state["finished"]) == (6, 12, False)  # at a step boundary
    train(None, cut, resume=True, verbose=0)

    a = {row["step"]: row for row in checkpoint.read_history(whole)}
    b = {row["step"]: row for row in checkpoint.read_history(cut)}
    assert sorted(b) == [4, 6, 8, 12]
    for step in (4, 8, 12):
        assert b[step]["val_loss"] == pytest.approx(a[step]["val_loss"], abs=1e-6)
    assert b[12]["train_loss"] == pytest.approx(a[12]["train_loss"], abs=1e-6)
    ma, _, _ = checkpoint.load_model(whole)
    mb, _, _ = checkpoint.load_model(cut)
    assert max(float(np.max(np.abs(u.numpy() - v.numpy()))) for u, v in zip(ma.weights, mb.weights)) < 1e-6
    with pytest.raises(ValueError, match="Nothing to train.*Raise --steps"):
        train(None, cut, resume=True, verbose=0)
    with h5py.File(cut / checkpoint.WEIGHTS_FILE) as weights:  # the optimizer's state is in train_state.npz only
        assert "optimizer" not in weights


def poison_at(n):
    """Turns the token embedding to NaN after `n` micro-batches: the next loss is NaN."""

    def poison(model):
        model.wte.embeddings.assign(np.full(model.wte.embeddings.shape, np.nan, "float32"))

    return AfterMicroBatches(n, poison)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus_file, tmp_path, cache):
    out = tmp_path / "nan"
    with pytest.raises(LossNotFinite, match=r"nan at step 7; the last good checkpoint \(step 4\) is kept"):
        train([corpus_file], out, callbacks=[poison_at(6)], steps=12, eval_interval=4, cache_dir=cache, **SMALL)
    meta = checkpoint.load_meta(out)
    assert meta["state"]["step"] == 4 and np.isfinite(meta["metrics"]["val_loss"])
    model, _, _ = checkpoint.load_model(out)
    assert np.isfinite(model.wte.embeddings.numpy()).all()


def test_time_budget_stops_by_wall_clock_or_its_plan_then_validates_and_saves(corpus_file, tmp_path, cache):
    budget = 6.0
    metrics = train([corpus_file], tmp_path / "budget", steps=100_000, eval_interval=50, time_budget=budget,
                    cache_dir=cache, **SMALL)
    assert 0 < metrics["steps"] < 100_000 and np.isfinite(metrics["val_loss_per_char"])
    assert metrics["val_perplexity"] == pytest.approx(np.exp(metrics["val_loss"]))
    meta = checkpoint.load_meta(tmp_path / "budget")
    assert meta["state"]["step"] == metrics["steps"] and meta["training"]["time_budget"] == budget
    last = checkpoint.read_history(tmp_path / "budget")[-1]
    peak, floor = SMALL["lr"], SMALL["lr"] * 0.1
    # it stops at the budget, or at the end of its plan, where the decay ends
    assert last["seconds"] >= budget or last["lr"] <= floor + 0.1 * (peak - floor), last


def test_bad_input_gives_clear_errors_and_loses_nothing(corpus_file, tmp_path, cache):
    def fails(match, files, out, **options):
        with pytest.raises(ValueError, match=match):
            train(files, out, **{**SMALL, "cache_dir": cache, **options})

    empty = tmp_path / "empty.txt"
    empty.write_text("\x00\x07\x1b")
    fails("hold no text after cleaning", [empty], tmp_path / "a")
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be: that is the question. " * 4)
    fails(r"training text is too short: \d+ tokens, but one batch needs at least context \+ 1 = 129 "
          "tokens", [short], tmp_path / "b", context_length=128)
    fails("validation text is too short", [short], tmp_path / "b", val_fraction=0.01)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails("Output folder .* is not writable", [corpus_file], blocker / "out")
    fails("Unknown training option", [corpus_file], tmp_path / "c", epochs=3)

    done = tmp_path / "done"
    train([corpus_file], done, steps=2, eval_interval=2, cache_dir=cache, **SMALL)
    weights = (done / checkpoint.WEIGHTS_FILE).read_bytes()
    fails("already holds a checkpoint. Pass --resume", [corpus_file], done)
    fails("--context cannot change when resuming", None, done, resume=True, context_length=64)
    fails("training data differ", [short], done, resume=True, steps=4)
    assert (done / checkpoint.WEIGHTS_FILE).read_bytes() == weights
    with pytest.raises(ValueError, match="position table holds context_length=32"):
        checkpoint.load_model(done)[0](np.zeros((1, 33), "int32"))


def test_checkpoints_with_the_older_option_names_resume_and_export(corpus_file, tmp_path, cache):
    """checkpoint.json once held the shape under the flags' names (layers, width, kv_heads, ...)."""
    from edgellm.export.onnx_export import export

    out = tmp_path / "old"
    options = dict(SMALL, num_kv_heads=1, position_embedding="rope", use_bias=True)
    train([corpus_file], out, steps=2, eval_interval=2, cache_dir=cache, **options)
    doc = json.loads((out / "checkpoint.json").read_text())
    old = {"num_layers": "layers", "num_heads": "heads", "num_kv_heads": "kv_heads", "hidden_size": "width",
           "context_length": "context", "position_embedding": "positions", "use_bias": "bias"}
    doc["training"] = {old.get(k, k): v for k, v in doc["training"].items()}
    (out / "checkpoint.json").write_text(json.dumps(doc))
    assert checkpoint.load_meta(out)["training"]["num_kv_heads"] == 1
    with pytest.raises(ValueError, match="--context cannot change when resuming: the checkpoint has 32"):
        train(None, out, resume=True, steps=4, context_length=64, verbose=0)
    metrics = train(None, out, resume=True, steps=4, verbose=0)  # the shape comes from the old keys
    meta = checkpoint.load_meta(out)
    assert metrics["steps"] == 4 and meta["training"]["position_embedding"] == "rope"
    assert "positions" not in json.loads((out / "checkpoint.json").read_text())["training"]  # rewritten
    (out / "checkpoint.json").write_text(json.dumps(doc))  # old keys again: export reads them too
    export(out, tmp_path / "model")  # with its parity gate
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    own = config["edgellm"]  # edgellm's document in the folder's config.json
    assert own["architecture"]["num_kv_heads"] == 1 and own["provenance"]["training"]["num_kv_heads"] == 1
    doc["training"]["num_layers"] = 1  # both spellings of one option
    (out / "checkpoint.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="sets num_layers twice, as num_layers and as layers"):
        checkpoint.load_meta(out)
    with pytest.raises(ValueError, match=r"Unknown training option\(s\) \['layers'\] \(layers is num_layers\)"):
        resolve({"layers": 2})


# ---- other backends and devices, in fresh processes --------------------------------------------

def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env={**ENV, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_jax_backend_trains_without_tensorflow_and_its_checkpoint_exports(corpus_file, tmp_path, cache):
    """Under JAX, as on a GPU machine without TensorFlow: train (fused attention, accumulation,
    a time budget), and data parallelism matches one device; then export here, under TensorFlow."""
    pytest.importorskip("jax")
    result = run_python(f"""
        import sys
        sys.modules["tensorflow"] = None  # any import of it now fails, as where it is not installed
        import keras
        from edgellm.training import checkpoint
        from edgellm.training.train import train
        assert keras.backend.backend() == "jax"
        options = dict({SMALL!r}, steps=6, eval_interval=3, eval_tokens=4 * 32, cache_dir={cache!r}, xla=True,
                       attention="fused", grad_accum=2)
        one = train([{str(corpus_file)!r}], {str(tmp_path / "one")!r}, **dict(options, tensorboard=True, verbose=2))
        two = train([{str(corpus_file)!r}], {str(tmp_path / "two")!r}, distribute="mirrored", **options)
        cut = train([{str(corpus_file)!r}], {str(tmp_path / "cut")!r}, **dict(options, steps=10**6, time_budget=2.0))
        state = checkpoint.load_meta({str(tmp_path / "cut")!r})["state"]
        assert 0 < state["step"] < 10**6 and state["micro_step"] == 2 * state["step"] == 2 * cut["steps"], state
        print(one["val_loss"], two["val_loss"])
        """, {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    one, two = map(float, result.stdout.splitlines()[-1].split())
    assert one < np.log(300) and two == pytest.approx(one, abs=1e-4)
    assert "TensorBoard logs need tensorflow" in result.stderr
    meta = json.loads((tmp_path / "one" / "checkpoint.json").read_text())
    assert meta["versions"]["backend"] == "jax" and meta["state"]["micro_step"] == 12
    assert [row["step"] for row in checkpoint.read_history(tmp_path / "one")] == [3, 6]

    from edgellm.export.onnx_export import export
    from edgellm.generator import load

    export(tmp_path / "one", tmp_path / "model")  # checks ONNX against this process's Keras first
    assert load(tmp_path / "model").generate("ROMEO:", max_new_tokens=8, temperature=0.0).text


def test_tensorflow_mirrored_on_two_cpu_devices_matches_one_device(corpus_file, tmp_path, cache):
    result = run_python(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from edgellm.training.train import train
        options = dict({SMALL!r}, steps=6, eval_interval=3, eval_tokens=4 * 32, clip_norm=0.0, xla=False,
                       cache_dir={cache!r}, verbose=2)
        runs = [train([{str(corpus_file)!r}], {str(tmp_path)!r} + "/" + d, distribute=d, **options)
                for d in ("none", "mirrored", "multiworker")]
        print(*[m["val_loss"] for m in runs])
        """, {})
    one, mirrored, multiworker = map(float, result.stdout.splitlines()[-1].split())
    assert mirrored == pytest.approx(one, abs=1e-4) and multiworker == pytest.approx(one, abs=1e-4)
    assert "2 replica(s)" in result.stderr + result.stdout


# ---- the command line --------------------------------------------------------------------------

def edgellm(*args):
    return subprocess.run([sys.executable, "-m", "edgellm", "train", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=600)


def test_cli_reads_a_config_file_that_flags_override(corpus_file, tmp_path, cache):
    config = tmp_path / "run.toml"
    config.write_text(f'steps = 4\neval-interval = 2\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n'
                      f'vocab_size = 300\nbatch_size = 4\ncache_dir = "{cache}"\nlr = 0.01\n')
    result = edgellm(corpus_file, "--out", tmp_path / "ckpt", "--config", config, "--lr", "0.002", "-v", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "ckpt") and "step 4/4: loss " in result.stderr
    meta = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert meta["training"]["lr"] == 0.002 and meta["training"]["steps"] == 4 and meta["metrics"]["steps"] == 4
    assert "--config" in meta["command"] and (tmp_path / "ckpt" / "logs").is_dir()

    for args, message in [(["--stepz", "3"], "No such option '--stepz'"),
                          (["--precision", "fp8"], "'fp8' is not one of"),
                          (["--config", corpus_file], "is not valid JSON"),
                          (["--resume"], "already at step 4")]:
        bad = edgellm(corpus_file, "--out", tmp_path / "ckpt", *args)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


@pytest.mark.slow
def test_mixed_precision_trains(corpus_file, tmp_path, cache):
    for precision in ("bfloat16", "float16"):
        metrics = train([corpus_file], tmp_path / precision, steps=6, eval_interval=3, precision=precision,
                        cache_dir=cache, **SMALL)
        assert metrics["val_loss"] < np.log(300)
    model, _, _ = checkpoint.load_model(tmp_path / "float16")  # weights stay float32 for export
    assert model.wte.embeddings.dtype == "float32"


@pytest.mark.slow
def test_cli_ctrl_c_saves_and_exits_130(corpus_file, tmp_path, cache):
    import time

    out = tmp_path / "ckpt"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgellm", "train", str(corpus_file), "--out", str(out), "--steps", "100000",
         "--eval-interval", "5", "--layers", "1", "--heads", "2", "--width", "32", "--context", "32",
         "--vocab-size", "300", "--batch-size", "4", "--cache-dir", cache, "--no-tensorboard"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 300
    while not (out / "checkpoint.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted at step" in stderr and "Traceback" not in stderr
    assert 5 <= checkpoint.load_meta(out)["state"]["step"] < 100_000
