"""tokenizer.json: Hugging Face `tokenizers`' document for a byte-level BPE tokenizer, written
and read by `Tokenizer.to_json` / `save` and `from_json` / `load`.

Bytes are spelled with GPT-2's printable map (`BYTE_TO_CHAR`), special tokens are added tokens
kept in the vocabulary under their text, and reading refuses, by name, any feature that would
make Hugging Face encode differently from edgellm.
"""

from __future__ import annotations

from edgellm.tokenizer import TokenizerError

FORMAT_VERSION = "1.0"  # tokenizer.json's own "version": Hugging Face's format, read and written


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character (how tokenizer.json spells bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(others)}
    return dict(sorted(chars.items()))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
DIGITS = {"type": "Digits", "individual_digits": True}  # each digit alone, before ByteLevel's pattern


def document(token_bytes: list[bytes], merges: list[tuple[int, int]], special_tokens: dict[str, int],
             split_digits: bool = False) -> dict:
    """A tokenizer as a tokenizer.json document, every id unchanged; `split_digits` puts Hugging
    Face's Digits(individual_digits=True) before the ByteLevel pre-tokenizer."""
    spelled = ["".join(BYTE_TO_CHAR[b] for b in token) for token in token_bytes]
    for text, i in special_tokens.items():
        spelled[i] = text  # Hugging Face keeps added tokens in the vocabulary under their text
    if len(set(spelled)) != len(spelled):
        raise TokenizerError("A special token is spelled like another token in tokenizer.json. Received: "
                             f"special tokens {list(special_tokens)}. Rename the special token")
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    pre_tokenizer = {"type": "ByteLevel", **byte_level}
    if split_digits:
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [DIGITS, pre_tokenizer]}
    return {
        "version": FORMAT_VERSION,
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}
                         for text, i in sorted(special_tokens.items(), key=lambda kv: kv[1])],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {s: i for i, s in enumerate(spelled)},
                  "merges": [[spelled[a], spelled[b]] for a, b in merges]},
    }


def parse(doc: dict, source: str) -> tuple[list[bytes], list[tuple[int, int]], dict[str, int], bool]:
    """tokenizer.json -> (id -> bytes, merges as id pairs, special tokens, split_digits), refusing by
    name any feature that would make Hugging Face encode differently from edgellm."""
    def refuse(what: str, received: object, todo: str = "edgellm reads byte-level BPE tokenizers (GPT-2 style)"):
        raise TokenizerError(f"{source}: {what}. Received: {received}. {todo}")

    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        refuse("not a tokenizer.json document", f"{type(doc).__name__} without a 'model' object")
    if doc.get("version") != FORMAT_VERSION:
        refuse(f"unsupported tokenizer.json version, edgellm reads version {FORMAT_VERSION!r}",
               f"version={doc.get('version')!r}", "Re-save it with Hugging Face tokenizers >= 0.20")
    model, pre, post, dec = doc["model"], doc.get("pre_tokenizer"), doc.get("post_processor"), doc.get("decoder")
    split_digits = isinstance(pre, dict) and pre.get("type") == "Sequence" and pre.get("pretokenizers", [None])[0] == DIGITS
    if split_digits and len(pre["pretokenizers"]) == 2:
        pre = pre["pretokenizers"][1]
    if model.get("type") != "BPE":
        refuse("edgellm supports only BPE models", f"model type {model.get('type')!r}")
    if not isinstance(pre, dict) or pre.get("type") != "ByteLevel":
        refuse("edgellm supports only the ByteLevel pre-tokenizer", f"pre_tokenizer {_kind(pre)}")
    unsupported = [
        ("a normalizer", doc.get("normalizer"), None), ("truncation", doc.get("truncation"), None),
        ("padding", doc.get("padding"), None), ("add_prefix_space", pre.get("add_prefix_space", False), False),
        ("use_regex=false", pre.get("use_regex", True), True),
        ("a post-processor other than ByteLevel", _kind(post), "ByteLevel" if post else None),
        ("a decoder other than ByteLevel", _kind(dec), "ByteLevel"), ("dropout", model.get("dropout"), None),
        ("byte_fallback", model.get("byte_fallback", False), False),
        ("ignore_merges", model.get("ignore_merges", False), False),
        ("continuing_subword_prefix", model.get("continuing_subword_prefix") or None, None),
        ("end_of_word_suffix", model.get("end_of_word_suffix") or None, None),
    ]
    for feature, value, supported in unsupported:
        if value != supported:
            refuse(f"edgellm does not support {feature}", repr(value), "Use a byte-level BPE tokenizer without it")

    vocab, merges, added = model.get("vocab"), model.get("merges"), doc.get("added_tokens") or []
    if not isinstance(vocab, dict) or not isinstance(merges, list) or not isinstance(added, list):
        refuse("model.vocab must be an object, model.merges and added_tokens lists", "other types")
    special_tokens: dict[str, int] = {}
    for token in added:
        if not isinstance(token, dict) or not isinstance(token.get("content"), str) or type(token.get("id")) is not int:
            refuse("each added token needs a str content and an int id", repr(token)[:80])
        if not token.get("special") or any(token.get(k) for k in ("single_word", "lstrip", "rstrip")):
            refuse("edgellm supports added tokens only as special tokens without single_word, lstrip or rstrip",
                   repr(token)[:120])
        special_tokens[token["content"]] = token["id"]
    by_id = {i: text.encode("utf-8") for text, i in special_tokens.items()}
    special_text = {i: text for text, i in special_tokens.items()}
    for spelled, i in vocab.items():
        if special_text.get(i) == spelled:
            continue  # Hugging Face keeps added tokens in the vocabulary too
        if type(i) is not int or i in by_id:
            refuse("each vocabulary id must be an int used once", f"{spelled!r}: {i!r}")
        if special_tokens.get(spelled, i) != i:
            refuse(f"added token {spelled!r} has another id in the vocabulary", f"{special_tokens[spelled]} and {i}")
        if any(c not in CHAR_TO_BYTE for c in spelled):
            refuse("a vocabulary entry is not byte-level text", f"{spelled!r} (id {i})")
        by_id[i] = bytes(CHAR_TO_BYTE[c] for c in spelled)
    if sorted(by_id) != list(range(len(by_id))):
        gap = min(set(range(len(by_id) + 1)) - set(by_id))
        refuse("ids must run from 0 without gaps", f"no token has id {gap}")
    pairs = []
    for n, merge in enumerate(merges):
        parts = merge.split(" ") if isinstance(merge, str) else merge
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) and p in vocab for p in parts)):
            refuse(f"merge {n} is not a pair of vocabulary entries", repr(merge))
        pairs.append((vocab[parts[0]], vocab[parts[1]]))
    return [by_id[i] for i in range(len(by_id))], pairs, special_tokens, split_digits


def _kind(component: object) -> str | None:
    return component.get("type") if isinstance(component, dict) else None
