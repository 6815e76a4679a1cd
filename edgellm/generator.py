"""Text generation on onnxruntime: the KV-cache loop, batching and results (streaming one
sequence: streaming.py, whose methods Generator has).

One loop (`Generator._search`, its choices made by `decoding.Decoding`) serves every mode:
greedy is temperature 0, sampling draws from the processed distribution, beam search ranks
continuations; any of them can be constrained to a regular expression, a JSON schema, any JSON
object or a Lark grammar (`constraint=`, one per prompt in a batch; constraints.py). The prompts
are run once (prefill, past length 0, left padded when there are several); each new token is
then one decode step of sequence length 1 that reads the cached keys/values of all earlier
positions.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> print(model.generate("ROMEO:", max_new_tokens=20, temperature=0).text)
    <BLANKLINE>
    I am a man that I have been a man.
    ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgellm.folder import model_folder
from edgellm.folder.generation_config import GenerationConfig
from edgellm.generation.decoding import Decoding
from edgellm.generation.prompt_lookup import LookupRun, lookup_run
from edgellm.generation.streaming import Streaming
from edgellm.session.batching import fit_context, pad_left
from edgellm.session.session import DecoderSession
from edgellm.tasks import template_ids


@dataclass
class GenerationResult:
    """One generated sequence.

    text: the continuation (without the prompt, cut before a stop string).
    token_ids: the generated ids (without the prompt and without a stop token id).
    finish_reason: "eos" (a stop token id), "stop" (a stop string) or "length" (max_new_tokens
        or the context limit).
    timings: prefill_ms, decode_tokens_per_s, prompt_tokens, new_tokens, total_ms (for the
        whole call when several sequences were generated together); with prompt lookup also
        draft_tokens, accepted_draft_tokens and draft_runs.
    score: the beam score (log-probability / length ** length_penalty) with beam search.
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    timings: dict = field(default_factory=dict)
    score: float | None = None


class Generator(Streaming):
    """A loaded model folder: an onnxruntime session, its tokenizer and default settings.

    Args:
        path: a model folder, or the name of a shipped model (see `edgellm info`).
        providers: onnxruntime execution providers; default CUDA when available, else CPU.
        threads: intra-op threads for onnxruntime (default: onnxruntime's choice).

    Example:
        >>> model = Generator("shakespeare", providers=["CPUExecutionProvider"], threads=2)
        >>> model.generate(["ROMEO:", "JULIET:"], temperature=0, max_new_tokens=8)[1].finish_reason
        'length'
    """

    def __init__(self, path, providers: list[str] | None = None, threads: int | None = None):
        self.folder = model_folder.read(path)
        self.config = self.folder.config
        self.tokenizer = model_folder.read_tokenizer(self.folder)
        self.defaults = model_folder.read_generation_config(self.folder)
        self.session = DecoderSession(self.folder.path / model_folder.MODEL_FILE, self.config, providers, threads,
                                      self.folder.kv_cache, self.folder.capacity_mask)
        self.providers = self.session.providers
        self.pad_id = self.folder.special_tokens.get("pad_token_id") or 0
        # task models (translation, question answering) wrap each prompt in their training template
        self.task_template = self.folder.meta.get("prompt_template") == "completion"
        self._compiler = None  # constraints.Compiler, made on the first constraint

    # ---- the model, one step ---------------------------------------------------------------

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """An empty cache: 2 * layers arrays of shape (batch, kv heads, 0, head_dim)."""
        return self.session.empty_past(batch)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One plain run of model.onnx, the cache passed in and returned (scoring, evaluation).

        Args:
            input_ids, position_ids: (batch, seq) int64.
            attention_mask: (batch, past + seq) int64.
            past: [key_0, value_0, key_1, ...], each (batch, kv heads, past, head_dim) float32.
        Returns:
            logits (batch, seq, vocab) and the present keys/values, each (batch, kv heads, past + seq, head_dim).

        With an in-place folder (config.json's onnx.kv_cache), a call of more than one new token
        after a past needs batch 1: onnxruntime's GroupQueryAttention allows no more.
        """
        return self.session.forward(input_ids, attention_mask, position_ids, past)

    def step(self, run, tokens: np.ndarray) -> np.ndarray:
        """One decode step of a generation run (`session.Run`, or the server's `slots.SlotRun`): one
        new token per row, tokens (rows,). Both loops run every decode step through here. Returns the logits of each row's
        new position (rows, vocab), valid until the next step."""
        return run.advance(tokens)

    # ---- settings ----------------------------------------------------------------------------

    def settings(self, config: GenerationConfig | None = None, **overrides) -> GenerationConfig:
        """The folder's default settings (or `config`) with `overrides` applied and checked."""
        config = (_checked(config) or self.defaults).replace(**overrides)
        bad = config.id_outside(self.config.vocab_size)
        if bad is not None:
            raise ValueError(f"Token ids must be below the vocabulary size {self.config.vocab_size}. "
                             f"Received: {bad} in stop_token_ids or logit_bias.")
        return config

    def encode_prompt(self, prompt: str, config: GenerationConfig | None = None) -> list[int]:
        """The ids the model sees for `prompt`: the one path from prompt text to model ids, used by
        `generate`, `stream`, `edgellm serve`, chat and task evaluation.

        A task model's prompt is wrapped in its training template (tasks.py); then the context
        policy applies (`config.truncate`: a prompt must leave room for one new token, or with
        "left" its oldest tokens are dropped, with "right" its end, before the template's marker).
        Raises `PromptTooLong` (a ValueError) otherwise.

        Example:
            >>> model.encode_prompt("ROMEO:") == model.tokenizer.encode("ROMEO:")
            True
        """
        if not isinstance(prompt, str):
            raise ValueError(f"A prompt must be a string. Received: {type(prompt).__name__}")
        config = _checked(config) or self.defaults
        ids = template_ids(self.tokenizer, prompt) if self.task_template else self.tokenizer.encode(prompt)
        return fit_context(ids, self.config.context_length, config.max_new_tokens, config.truncate,
                           tail=1 if self.task_template else 0)  # the template's closing <|completion|>

    def compile(self, constraint):
        """Check a constraint against this model's vocabulary and compile it (generate and stream do
        this; the last few are cached). Raises a ValueError naming what is wrong.

        Example:
            >>> from edgellm import constraints
            >>> grammar = model.compile(constraints.json_schema({"type": "integer"}))
        """
        from edgellm.generation.constraints import Compiler

        if self._compiler is None:
            text = (self.folder.path / model_folder.TOKENIZER_FILE).read_text(encoding="utf-8")
            self._compiler = Compiler(text, self.config.vocab_size, self.folder.special_tokens.get("eos_token_id"))
        return self._compiler.compile(constraint)

    def _grammars(self, constraint, prompts: int, config: GenerationConfig) -> list | None:
        """One compiled grammar (or None) per prompt from `constraint`: one constraint for all, or a
        list with one per prompt."""
        if constraint is None:
            return None
        each = list(constraint) if isinstance(constraint, (list, tuple)) else [constraint] * prompts
        if len(each) != prompts:
            raise ValueError(f"constraint must be one constraint or a list of one per prompt. Received: "
                             f"{len(each)} constraints for {prompts} prompts.")
        if config.num_beams > 1 and not config.stop_token_ids and any(c is not None for c in each):
            raise ValueError("Beam search with a constraint needs a stop token id: a beam ends with it where its "
                             "grammar is complete. Received: stop_token_ids=(). Keep the model's end-of-text id "
                             "or sample (num_beams=1).")
        grammars = [None if c is None else self.compile(c) for c in each]
        return grammars if any(g is not None for g in grammars) else None

    # ---- the generation loop ---------------------------------------------------------------

    def _search(self, decoding: Decoding, timings: dict):
        """The generation loop of one call, in a run of its own: the model runs the rows of
        `decoding` and it chooses their tokens. Yields the search (its rows or beams) after each
        step; `timings` is filled at the end."""
        batch = pad_left(decoding.row_prompts, self.pad_id)
        rows, width = batch.ids.shape
        steps = decoding.steps
        run = self.session.new_run(rows, width + steps)
        started = time.perf_counter()
        logits = run.start(batch.ids, batch.mask, batch.positions)
        run = lookup_run(run, decoding.search, decoding.state)  # drafts and verifies with prompt_lookup_num_tokens
        decode_started = time.perf_counter()
        timings["prefill_ms"] = 1000 * (decode_started - started)
        step = 0
        for step in range(steps):
            if step:
                logits = self.step(run, tokens)
            tokens, parents = decoding.step(logits)
            if parents is not None:
                run.reorder(parents)
            yield decoding.search
            if decoding.done:
                break
        ended = time.perf_counter()
        timings.update(prompt_tokens=sum(len(p) for p in decoding.prompts), new_tokens=rows * (step + 1),
                       total_ms=1000 * (ended - started),
                       decode_tokens_per_s=rows * step / (ended - decode_started) if step else 0.0)
        if isinstance(run, LookupRun):
            timings.update(run.figures())

    # ---- text in, text out -----------------------------------------------------------------

    def generate(self, prompt: str | list[str], config: GenerationConfig | None = None, constraint=None,
                 **settings):
        """Continue one prompt or a batch of prompts.

        Args:
            prompt: a string, or a list of strings generated together (left padded).
            config: settings to start from (default: the folder's generation_config.json).
            constraint: what the text must match (`edgellm.generation.constraints.regex`, `json_schema`, `json`,
                `lark`; the `structured` extra), or a list of one per prompt (None: free). The text
                ends where the grammar is complete; max_new_tokens can cut it first (finish_reason
                "length": a cut JSON document does not parse).
            **settings: any `GenerationConfig` field, applied on top.
        Returns:
            for a string, a `GenerationResult` (a list of num_return_sequences of them when that is
            above 1); for a list, one such entry per prompt.

        Example:
            >>> result = model.generate("ROMEO:", max_new_tokens=16, temperature=0)
            >>> result.finish_reason in ("eos", "stop", "length")
            True
        """
        single = isinstance(prompt, str)
        if not single and not isinstance(prompt, (list, tuple)):
            raise ValueError(f"A prompt must be a string or a list of strings. Received: {type(prompt).__name__}")
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise ValueError("No prompts given. Pass a string or a non-empty list of strings.")
        config = self.settings(config, **settings)
        encoded = [self.encode_prompt(p, config) for p in prompts]
        grammars = self._grammars(constraint, len(prompts), config)
        timings: dict = {}
        for search in self._search(Decoding(self, encoded, config, grammars=grammars), timings):
            pass
        results = []
        for p in range(len(prompts)):
            if config.num_beams > 1:
                found = [GenerationResult(self.tokenizer.decode(h.token_ids) if h.text is None else h.text,
                                          h.token_ids, h.finish_reason, timings, h.score)
                         for h in search.results(p, config.num_return_sequences)]
            else:
                n = config.num_return_sequences
                found = [GenerationResult(search.text(row, self.tokenizer), row.ids, row.finish_reason or "length",
                                          timings)
                         for row in search.rows[p * n:(p + 1) * n]]
            results.append(found[0] if config.num_return_sequences == 1 else found)
        return results[0] if single else results

    def score(self, text: str):
        """Per-token log-probabilities and perplexity of `text` under the model.

        Example:
            >>> model.score("ROMEO: What, ho!").perplexity > 1
            True
        """
        from edgellm.generation.scoring import score_text

        return score_text(self, text)


def _checked(config) -> GenerationConfig | None:
    """`config` if it is a GenerationConfig or None; a clear error for anything else (a dict)."""
    if config is not None and not isinstance(config, GenerationConfig):
        raise ValueError(f"config must be a GenerationConfig. Received: a {type(config).__name__}. Pass "
                         "GenerationConfig(**settings), or the settings as keywords: generate(prompt, temperature=0)")
    return config


def load(name_or_path, providers: list[str] | None = None, threads: int | None = None) -> Generator:
    """Load a model folder (or a shipped model by name) for generation.

    Args:
        name_or_path: a shipped model's name (e.g. "shakespeare") or a model folder path.
        providers: onnxruntime execution providers (default: CUDA when present, else CPU).
        threads: onnxruntime intra-op threads.

    Example:
        >>> model = load("shakespeare")
        >>> model.generate("ROMEO:", max_new_tokens=16, temperature=0).finish_reason in ("eos", "length")
        True
    """
    return Generator(name_or_path, providers=providers, threads=threads)
