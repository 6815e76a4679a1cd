"""Constrained decoding: a regular expression, a JSON schema, any JSON object or a Lark grammar
decides which tokens may come next. Needs the `structured` extra (llguidance, which reads the
model folder's tokenizer.json itself).

A `Constraint` says what the text must be; `Generator.compile` turns it into a `Grammar` for the
model's vocabulary (checked once: a bad pattern or schema, or one no token can start, raises a
ValueError); during generation `RowMatchers` keeps one llguidance matcher per row. Its mask is
the `constraint` logits processor (sampling.py): tokens the grammar cannot take next get -inf;
the stop token ids are allowed only where the grammar is complete, and a row whose grammar can
take nothing more ends (finish_reason "eos"). max_new_tokens and stop strings still apply, so a
cut-off text may not parse (finish_reason "length").

Example:
    >>> import edgellm
    >>> from edgellm import constraints
    >>> model = edgellm.load("shakespeare")
    >>> model.generate("ROMEO:", constraint=constraints.regex(r" [A-Z][a-z]+!"), temperature=0).text[-1]
    '!'
"""

from __future__ import annotations

import json as json_module
import threading
from dataclasses import dataclass

import numpy as np

from edgellm.folder import json_file

KINDS = ("regex", "json_schema", "json", "lark")
EXTRA = "structured"
# JSON is written the way json.dumps writes it: ", " and ": ", no other whitespace. With
# llguidance's default (any whitespace between tokens) a small model can fill max_new_tokens with
# newlines before the first key; a schema's "x-guidance" key can still choose otherwise.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# llguidance reads a grammar as JSON with serde_json's limit of 128 levels, the schema inside a few
# levels of its own (a schema of 123 levels was the deepest that compiled)
MAX_SCHEMA_DEPTH = 100


@dataclass(frozen=True)
class Constraint:
    """What the generated text must match.

    kind: "regex" (the whole text matches the pattern, Rust regex syntax), "json_schema" (a JSON
        document valid under the schema), "json" (any JSON object, OpenAI's JSON mode) or
        "lark" (llguidance's Lark grammar syntax).
    source: the pattern, the schema as JSON text, or the grammar ("" for "json").
    """

    kind: str
    source: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"A constraint's kind must be one of {list(KINDS)}. Received: {self.kind!r}")
        if not isinstance(self.source, str):
            raise ValueError(f"A {self.kind} constraint needs a string. Received: {type(self.source).__name__}")

    def describe(self) -> str:
        return "any JSON object" if self.kind == "json" else f"{self.kind} {_short(self.source)}"


def regex(pattern: str) -> Constraint:
    """The whole generated text matches `pattern` (Rust `regex` syntax: no look-around, no
    back-references). Example: `regex(r"[0-9]{3}-[0-9]{4}")`."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"regex must be a non-empty string. Received: regex={_short(pattern)}")
    return Constraint("regex", pattern)


def json_schema(schema) -> Constraint:
    """The generated text is a JSON document valid under `schema` (a dict, or its JSON text as a
    string or UTF-8 bytes). Example: `json_schema({"type": "object", "properties": {"name": {"type": "string"}}})`."""
    if isinstance(schema, (str, bytes)):
        try:  # the one JSON reader: not UTF-8, not JSON, or nested too deeply, each named
            schema = json_file.parse(schema, "json_schema")
        except ValueError as error:
            raise ValueError(f"{error} Received: {_short(schema)}") from None
    depth = _depth(schema)  # first: printing a value nested deeper than Python's recursion limit fails
    if depth > MAX_SCHEMA_DEPTH:
        raise ValueError(f"json_schema is nested {depth} levels deep; constrained decoding reads at most "
                         f"{MAX_SCHEMA_DEPTH} levels of objects and lists. Received: a schema {depth} levels deep. "
                         "Flatten it ($defs and $ref name repeated parts).")
    if not isinstance(schema, (dict, bool)):
        raise ValueError(f"json_schema must be a JSON object. Received: {_short(schema)}")
    return Constraint("json_schema", json_module.dumps(schema))


def _depth(value) -> int:
    """Levels of objects and lists (iteratively: a value nested deeper than Python's recursion
    limit is measured too)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((item, level + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def json() -> Constraint:
    """Any JSON object (OpenAI's `response_format: {"type": "json_object"}`)."""
    return Constraint("json", "")


def lark(grammar: str) -> Constraint:
    """The generated text is a sentence of a Lark grammar in llguidance's syntax, whose rule
    `start` is the whole text. Example: `lark('start: "yes" | "no"')`."""
    if not isinstance(grammar, str) or not grammar.strip():
        raise ValueError(f"lark must be a non-empty grammar. Received: lark={_short(grammar)}")
    return Constraint("lark", grammar)


def _llguidance():
    try:
        import llguidance
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"Constrained decoding (regex, JSON schema, JSON, Lark) needs llguidance, which "
                                  f"is not installed. Install it with: pip install 'edgellm[{EXTRA}]'",
                                  name="llguidance") from None
    return llguidance


class Grammar:
    """A constraint compiled for one vocabulary: a matcher in its start state, to copy per row.

    Args:
        constraint: what to compile.
        tokenizer: llguidance's tokenizer of the model (`Compiler.tokenizer`).
    """

    def __init__(self, constraint: Constraint, tokenizer):
        llg = _llguidance()
        self.constraint = constraint
        source = constraint.source
        try:
            if constraint.kind == "regex":
                grammar = llg.LLMatcher.grammar_from_regex(source)
            elif constraint.kind == "lark":
                grammar = llg.LLMatcher.grammar_from_lark(source)
            else:
                grammar = llg.LLMatcher.grammar_from_json_schema('{"type": "object"}' if constraint.kind == "json"
                                                                 else source, defaults=JSON_LAYOUT)
            self._start = llg.LLMatcher(tokenizer, grammar, log_level=0)
            error = self._start.get_error() if self._start.is_error() else None
        except ValueError as raised:  # llguidance's own parser refusing the grammar
            error = str(raised)
        if error:
            raise ValueError(f"The {constraint.kind} constraint cannot be compiled: {_first_line(error)}"
                             f". Received: {_short(source)}")
        self._lock = threading.Lock()  # the start matcher is shared by the server's worker threads
        probe = self._start.deep_copy()  # a grammar no text can match errs on its first mask
        mask = _unpack(np.frombuffer(probe.compute_bitmask(), np.int32)[None], tokenizer.vocab_size)[0]
        if tokenizer.eos_token is not None and tokenizer.eos_token < mask.size:
            mask[tokenizer.eos_token] = False
        if probe.is_error() or not (mask.any() or probe.is_accepting()):
            raise ValueError(f"No text the model's vocabulary can write matches the {constraint.kind} constraint. "
                             f"Received: {_short(source)}. Check the pattern or schema.")

    def matcher(self):
        """A fresh matcher in the start state."""
        with self._lock:
            return self._start.deep_copy()


class Compiler:
    """Compiles constraints for one model folder; keeps the last few grammars (a server sees the
    same schema again and again).

    Args:
        tokenizer_json: the folder's tokenizer.json text.
        vocab_size: the model's vocabulary (logits) size.
        eos_id: the model's end-of-text id, or None.
    """

    CACHED = 32

    def __init__(self, tokenizer_json: str, vocab_size: int, eos_id: int | None):
        llg = _llguidance()
        try:
            self.tokenizer = llg.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos_id)
        except ValueError as error:
            raise ValueError(f"llguidance cannot read this model's tokenizer.json ({error}). Constrained decoding "
                             "needs a Hugging Face tokenizers file.") from None
        self.vocab_size = vocab_size
        self._cache: dict[Constraint, Grammar] = {}
        self._lock = threading.Lock()

    def compile(self, constraint: Constraint) -> Grammar:
        if not isinstance(constraint, Constraint):
            raise ValueError("constraint must be made by edgellm.generation.constraints.regex, json_schema, json or lark. "
                             f"Received: {_short(constraint)}")
        with self._lock:
            grammar = self._cache.get(constraint)
        if grammar is None:
            grammar = Grammar(constraint, self.tokenizer)
            with self._lock:
                self._cache[constraint] = grammar
                while len(self._cache) > self.CACHED:
                    del self._cache[next(iter(self._cache))]
        return grammar


class RowMatchers:
    """One matcher per row of a generation (None: that row is free), and their masks.

    The mask is computed when a step asks for it. (Computing the next one in a worker thread
    while onnxruntime runs the model was slower on a busy 2-core machine: 0.74x against 0.77x of
    free decoding, bench/structured_speed.py.)

    Args:
        grammars: for each row, its `Grammar` or None.
        stop_ids: the settings' stop token ids: allowed where a row's grammar is complete.
        vocab_size: the logits' width.
        eos_id: the id llguidance itself allows at the end (replaced by `stop_ids`).
    """

    def __init__(self, grammars: list[Grammar | None], stop_ids: tuple[int, ...], vocab_size: int,
                 eos_id: int | None):
        llg = _llguidance()
        self.matchers = [g.matcher() if g is not None else None for g in grammars]
        self.stop_ids = np.array(stop_ids, np.int64)
        self.vocab_size, self.eos_id = vocab_size, eos_id
        self._executor = llg.LLExecutor(2) if len(grammars) > 1 else None  # rows' masks in parallel
        self._bits = np.empty((len(grammars), (vocab_size + 31) // 32), np.int32)  # (rows, vocab / 32)

    def allowed(self) -> np.ndarray:
        """(rows, vocab) bool: the tokens each row may take next."""
        live = [(m, i) for i, m in enumerate(self.matchers) if m is not None]
        bits = self._bits
        bits.fill(-1)  # a row without a grammar may take anything
        row_bytes = bits.shape[1] * 4
        if self._executor is not None and len(live) > 1:
            self._executor.unsafe_compute_mask_ptr(live, bits.ctypes.data, row_bytes, len(bits))
        elif live:
            matcher, i = live[0]
            matcher.unsafe_compute_mask_ptr(bits.ctypes.data + i * row_bytes, row_bytes)
        allowed = _unpack(bits, self.vocab_size)
        if live:
            done = [i for m, i in live if m.is_accepting()]
            if self.eos_id is not None:
                allowed[[i for _, i in live], self.eos_id] = False
            if done and self.stop_ids.size:
                allowed[np.ix_(done, self.stop_ids)] = True
        return allowed

    def advance(self, tokens: np.ndarray) -> None:
        """Each row with a matcher takes its new token (rows,); a stop id releases the matcher.
        A token the grammar refuses (only a dead beam, scored -inf, gets one) leaves the matcher
        in llguidance's error state, which allows nothing."""
        stop = set(self.stop_ids.tolist())
        for i, (matcher, token) in enumerate(zip(self.matchers, tokens.tolist())):
            if matcher is None:
                continue
            if token in stop:
                self.matchers[i] = None
            else:
                matcher.consume_token(token)

    def complete(self, row: int) -> bool:
        """The row's grammar can take nothing more: its text is finished."""
        matcher = self.matchers[row]
        return matcher is not None and matcher.is_stopped() and not matcher.is_error()

    def release(self, row: int) -> None:
        """The row has ended; what it samples from now on is not recorded."""
        self.matchers[row] = None

    def reorder(self, parents: np.ndarray) -> None:
        """Rows continue from `parents` (beam search): each gets a copy of its parent's matcher."""
        old = self.matchers
        self.matchers = [old[p].deep_copy() if old[p] is not None else None for p in parents.tolist()]


def _unpack(bits: np.ndarray, vocab_size: int) -> np.ndarray:
    """(rows, words) int32 bitmask, bit j of word w is token 32 w + j -> (rows, vocab) bool."""
    return np.unpackbits(bits.view(np.uint8), axis=1, count=vocab_size, bitorder="little").view(bool)


def _first_line(message: str) -> str:
    """llguidance's reason, without its source excerpt: the regex crate's "error:" line if any."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    reason = next((line[len("error:"):].strip() for line in lines if line.startswith("error:")), None)
    return reason or (lines[0] if lines else "unknown error")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
