"""edgellm's byte-level BPE: round trips, streaming, special tokens, training, file errors, the
tokenizer commands, and parity with Hugging Face `tokenizers` both ways on English and French."""

import ast
import json
import random
import sys
import unicodedata

import pytest
import tokenizers
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import decoders, models, pre_tokenizers, trainers

from conftest import REPO, SHAKESPEARE
from edgellm.cli import main
from edgellm.tokenizer import SPLIT_PATTERN, Tokenizer, TokenizerError
from edgellm.tokenizer.json_format import CHAR_TO_BYTE

ENGLISH_FILE = REPO / "data" / "austen" / "austen-sample.txt"
FRENCH_FILE = REPO / "data" / "tatoeba-fra" / "fra-sample.txt"
ENGLISH = ENGLISH_FILE.read_text(encoding="utf-8")
FRENCH = FRENCH_FILE.read_text(encoding="utf-8")
SPECIALS = ["<|endoftext|>", "<pad>"]

# Any text. For Hugging Face parity, characters assigned in this Python's Unicode tables: newer
# characters can split differently, because the regex module and Hugging Face's Oniguruma carry
# different Unicode versions (the round trip holds either way).
ANY_TEXT = st.text()
ASSIGNED = st.characters(exclude_categories=("Cs", "Cn"))
PROSE_BITS = st.sampled_from([" ", "  ", "\n", "\n\n", "\r\n", "\t", "\u00a0", "'s", "'ll", "e", "é", "the", "1",
                              "23", ".", "!?", "日本", "🤗", "👩\u200d👩\u200d👧"])
TEXT = st.lists(st.one_of(PROSE_BITS, st.text(ASSIGNED, max_size=8))).map("".join)
TEXT_WITH_SPECIALS = st.lists(st.one_of(PROSE_BITS, st.text(ASSIGNED, max_size=8), st.sampled_from(SPECIALS),
                                        st.just("<|endoftext|"))).map("".join)


@pytest.fixture(scope="module")
def tok():
    """Trained by edgellm on English and French prose."""
    return Tokenizer.train([ENGLISH[:100_000], FRENCH[:60_000]], vocab_size=1000, special_tokens=SPECIALS)


@pytest.fixture(scope="module")
def tok_as_hf(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("edgellm") / "tokenizer.json"
    tok.save(path)
    return tokenizers.Tokenizer.from_file(str(path))


def _train_hf(kind: str) -> tokenizers.Tokenizer:
    texts = [ENGLISH[:100_000], FRENCH[:60_000]]
    if kind == "ByteLevelBPETokenizer":
        hf = tokenizers.ByteLevelBPETokenizer()
        hf.train_from_iterator(texts, vocab_size=1000, min_frequency=2, special_tokens=SPECIALS)
        return hf._tokenizer
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return hf


@pytest.fixture(scope="module", params=["ByteLevelBPETokenizer", "BpeTrainer"])
def hf_pair(request, tmp_path_factory):
    """(Hugging Face-trained tokenizer, its file, edgellm's load of that file)."""
    hf = _train_hf(request.param)
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    hf.save(str(path))
    return hf, path, Tokenizer.load(path)


def _hf_ids(hf, text, specials_as_text):
    hf.encode_special_tokens = specials_as_text
    return hf.encode(text).ids


# ---- round trips --------------------------------------------------------------------------------


@given(ANY_TEXT)
@settings(max_examples=400, deadline=None)
def test_decode_encode_round_trips_any_string(tok, s):
    assert tok.decode(tok.encode(s)) == s
    assert tok.decode(tok.encode(s, allow_special=True)) == s


@pytest.mark.parametrize("s", [
    "", "a", "👩‍👩‍👧‍👦 family 🏳️‍🌈 👍🏽", "日本語のテキスト、中文文本。한국어", "e\u0301 n\u0303 a\u0308\u0301\u0302",
    "\x00\x01\x1b\x7f\x85\u2028\u2029", "a\r\nb\r\n\r\n", " " * 300 + "\n" * 300 + "\t \n " * 50,
    "x" * 5000, "Honorificabilitudinitatibus" * 200, "<|endoftext|>", "<|endoftext|><|endoftext|x", "\ufeff\ufffd",
])
def test_round_trip_edge_cases(tok, tok_as_hf, s):
    assert tok.decode(tok.encode(s)) == s
    assert tok.encode(s) == _hf_ids(tok_as_hf, s, specials_as_text=True)


def test_a_lone_surrogate_is_refused_by_name(tok):
    with pytest.raises(TokenizerError, match="lone surrogate.*U\\+D800 at character 2"):
        tok.encode("ab\ud800c")


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_decoding_any_valid_ids_never_raises(tok, tok_as_hf, data):
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1)))
    text = tok.decode(ids)
    assert text == tok.decode_bytes(ids).decode("utf-8", errors="replace")
    assert text == tok_as_hf.decode(ids, skip_special_tokens=False)


def test_decoding_an_unknown_id_is_an_error(tok):
    for bad in (-1, tok.vocab_size):
        with pytest.raises(TokenizerError, match=f"ids must be in \\[0, {tok.vocab_size}\\). Received: {bad}"):
            tok.decode([5, bad])


# ---- streaming ----------------------------------------------------------------------------------


def _stream(tok, ids):
    decoder = tok.stream_decoder()
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_stream_decoder_concatenation_equals_decode_of_any_ids(tok, data):
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1)))
    assert "".join(_stream(tok, ids)) == tok.decode(ids)


@given(TEXT)
@settings(max_examples=200, deadline=None)
def test_stream_decoder_yields_only_whole_characters(tok, s):
    pieces = _stream(tok, tok.encode(s))
    assert "".join(pieces) == s
    assert all("\ufffd" not in p for p in pieces)  # a character split over ids comes out whole


def test_stream_decoder_waits_for_the_last_byte_of_a_character():
    bytes_only = Tokenizer.train([""], vocab_size=257)  # one id per byte
    assert _stream(bytes_only, "é🤗".encode()) == ["", "é", "", "", "", "🤗", ""]
    assert _stream(bytes_only, "é".encode()[:1]) == ["", "\ufffd"]  # an unfinished character at the end


# ---- special tokens -----------------------------------------------------------------------------


def test_special_tokens_are_text_unless_allowed(tok):
    eos, pad = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<pad>"]
    assert eos == tok.eos_token_id == 998 and pad == 999
    text = "a<|endoftext|>b<pad>"
    assert eos not in tok.encode(text) and pad not in tok.encode(text)
    allowed = tok.encode(text, allow_special=True)
    assert allowed == tok.encode("a") + [eos] + tok.encode("b") + [pad]
    assert tok.decode(allowed) == text


@given(TEXT_WITH_SPECIALS)
@settings(max_examples=200, deadline=None)
def test_plain_text_never_yields_a_special_id(tok, s):
    assert not set(tok.encode(s)) & set(tok.special_tokens.values())


def test_the_longest_special_token_wins():
    tok = Tokenizer.train(["abc"], vocab_size=300, special_tokens=["<s>", "<s>x"])
    assert tok.special_tokens == {"<s>": 256, "<s>x": 257}  # no pair is seen twice in "abc": no merges
    assert tok.encode("<s>x<s>", allow_special=True) == [257, 256]


# ---- training -----------------------------------------------------------------------------------


def test_training_is_deterministic_and_files_equal_strings(tmp_path):
    paths = [tmp_path / "en.txt", tmp_path / "fr.txt"]
    paths[0].write_text(ENGLISH[:50_000], encoding="utf-8")
    paths[1].write_text(FRENCH[:30_000], encoding="utf-8")
    a = Tokenizer.train([ENGLISH[:50_000], FRENCH[:30_000]], vocab_size=700)
    b = Tokenizer.train_from_files(paths, vocab_size=700)
    again = Tokenizer.train([ENGLISH[:50_000], FRENCH[:30_000]], vocab_size=700)
    assert a.merges == again.merges == b.merges and a.to_json() == b.to_json() and a.vocab_size == 700


def test_training_reports_progress_and_honours_min_frequency(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(ENGLISH[:20_000], encoding="utf-8")
    labels = []

    def progress(items, label):
        labels.append((label, len(items)))
        return items

    tok = Tokenizer.train_from_files([path], vocab_size=600, progress=progress)
    assert labels == [("reading", 1), ("merging", 600 - 257)]
    sizes = [Tokenizer.train([ENGLISH[:20_000]], 2000, min_frequency=m).vocab_size for m in (2, 20, 10**9)]
    assert 2000 >= sizes[0] > sizes[1] > sizes[2] == 257
    assert tok.decode(tok.encode(ENGLISH[:20_000])) == ENGLISH[:20_000]


def test_training_errors_name_the_problem(tmp_path):
    with pytest.raises(TokenizerError, match="at least 256 \\+ 2 special token\\(s\\) = 258. Received: vocab_size=257"):
        Tokenizer.train(["abc"], vocab_size=257, special_tokens=SPECIALS)
    with pytest.raises(TokenizerError, match="distinct non-empty"):
        Tokenizer.train(["abc"], vocab_size=300, special_tokens=["<a>", "<a>"])
    with pytest.raises(TokenizerError, match="min_frequency"):
        Tokenizer.train(["abc"], vocab_size=300, min_frequency=0)
    with pytest.raises(TokenizerError, match="Training file not found. Received: .*missing.txt"):
        Tokenizer.train_from_files([tmp_path / "missing.txt"], vocab_size=300)
    with pytest.raises(TokenizerError, match="Cannot read training file"):
        Tokenizer.train_from_files([tmp_path], vocab_size=300)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("déjà vu".encode("latin-1"))
    with pytest.raises(TokenizerError, match="latin1.txt is not UTF-8 text. Received: byte 0xe9 at byte offset 1"):
        Tokenizer.train_from_files([latin1], vocab_size=300)


# ---- parity with Hugging Face tokenizers --------------------------------------------------------


@pytest.mark.parametrize("text", [ENGLISH, FRENCH, SHAKESPEARE.read_text(encoding="utf-8")[-50_000:]],
                         ids=["english", "french", "shakespeare"])
def test_hugging_face_reads_our_file_and_gives_the_same_ids(tok, tok_as_hf, text):
    ids = tok.encode(text)
    assert _hf_ids(tok_as_hf, text, specials_as_text=True) == ids
    assert tok_as_hf.decode(ids) == text


@given(TEXT_WITH_SPECIALS)
@settings(max_examples=300, deadline=None)
def test_hugging_face_parity_on_generated_text(tok, tok_as_hf, s):
    assert tok.encode(s) == _hf_ids(tok_as_hf, s, specials_as_text=True)
    assert tok.encode(s, allow_special=True) == _hf_ids(tok_as_hf, s, specials_as_text=False)


@pytest.mark.parametrize("text", [ENGLISH, FRENCH], ids=["english", "french"])
def test_we_read_hugging_face_files_with_their_own_ids(hf_pair, text):
    hf, _, ours = hf_pair
    assert ours.special_tokens == {"<|endoftext|>": 0, "<pad>": 1}  # Hugging Face puts them first
    ids = ours.encode(text)
    assert ids == _hf_ids(hf, text, specials_as_text=True)
    assert ours.decode(ids) == hf.decode(ids) == text


@given(TEXT_WITH_SPECIALS)
@settings(max_examples=200, deadline=None)
def test_we_match_hugging_face_trained_files_on_generated_text(hf_pair, s):
    hf, _, ours = hf_pair
    ids = ours.encode(s, allow_special=True)
    assert ids == _hf_ids(hf, s, specials_as_text=False)
    assert ours.encode(s) == _hf_ids(hf, s, specials_as_text=True)
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False) == s


def test_saving_a_hugging_face_file_keeps_every_id(hf_pair, tmp_path):
    hf, path, ours = hf_pair
    ours.save(tmp_path / "again.json")
    before, after = json.loads(path.read_text("utf-8")), json.loads((tmp_path / "again.json").read_text("utf-8"))
    assert after["model"]["vocab"] == before["model"]["vocab"]
    assert after["model"]["merges"] == before["model"]["merges"]
    assert [(t["id"], t["content"]) for t in after["added_tokens"]] == [(0, "<|endoftext|>"), (1, "<pad>")]
    again = tokenizers.Tokenizer.from_file(str(tmp_path / "again.json"))
    text = FRENCH[:20_000] + "<pad>" + ENGLISH[:20_000]
    assert again.encode(text).ids == _hf_ids(hf, text, specials_as_text=False) == ours.encode(text, allow_special=True)


def test_any_consistent_id_order_loads_with_its_own_ids(tok, tmp_path):
    doc = tok.to_json()
    order = list(range(tok.vocab_size))
    random.Random(0).shuffle(order)  # order[old id] = new id
    doc["model"]["vocab"] = {s: order[i] for s, i in doc["model"]["vocab"].items()}
    for token in doc["added_tokens"]:
        token["id"] = order[token["id"]]
    (tmp_path / "shuffled.json").write_text(json.dumps(doc), encoding="utf-8")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "shuffled.json"))
    ours = Tokenizer.load(tmp_path / "shuffled.json")
    text = ENGLISH[-30_000:] + "<|endoftext|>" + FRENCH[-20_000:]
    assert ours.encode(text, allow_special=True) == hf.encode(text).ids
    assert ours.encode(text, allow_special=True) == [order[i] for i in tok.encode(text, allow_special=True)]
    assert ours.to_json()["model"]["vocab"] == doc["model"]["vocab"]


def test_split_matches_hugging_face_on_every_assigned_code_point():
    """Each character assigned in this Python's Unicode tables, in several contexts."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    differ = []
    for code in range(sys.maxunicode + 1):
        c = chr(code)
        if unicodedata.category(c) in ("Cs", "Cn"):
            continue
        s = f"a{c}{c} {c}1{c}\n{c} x'{c}  {c}"
        theirs = [bytes(CHAR_TO_BYTE[ch] for ch in piece).decode() for piece, _ in byte_level.pre_tokenize_str(s)]
        if SPLIT_PATTERN.findall(s) != theirs:
            differ.append(f"U+{code:04X}")
    assert not differ, differ[:20]



# ---- tokenizer.json errors ----------------------------------------------------------------------


def _set(doc, keys, value):
    for key in keys[:-1]:
        doc = doc[key]
    doc[keys[-1]] = value


@pytest.mark.parametrize("keys, value, message", [
    (["version"], "2.0", "unsupported tokenizer.json version.*version='2.0'"),
    (["normalizer"], {"type": "NFC"}, "does not support a normalizer"),
    (["pre_tokenizer"], {"type": "Whitespace"}, "only the ByteLevel pre-tokenizer. Received: pre_tokenizer Whitespace"),
    (["pre_tokenizer", "add_prefix_space"], True, "does not support add_prefix_space"),
    (["post_processor"], {"type": "TemplateProcessing"}, "post-processor other than ByteLevel"),
    (["decoder"], {"type": "WordPiece"}, "decoder other than ByteLevel"),
    (["truncation"], {"max_length": 8}, "does not support truncation"),
    (["model", "type"], "WordPiece", "only BPE models"),
    (["model", "byte_fallback"], True, "does not support byte_fallback"),
    (["model", "dropout"], 0.1, "does not support dropout"),
    (["model", "merges"], [["zz", "q"]], "merge 0 is not a pair of vocabulary entries"),
    (["model", "vocab", "Ġt"], 5000, "ids must run from 0 without gaps"),
    (["model", "vocab", "!"], 99999, "ids must run from 0 without gaps"),
    (["model", "vocab", "a b"], 1000, "not byte-level text"),
    (["added_tokens", 0, "special"], False, "added tokens only as special tokens"),
    (["model"], None, "not a tokenizer.json document"),
])
def test_unsupported_or_corrupt_files_are_refused_by_name(tok, tmp_path, keys, value, message):
    doc = tok.to_json()
    _set(doc, keys, value)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(TokenizerError, match=message) as error:
        Tokenizer.load(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_unreadable_files_get_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="Tokenizer file not found. Received: .*missing.json"):
        Tokenizer.load(tmp_path / "missing.json")
    with pytest.raises(TokenizerError, match="Cannot read tokenizer file"):
        Tokenizer.load(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="bad.json is not valid JSON"):
        Tokenizer.load(tmp_path / "bad.json")


# ---- the tokenizer commands ---------------------------------------------------------------------


def _run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def test_tokenizer_train_and_tokenize_commands(tmp_path):
    en, fr, out = tmp_path / "en.txt", tmp_path / "fr.txt", tmp_path / "tok.json"
    en.write_text(ENGLISH[:40_000], encoding="utf-8")
    fr.write_text(FRENCH[:20_000], encoding="utf-8")
    result = _run("tokenizer", "train", en, fr, "--vocab-size", 500, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n" and "500 ids (243 merges) from 2 file(s)" in result.stderr
    ours = Tokenizer.load(out)
    assert ours.merges == Tokenizer.train_from_files([en, fr], vocab_size=500).merges
    text = "Emma Woodhouse, déjà vu <|endoftext|>"
    assert tokenizers.Tokenizer.from_file(str(out)).encode(text).ids == ours.encode(text, allow_special=True)

    ids = _run("tokenize", "--ids", "--tokenizer", out, text)
    assert ids.exit_code == 0 and ids.stdout.split() == [str(i) for i in ours.encode(text)]
    assert f"{len(ours.encode(text))} tokens" in ids.stderr
    special = _run("tokenize", "--ids", "--allow-special", "--tokenizer", out, text)
    assert special.stdout.split()[-1] == str(ours.eos_token_id)

    (tmp_path / "model").mkdir()
    ours.save(tmp_path / "model" / "tokenizer.json")
    shown = _run("tokenize", "--model", tmp_path / "model", "-", input="Emma 🤗")
    assert shown.exit_code == 0
    pieces = ast.literal_eval(shown.stdout)  # a list of str and bytes
    assert b"".join(p if isinstance(p, bytes) else p.encode() for p in pieces) == "Emma 🤗".encode()
    assert len(pieces) == len(ours.encode("Emma 🤗"))


def test_tokenizer_commands_fail_with_one_line(tmp_path):
    good, latin1, bad_json = tmp_path / "good.txt", tmp_path / "latin1.txt", tmp_path / "bad.json"
    good.write_text(ENGLISH[:5_000], encoding="utf-8")
    latin1.write_bytes(b"abc \xe9t\xe9")
    bad_json.write_text('{"version": "1.0", "model": {"type": "Unigram"}}', encoding="utf-8")
    cases = [
        (("tokenizer", "train", good, tmp_path / "missing.txt"), "not found"),
        (("tokenizer", "train", good, tmp_path), "Cannot read training file"),
        (("tokenizer", "train", good, latin1), "latin1.txt is not UTF-8 text. Received: byte 0xe9 at byte offset 4"),
        (("tokenizer", "train", good, "--vocab-size", 257, "--special-token", "<a>", "--special-token", "<b>"),
         "vocab_size must be at least 256 + 2"),
        (("tokenizer", "train", good, "-o", tmp_path / "no" / "such" / "dir.json"), "Cannot write the tokenizer"),
        (("tokenize", "hi"), "needs exactly one tokenizer"),
        (("tokenize", "hi", "--tokenizer", tmp_path / "missing.json"), "Tokenizer file not found"),
        (("tokenize", "hi", "--tokenizer", bad_json), "bad.json: edgellm supports only BPE models"),
        (("tokenize", "hi", "--model", "no-such-model"), "No model folder"),
    ]
    for args, message in cases:
        result = _run(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, (args, result.output)
        assert lines[0].startswith("Error: ") and message in lines[0], (args, lines)



def test_tokenizer_commands_explain_themselves():
    for args in (["tokenizer"], ["tokenizer", "train"], ["tokenize"]):
        result = _run(*args, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout, args
