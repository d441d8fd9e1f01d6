import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from conftest import tiny_backbone
from latentreason.decoding.generate import greedy_generate, greedy_reference, left_pad
from latentreason.models.tokenizer import build_byte_tokenizer, special_ids


def test_tokenizer_roundtrip(tmp_path):
    tok = build_byte_tokenizer()
    text = "3+4*7-2+5\n<<3+4=7>> #### 2 — héllo 日本"
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    assert [tok(str(d)).input_ids for d in range(10)] == [[48 + d] for d in range(10)]  # one token per digit
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    for loaded in (PreTrainedTokenizerFast.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert loaded(text).input_ids == ids
        assert special_ids(loaded) == special_ids(tok)
        assert loaded.decode(loaded("a<bot>b").input_ids, skip_special_tokens=True) == "ab"


def test_special_tokens_are_single_ids():
    tok = build_byte_tokenizer()
    ids = special_ids(tok)
    assert tok("<bot><eot><latent>", add_special_tokens=False).input_ids == [ids.bot, ids.eot, ids.latent]
    assert len({ids.pad, ids.eos, ids.bot, ids.eot, ids.latent, ids.pause}) == 6


def _prompts(tok):
    texts = ["1+2*3\n", "9-8+7*6-5\n", "4\n", "2*2*2*2*2*2\n"]
    return [tok(t).input_ids for t in texts]


def test_cached_batched_decode_equals_uncached(backbone_kind):
    bb = tiny_backbone(backbone_kind, seed=1, dtype=torch.float64, n_embd=48, n_head=4)
    # scale weights so greedy choices are decisive (random init logits are otherwise near-uniform)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(3.0)
    bb.model.eval()
    prompts = _prompts(bb.tokenizer)
    tokens, passes = greedy_generate(bb.model, prompts, bb.ids.pad, bb.ids.eos, max_new_tokens=12)
    for p, got, n_pass in zip(prompts, tokens, passes):
        ref = greedy_reference(bb.model, p, bb.ids.eos, max_new_tokens=12)
        assert got == ref
        assert n_pass == len(got)  # prefill + one pass per token after the first


def test_decode_rows_stop_independently():
    """Row 0 hits EOS after its first token while the others run to the limit: it stops there, leaves the
    batch (no more forward passes for it), and the other rows decode exactly as they do alone."""
    bb = tiny_backbone("tiny-gpt2", seed=1, dtype=torch.float64)
    with torch.no_grad():
        for p in bb.model.parameters():
            p.mul_(3.0)
    bb.model.eval()
    prompts = _prompts(bb.tokenizer)
    n_new = 6
    free, _ = greedy_generate(bb.model, prompts, bb.ids.pad, eos_id=-1, max_new_tokens=n_new)  # nothing stops
    # EOS := the first token row 0 generates, chosen so no other row ever generates it
    eos = free[0][0]
    assert all(eos not in row for row in free[1:]), "pick another seed: EOS would stop other rows too"
    tokens, passes = greedy_generate(bb.model, prompts, bb.ids.pad, eos, max_new_tokens=n_new)
    assert tokens[0] == [eos] and passes[0] == 1  # stopped at once: the prefill was its only pass
    assert [len(t) for t in tokens[1:]] == [n_new] * (len(prompts) - 1)
    assert passes[1:] == [n_new] * (len(prompts) - 1)  # prefill + one pass per token after the first
    assert tokens[1:] == free[1:]
    for p, got in zip(prompts, tokens):
        assert got == greedy_reference(bb.model, p, eos, max_new_tokens=n_new)
        assert got == greedy_generate(bb.model, [p], bb.ids.pad, eos, max_new_tokens=n_new)[0][0]


def test_left_pad():
    ids, mask = left_pad([[1, 2], [3], []], pad_id=0)
    assert ids.tolist() == [[1, 2], [0, 3], [0, 0]]
    assert mask.tolist() == [[1, 1], [0, 1], [0, 0]]


def test_hf_path_loads_local_model(tmp_path, backbone_kind):
    """A 'real' HF model directory goes through AutoModelForCausalLM / AutoTokenizer, tokens added."""
    from latentreason.models.backbone import ModelConfig, load_backbone

    bb = tiny_backbone(backbone_kind)
    # simulate a pretrained model without our special tokens: plain byte tokenizer with eos only
    from tokenizers import Tokenizer

    raw = Tokenizer.from_str(bb.tokenizer.backend_tokenizer.to_str())
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")
    bb.model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = load_backbone(ModelConfig(name=str(tmp_path)))
    assert loaded.ids.bot != loaded.ids.eot and loaded.tokenizer.pad_token is not None
    assert loaded.model.get_input_embeddings().weight.shape[0] >= len(loaded.tokenizer)
    ids = torch.tensor([loaded.tokenizer("1+1").input_ids])
    out = loaded.model(input_ids=ids)
    assert out.logits.shape[-1] >= len(loaded.tokenizer)
    # the weights are the saved ones: same logits over the saved vocabulary as the model that was saved
    with torch.no_grad():
        want = bb.model(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits[..., : want.shape[-1]]
    torch.testing.assert_close(got, want)


def test_prompt_only_tokenisation_equals_the_full_one():
    """Decoding tokenises prompts only; they must be the prompts of the full (training) tokenisation."""
    from latentreason.data.example import Example
    from latentreason.methods.base import Serializer

    bb = tiny_backbone("tiny-gpt2")
    exs = [Example("3+4*7", ["3+4=7", "7*7=9"], "9"), Example("What is 12 plus 3?", [], "15"),
           Example(" spaced  question ", ["a"], "x")]
    for style in ("default", "coconut", "codi", "icot"):
        ser = Serializer(style, bb)
        assert ser.prompts(exs) == [t.prompt for t in ser.tokenize(exs)], style
    assert Serializer("default", bb).prompts([]) == []
