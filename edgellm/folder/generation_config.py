"""Generation settings: one validated dataclass, its defaults read from generation_config.json.

Every setting is checked where it enters (API keyword, CLI option, JSON file) and a bad one
raises one line naming the setting, what is allowed and what was received:

    >>> GenerationConfig(top_p=1.5)
    Traceback (most recent call last):
    ValueError: top_p must be in (0, 1]. Received: top_p=1.5

Example:
    >>> config = GenerationConfig(temperature=0.0, max_new_tokens=16)
    >>> config.replace(top_k=40).top_k
    40
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

TRUNCATE_POLICIES = ("error", "left", "right")
MAX_SEQUENCES = 256  # num_beams and num_return_sequences: each is a row of the batch, with its own cache
# float32 logits divided by a setting stay finite when it is at least this (3.4e38 * 1e-6 is far
# above any logit); a positive temperature below it is greedy in effect anyway
MIN_DIVISOR = 1e-6
MAX_LENGTH_PENALTY = 10.0  # a beam's score is divided by length ** length_penalty: finite, not 0


def _setting(default, help_text: str, **kwargs):
    """A dataclass field whose help text the CLI reuses for its option."""
    if isinstance(default, (dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help_text}, **kwargs)
    return field(default=default, metadata={"help": help_text}, **kwargs)


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick new tokens. Processors run in the order of `edgellm.generation.sampling.PROCESSORS`.

    Args:
        max_new_tokens: tokens to generate at most (>= 1); the context length also bounds it.
        min_new_tokens: stop token ids are suppressed until this many tokens are generated.
        temperature: 0 is greedy (argmax); higher is more random.
        top_k: keep the k most likely tokens (0 = off).
        top_p: keep the smallest set of tokens whose probabilities add up to top_p (1 = off).
        min_p: drop tokens less likely than min_p times the most likely one (0 = off).
        typical_p: keep the tokens closest to the expected surprise, up to this mass (1 = off).
        repetition_penalty: shrink the logits of tokens in the prompt or output (1 = off).
        presence_penalty: subtract this from the logits of tokens already generated.
        frequency_penalty: subtract this times the count of each token already generated.
        no_repeat_ngram_size: never repeat an n-gram of this size (0 = off).
        logit_bias: {token id: value added to its logit}; -inf bans a token.
        stop_token_ids: generation ends at any of these ids (finish_reason "eos").
        stop_strings: generation ends when the text contains one (finish_reason "stop"); the
            stop string is not part of the result.
        seed: seed of the sampler; the same seed gives the same text for a prompt, whatever
            else is in the batch. None draws a fresh seed.
        num_return_sequences: results per prompt (sampling, or the best beams).
        num_beams: beam search with this many beams (1 = off); deterministic, it ignores
            temperature, top_k, top_p, min_p and typical_p.
        length_penalty: beam scores are log-probability / length ** length_penalty.
        truncate: a prompt too long for the context: "error", "left" (drop its oldest tokens) or
            "right" (drop its end, keep its start; a task model keeps its template's marker).
        prompt_lookup_num_tokens: prompt-lookup decoding (0 = off): draft up to this many tokens
            from earlier text and verify them in one model run (edgellm.generation.prompt_lookup). The
            output is the same; only the speed changes. Not with beam search.
    """

    max_new_tokens: int = _setting(128, "Tokens to generate at most.")
    min_new_tokens: int = _setting(0, "Suppress the stop token ids until this many tokens exist.")
    temperature: float = _setting(0.8, "0 for greedy; higher is more random.")
    top_k: int = _setting(0, "Sample among the k most likely tokens (0 = off).")
    top_p: float = _setting(1.0, "Sample among the tokens making up this probability mass (1 = off).")
    min_p: float = _setting(0.0, "Drop tokens less likely than this fraction of the top one (0 = off).")
    typical_p: float = _setting(1.0, "Locally typical sampling mass (1 = off).")
    repetition_penalty: float = _setting(1.0, "Penalise tokens of the prompt and output (1 = off).")
    presence_penalty: float = _setting(0.0, "Subtract from the logits of tokens already generated.")
    frequency_penalty: float = _setting(0.0, "Subtract this times each token's count so far.")
    no_repeat_ngram_size: int = _setting(0, "Never repeat an n-gram of this size (0 = off).")
    logit_bias: dict = _setting({}, "Add a value to a token's logit, as ID=VALUE (-inf bans it).")
    stop_token_ids: tuple = _setting((), "Stop at this token id (finish reason eos).")
    stop_strings: tuple = _setting((), "Stop when the text contains this string (not printed).")
    seed: int | None = _setting(None, "Seed of the sampler: the same seed gives the same text.")
    num_return_sequences: int = _setting(1, "Results per prompt.")
    num_beams: int = _setting(1, "Beam search with this many beams (1 = off).")
    length_penalty: float = _setting(1.0, "Beam score = log-prob / length ** length_penalty.")
    truncate: str = _setting("error", "A prompt longer than the context: error, left (drop its start) or "
                                      "right (drop its end).")
    prompt_lookup_num_tokens: int = _setting(0, "Draft this many tokens from earlier text, verify them in one run "
                                                "(0 = off; same output, faster when the text copies).")

    def __post_init__(self):
        for name in ("max_new_tokens", "min_new_tokens", "top_k", "no_repeat_ngram_size",
                     "num_return_sequences", "num_beams", "prompt_lookup_num_tokens"):
            _check_int(name, getattr(self, name))
        for name in ("temperature", "top_p", "min_p", "typical_p", "repetition_penalty",
                     "presence_penalty", "frequency_penalty", "length_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number. Received: {name}={value!r}")
            object.__setattr__(self, name, float(value))
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1"),
            ("min_new_tokens", 0 <= self.min_new_tokens <= self.max_new_tokens,
             f"must be in [0, max_new_tokens={self.max_new_tokens}]"),
            ("temperature", self.temperature == 0 or self.temperature >= MIN_DIVISOR,
             f"must be 0 (greedy) or at least {MIN_DIVISOR:g} (the logits are divided by it)"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("min_p", 0 <= self.min_p < 1, "must be in [0, 1)"),
            ("typical_p", 0 < self.typical_p <= 1, "must be in (0, 1]"),
            ("repetition_penalty", MIN_DIVISOR <= self.repetition_penalty <= 1 / MIN_DIVISOR,
             f"must be in [{MIN_DIVISOR:g}, {1 / MIN_DIVISOR:g}] (1 = off; logits are divided or multiplied by it)"),
            ("length_penalty", -MAX_LENGTH_PENALTY <= self.length_penalty <= MAX_LENGTH_PENALTY,
             f"must be in [-{MAX_LENGTH_PENALTY}, {MAX_LENGTH_PENALTY}] (a length's exponent)"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "must be in [-2, 2]"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "must be in [-2, 2]"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, "must be >= 0 (0 = off)"),
            ("num_return_sequences", 1 <= self.num_return_sequences <= MAX_SEQUENCES,
             f"must be in [1, {MAX_SEQUENCES}]"),
            ("num_beams", 1 <= self.num_beams <= MAX_SEQUENCES, f"must be in [1, {MAX_SEQUENCES}] (1 = no beam search)"),
            ("truncate", self.truncate in TRUNCATE_POLICIES, f"must be one of {list(TRUNCATE_POLICIES)}"),
            ("prompt_lookup_num_tokens", self.prompt_lookup_num_tokens >= 0, "must be >= 0 (0 = off)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}. Received: {name}={getattr(self, name)!r}")
        if self.seed is not None:
            _check_int("seed", self.seed)
            if self.seed < 0:
                raise ValueError(f"seed must be >= 0 or None. Received: seed={self.seed}")
        object.__setattr__(self, "stop_token_ids", _int_tuple("stop_token_ids", self.stop_token_ids))
        object.__setattr__(self, "stop_strings", _string_tuple(self.stop_strings))
        object.__setattr__(self, "logit_bias", _bias(self.logit_bias))
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(f"num_return_sequences must be <= num_beams. Received: num_return_sequences="
                             f"{self.num_return_sequences}, num_beams={self.num_beams}")
        if self.num_beams > 1 and self.prompt_lookup_num_tokens:
            raise ValueError("prompt_lookup_num_tokens works with greedy decoding and sampling, not beam search. "
                             f"Received: prompt_lookup_num_tokens={self.prompt_lookup_num_tokens}, "
                             f"num_beams={self.num_beams}. Set one of them off (0, 1).")
        if self.num_beams == 1 and self.temperature == 0 and self.num_return_sequences > 1:
            raise ValueError("num_return_sequences > 1 needs sampling (temperature > 0) or beam search "
                             f"(num_beams > 1): greedy gives one answer. Received: num_return_sequences="
                             f"{self.num_return_sequences}, temperature=0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 and self.num_beams == 1

    def id_outside(self, vocab_size: int) -> int | None:
        """The first stop token id or logit_bias id that is not below `vocab_size`, else None."""
        return next((i for i in (*self.stop_token_ids, *self.logit_bias) if i >= vocab_size), None)

    def replace(self, **changes) -> "GenerationConfig":
        """A copy with `changes` applied and checked; unknown names raise a clear error."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ValueError(f"Unknown generation setting {unknown[0]!r}. Allowed: {', '.join(self.field_names())}")
        if changes.get("num_beams", 1) != 1 and "prompt_lookup_num_tokens" not in changes:
            changes["prompt_lookup_num_tokens"] = 0  # asking for beams turns a default prompt lookup off
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, doc: dict, source: str = "generation_config.json") -> "GenerationConfig":
        """Settings from a generation_config.json document; keys edgellm does not use are ignored."""
        known = {k: v for k, v in doc.items() if k in cls.field_names()}
        bias = known.get("logit_bias")
        if isinstance(bias, dict):  # JSON object keys are strings
            if not all(isinstance(k, str) and re.fullmatch("[0-9]+", k) for k in bias):
                raise ValueError(f"{source}: logit_bias keys must be token ids (\"50\"). Received: "
                                 f"logit_bias={bias!r}")
            known["logit_bias"] = {int(k): v for k, v in bias.items()}
        try:
            return cls(**known)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None

    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["stop_token_ids"], doc["stop_strings"] = list(self.stop_token_ids), list(self.stop_strings)
        doc["logit_bias"] = {str(k): v for k, v in self.logit_bias.items()}
        return doc


def _check_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer. Received: {name}={value!r}")


def _int_tuple(name: str, values) -> tuple[int, ...]:
    if not isinstance(values, (int, list, tuple)):
        raise ValueError(f"{name} must be a list of token ids. Received: {name}={values!r}")
    values = (values,) if isinstance(values, int) else tuple(values)
    for value in values:
        _check_int(name, value)
        if value < 0:
            raise ValueError(f"{name} must hold token ids >= 0. Received: {name}={list(values)}")
    return tuple(dict.fromkeys(values))


def _string_tuple(values) -> tuple[str, ...]:
    if not isinstance(values, (str, list, tuple)):
        raise ValueError(f"stop_strings must be a list of strings. Received: stop_strings={values!r}")
    values = (values,) if isinstance(values, str) else tuple(values)
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"stop_strings must be non-empty strings. Received: stop_strings={list(values)!r}")
    for value in values:  # generated text is valid UTF-8: such a stop string could never match
        if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise ValueError("stop_strings must be valid Unicode, without lone surrogates. "
                             f"Received: stop_strings={list(values)!r}")
    return tuple(dict.fromkeys(values))


def _bias(bias) -> dict[int, float]:
    if not isinstance(bias, dict):
        raise ValueError(f"logit_bias must map token ids to numbers. Received: logit_bias={bias!r}")
    out = {}
    for key, value in bias.items():
        _check_int("logit_bias token id", key)
        if key < 0 or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
                or value == math.inf:
            raise ValueError("logit_bias must map token ids >= 0 to numbers (-inf bans a token). "
                             f"Received: logit_bias={bias!r}")
        out[key] = float(value)
    return out
