"""edgellm's byte-level BPE: round trips, streaming, and parity with Hugging Face tokenizers."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgellm.tokenizer import Tokenizer, TokenizerError

from conftest import SHAKESPEARE

TEXT = SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT[:200_000]], vocab_size=600)


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_decode_encode_round_trips_any_string(tok, s):
    assert tok.decode(tok.encode(s)) == s


@pytest.mark.parametrize("s", ["", "👩‍👩‍👧‍👦 family", "日本語のテキスト", "e\u0301 combining", "\x00\x01\x1b", "a\r\nb",
                               " " * 50 + "\n" * 20, "x" * 5000, "<|endoftext|>"])
def test_round_trip_edge_cases(tok, s):
    assert tok.decode(tok.encode(s)) == s


def test_training_is_deterministic():
    a = Tokenizer.train([TEXT[:50_000]], vocab_size=400)
    b = Tokenizer.train([TEXT[:50_000]], vocab_size=400)
    assert a.merges == b.merges and a.vocab_size == 400


def test_stream_decoder_emits_whole_characters(tok):
    text = "héllo 🤗 wörld 日本"
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in tok.encode(text)] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_special_tokens_are_text_unless_allowed(tok):
    eos = tok.eos_token_id
    assert eos not in tok.encode("a<|endoftext|>b")
    assert tok.encode("a<|endoftext|>b", allow_special=True).count(eos) == 1


def test_hugging_face_reads_our_file_and_gives_the_same_ids(tok, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok.save(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    sample = TEXT[-100_000:]
    assert hf.encode(sample).ids == tok.encode(sample)
    assert hf.decode(tok.encode(sample)) == sample
    assert Tokenizer.load(tmp_path / "tokenizer.json").encode(sample) == tok.encode(sample)


def test_bad_files_and_sizes_get_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="vocab_size must be at least 256"):
        Tokenizer.train(["abc"], vocab_size=200)
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="Cannot read tokenizer file"):
        Tokenizer.load(tmp_path / "bad.json")
