"""Produce the golden parity fixtures of ``tests/parity/`` with the OFFICIAL code of iCoT, Coconut and CODI.

    python benchmarks/parity/make_golden.py --official-dir /path/to/official \
        [--python-coconut /venv-coconut/bin/python] [--python-codi /venv-codi/bin/python]

``--official-dir`` holds local checkouts of the three official repositories (this project contains
none of their code)::

    PATH/coconut                        github.com/facebookresearch/coconut
    PATH/codi                           github.com/zhenyi4/codi
    PATH/Internalize_CoT_Step_by_Step   github.com/da03/Internalize_CoT_Step_by_Step

Each official part runs in the Python environment its repository pins: ``--python-coconut`` (torch,
transformers 4.46.2, datasets 3.1.0; also runs iCoT, whose ``train.py`` imports ``transformers.AdamW``)
and ``--python-codi`` (transformers 4.52.4, peft 0.15.2, datasets). Both default to this interpreter.
torch 2.13 (CPU) works with both.

What it does, all on CPU in float64 with dropout off:

1. **inputs** (any environment): picks a few GSM8k-Aug and 4x4-multiplication lines from
   ``../shared/data`` (``--data-dir``), trains a GPT-2-style byte-level BPE tokenizer on them with
   ``tokenizers`` (480 tokens, ``<|endoftext|>`` last), and draws the weights of a 2-layer GPT-2
   (d = 16) with 3 rows beyond the tokenizer (the new tokens of CODI / Coconut) and a CODI projection.
   Written to the output folder: ``tokenizer/``, ``config.json``, ``weights.safetensors``, ``lines/``.
2. **coconut** (official ``preprocessing/gsm_icot.py``, ``dataset.py``, ``coconut.py``): token ids of the
   preprocessing, the padded stage-k batches and their loss for k = 0..K+1, and greedy generation
   (the official batch-1 ``Coconut.generate``) at the final stage. The vocabulary set-up of ``run.py``
   (pad = EOS, three tokens added in its order) is repeated here, as ``run.py`` is one ``main()``.
3. **icot** (official ``src/data.py``, ``src/model.py``, ``src/train.py``): token ids and labels of the
   dataset, then the sliced inputs / labels and the loss of ``train.evaluate`` at several removal
   counts with given Removal Smoothing offsets (``torch.multinomial`` is replaced by the offsets;
   the sampled generation of that function is skipped).
4. **codi** (official ``train.py``, ``src/model.py``, ``test.py``): ``train.train()`` runs up to the
   Trainer (``load_dataset`` returns the chosen lines, the Trainer class only captures the data set),
   the CODI model's ``forward`` gives student CE, distillation and teacher CE on an equal-length and
   a left-padded batch; ``test.evaluation()`` gives the greedy tokens of a left-padded batch and of
   single questions. The official code loads its models in half precision and moves them to CUDA:
   here model loads are float64, ``.to("cuda")`` / ``.to(bfloat16)`` are ignored and ``device="cuda"``
   becomes the CPU. transformers 4.52.4 unmasks fully padded rows of a padded prompt on CUDA only
   (``_unmask_unattended``); that CUDA branch is applied on the CPU too.

Expected values go to ``golden.json.gz`` (token ids as lists, losses as floats); the whole folder is a
few hundred KB and is committed. ``tests/parity/`` compares the project to it at 1e-6.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_OUT = ROOT / "tests" / "parity" / "data"

N_EMBD, N_LAYER, N_HEAD, N_POS, VOCAB = 16, 2, 2, 512, 480
N_NEW = 3  # rows beyond the tokenizer: CODI's pad/<bot>/<eot>, Coconut's three latent tokens
COCONUT_C, COCONUT_K = 2, 3
COCONUT_MAX_NEW = 64
TRAIN_STEPS = 400
CODI_N_LATENT = 6
ICOT_REMOVALS = [0, 1, 3, 7, 20, "inf"]


# ----------------------------------------------------------------------------------------- inputs
def _read_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]


def _n_steps(line: str) -> int:
    cot = line.split("||", 1)[1].rsplit("####", 1)[0].strip()
    return len(cot.split()) if cot else 0


def _pick_lines(gsm: list[str], test: list[str], qlen) -> list[str]:
    """GSM8k-Aug lines covering the cases the fixed points touch: first a pair whose questions have the
    same number of tokens (an unpadded batch), then 1 and 4 steps, an empty CoT, a thousands comma in the
    answer, a double space in the question and a negative answer (dropped by CODI's training script)."""
    short = [ln for ln in gsm if len(ln.split("||")[0]) < 230]
    by_len: dict[int, list[str]] = {}
    for ln in short:
        if "  " not in ln.split("||")[0] and _n_steps(ln) in (2, 3):
            by_len.setdefault(qlen(ln.split("||")[0]), []).append(ln)
    pair = next(v[:2] for k, v in sorted(by_len.items()) if len(v) >= 2 and _n_steps(v[0]) != _n_steps(v[1]))
    picked = list(pair)
    for want in (lambda ln: _n_steps(ln) == 1, lambda ln: _n_steps(ln) == 4, lambda ln: _n_steps(ln) == 0,
                 lambda ln: "," in ln.rsplit("####", 1)[1], lambda ln: "  " in ln.split("||")[0]):
        picked.append(next(ln for ln in short if want(ln) and ln not in picked))
    negative = [ln for ln in test if ln.rsplit("####", 1)[1].strip().startswith("-")]
    rest = picked[2:] + [min(negative, key=len)]
    return pair + rest


def make_inputs(out: Path, data_dir: Path, seed: int = 0) -> None:
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config

    gsm = _read_lines(data_dir / "gsm8k_aug" / "valid.txt")
    test = _read_lines(data_dir / "gsm8k_aug" / "test.txt")
    mult = _read_lines(data_dir / "icot_multiplication" / "icot_si_2024" / "4_by_4_mult" / "valid.txt")[:3]

    # GPT-2-style byte-level BPE: GPT-2's pre-tokenizer regex, the 256 byte symbols + merges, <|endoftext|> last
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = []
    for ln in gsm + mult:
        q, rest = ln.split("||", 1)
        texts += [q, rest, rest.replace("####", "The answer is:"), rest.replace("####", "###")]
        # numbers after a space often, so that (as in GPT-2) " 18" is one token: the answer's value then
        # merges with the space of its marker, which is what makes the marker + value tokenisation matter
        texts += [" " + rest.rsplit("####", 1)[1].strip().split(",")[0]] * 8
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    vocab = tok.get_vocab()
    assert len(vocab) == VOCAB - 1, len(vocab)
    vocab["<|endoftext|>"] = VOCAB - 1
    tdir = out / "tokenizer"
    tdir.mkdir(parents=True, exist_ok=True)
    model_dir = tempfile.mkdtemp()
    tok.model.save(model_dir)
    (tdir / "merges.txt").write_bytes(Path(model_dir, "merges.txt").read_bytes())
    (tdir / "vocab.json").write_text(json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), ensure_ascii=False),
                                     encoding="utf-8")
    eos_tok = "<|endoftext|>"
    (tdir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": N_POS, "add_prefix_space": False,
        "eos_token": eos_tok, "bos_token": eos_tok, "unk_token": eos_tok}, indent=2))
    (tdir / "special_tokens_map.json").write_text(json.dumps({"eos_token": eos_tok, "bos_token": eos_tok,
                                                              "unk_token": eos_tok}, indent=2))
    tok.add_special_tokens([eos_tok])

    def qlen(q: str) -> int:
        return len(tok.encode(q).ids)

    lines = _pick_lines(gsm, test, qlen)
    (out / "lines").mkdir(parents=True, exist_ok=True)
    (out / "lines" / "gsm.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "lines" / "mult.txt").write_text("\n".join(mult) + "\n", encoding="utf-8")

    eos = VOCAB - 1
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=N_POS, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos, eos_token_id=eos)
    (out / "config.json").write_text(cfg.to_json_string())
    # weights: a tiny GPT-2, briefly trained on the lines in the three papers' layouts so that greedy decoding
    # and continuous thoughts do not collapse into one repeated token; the 3 extra rows start from the mean
    # row plus noise (roughly what the official code's resize gives), the CODI projection is random
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).to(torch.float64)
    enc = lambda t: tok.encode(t).ids  # noqa: E731
    seqs = []
    for ln in gsm[:400] + mult:
        q, rest = ln.split("||", 1)
        cot, ans = rest.rsplit("####", 1)
        seqs += [enc(f" {q} ") + [eos] + enc(f" {cot.strip()} ") + [eos] + enc(f" ####{ans} ") + [eos],
                 enc(f"{q}\n" + "".join(f"{s}\n" for s in cot.split()) + f"### {ans.strip()}") + [eos],
                 enc(q + cot.strip() + f"The answer is: {ans.strip()}") + [eos]]
    seqs = [x[:N_POS] for x in seqs]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(TRAIN_STEPS):
        idx = torch.randint(len(seqs), (16,), generator=g).tolist()
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((16, width), eos)
        labels = torch.full((16, width), -100)
        for r, i in enumerate(idx):
            ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
            labels[r, : len(seqs[i])] = torch.tensor(seqs[i])
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    d, V = N_EMBD, VOCAB + N_NEW
    w = {"transformer." + k: v.detach().clone().contiguous() for k, v in model.transformer.named_parameters()}
    wte = w["transformer.wte.weight"]
    extra = wte.mean(0, keepdim=True) + 0.05 * torch.randn(N_NEW, d, generator=g, dtype=torch.float64)
    w["transformer.wte.weight"] = torch.cat([wte, extra]).contiguous()

    def rnd(*shape, std=0.3):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).contiguous()

    # CODI's projection (official prj: Dropout, Linear, GELU, Linear, LayerNorm)
    w.update({"prj.1.weight": rnd(d, d), "prj.1.bias": rnd(d, std=0.1), "prj.3.weight": rnd(d, d),
              "prj.3.bias": rnd(d, std=0.1), "prj.ln.weight": 1 + rnd(d, std=0.1), "prj.ln.bias": rnd(d, std=0.1)})
    print(f"tiny model trained: last loss {float(loss):.3f}", flush=True)
    save_file(w, str(out / "weights.safetensors"))


def hf_model_dir(out: Path, where: Path, extra_rows: bool = False) -> Path:
    """A Hugging Face model folder (config, tokenizer, float64 weights with the tokenizer's rows) for the
    official code to load; its name contains "gpt2" (the official CODI code branches on the name)."""
    import torch
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    d = where / "tiny-gpt2"
    d.mkdir(parents=True, exist_ok=True)
    cfg = GPT2Config.from_json_file(str(out / "config.json"))
    model = GPT2LMHeadModel(cfg).to(torch.float64)
    w = {k: v for k, v in load_file(str(out / "weights.safetensors")).items() if k.startswith("transformer.")}
    w["transformer.wte.weight"] = w["transformer.wte.weight"][: cfg.vocab_size]
    model.load_state_dict(w, strict=False)
    model.save_pretrained(d)
    for f in (out / "tokenizer").iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    return d


def load_weights(out: Path, prefix: str = "transformer.") -> dict:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(out / "weights.safetensors")).items() if k.startswith(prefix)}


def gsm_rows(out: Path) -> list[dict]:
    rows = []
    for ln in (out / "lines" / "gsm.txt").read_text(encoding="utf-8").split("\n"):
        if ln.strip():
            q, rest = ln.split("||", 1)
            cot, ans = rest.rsplit("####", 1)
            rows.append({"question": q, "cot": cot.strip(), "answer": ans.strip()})
    return rows


# ----------------------------------------------------------------------------------------- coconut
def part_coconut(official: Path, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # transformers 4.46 builds float64 masks in the default dtype
    root = official / "coconut"
    sys.path.insert(0, str(root))
    import dataset as cdata  # official
    from coconut import Coconut  # official

    work = Path(tempfile.mkdtemp())
    mdir = hf_model_dir(out, work)
    # the official preprocessing (preprocessing/gsm_icot.py) on our lines, run where it expects data/
    (work / "data").mkdir()
    (work / "data" / "gsm_valid.txt").write_text((out / "lines" / "gsm.txt").read_text(encoding="utf-8"), encoding="utf-8")
    sys.path.insert(0, str(root / "preprocessing"))
    import gsm_icot  # official

    cwd = os.getcwd()
    os.chdir(work)
    try:
        gsm_icot.main("valid")
    finally:
        os.chdir(cwd)
    json_path = work / "data" / "gsm_valid.json"
    # run.py's vocabulary set-up (its main() is not importable): pad = EOS, three tokens added in this order
    tokenizer = AutoTokenizer.from_pretrained(mdir)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.add_tokens("<|start-latent|>")
    tokenizer.add_tokens("<|end-latent|>")
    tokenizer.add_tokens("<|latent|>")
    latent_id = tokenizer.convert_tokens_to_ids("<|latent|>")
    start_id = tokenizer.convert_tokens_to_ids("<|start-latent|>")
    end_id = tokenizer.convert_tokens_to_ids("<|end-latent|>")
    base = cdata.get_dataset(str(json_path), tokenizer)
    res: dict = {"ids": {"start": start_id, "end": end_id, "latent": latent_id, "eos": tokenizer.eos_token_id},
                 "tokenized": [{k: base[i][k] for k in ("question_tokenized", "steps_tokenized", "answer_tokenized")}
                               for i in range(len(base))]}
    model = AutoModelForCausalLM.from_pretrained(mdir, torch_dtype=torch.float64)
    model.resize_token_embeddings(len(tokenizer))
    model.load_state_dict(load_weights(out), strict=False)
    model.tie_weights()
    model.eval()
    coconut = Coconut(model, latent_id, start_id, end_id, tokenizer.eos_token_id)
    configs = type("C", (), dict(c_thought=COCONUT_C, max_latent_stage=COCONUT_K, pad_latent_to_max=True,
                                 uniform_prob=0.0, no_cot=False))()
    tokenizer.padding_side = "right"
    collator = cdata.MyCollator(tokenizer, latent_id=latent_id, label_pad_token_id=-100)
    stages = []
    for stage in range(COCONUT_K + 2):
        ds = cdata.get_cot_latent_dataset(stage, base, configs, start_id, latent_id, end_id, no_special_marker=False)
        feats = [{k: ds[i][k] for k in ("input_ids", "labels", "attention_mask", "position_ids")} for i in range(len(ds))]
        batch = collator([dict(f) for f in feats])
        with torch.no_grad():
            loss = coconut(**{k: v for k, v in batch.items() if k != "idx"}).loss
        stages.append({"stage": stage, "input_ids": batch["input_ids"].tolist(), "labels": batch["labels"].tolist(),
                       "attention_mask": batch["attention_mask"].tolist(),
                       "position_ids": batch["position_ids"].tolist(), "loss": float(loss)})
    res["stages"] = stages
    # greedy generation at the final stage, batch 1 (the official generate)
    qds = cdata.get_question_latent_dataset(COCONUT_K + 1, base, configs, start_id, latent_id, end_id)
    gens = []
    for i in range(len(qds)):
        ids = torch.tensor([qds[i]["input_ids"]])
        with torch.no_grad():
            seq = coconut.generate(ids, torch.ones_like(ids), max_new_tokens=COCONUT_MAX_NEW)
        gens.append(seq[0, ids.shape[1]:].tolist())
    res["generate"] = {"max_new_tokens": COCONUT_MAX_NEW, "prompts": [qds[i]["input_ids"] for i in range(len(qds))], "tokens": gens}
    return res


# ----------------------------------------------------------------------------------------- icot
def part_icot(official: Path, out: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    src = official / "Internalize_CoT_Step_by_Step" / "src"
    sys.path.insert(0, str(src))
    import data as idata  # official
    import train as itrain  # official
    from configuration_model import ImplicitModelConfig  # official
    from model import ImplicitModel  # official

    work = Path(tempfile.mkdtemp())
    mdir = hf_model_dir(out, work)
    path = work / "lines.txt"
    # multiplication lines and the GSM8k-Aug lines (one with an empty CoT) in iCoT's own format
    text = (out / "lines" / "mult.txt").read_text(encoding="utf-8") + (out / "lines" / "gsm.txt").read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    model = ImplicitModel(ImplicitModelConfig(base_model=str(mdir)))
    model.base_model.to(torch.float64)
    w = load_weights(out)
    w["transformer.wte.weight"] = w["transformer.wte.weight"][:VOCAB]
    model.base_model.load_state_dict(w, strict=False)
    model.base_model.tie_weights()
    tokenizer = model.tokenizer
    ds = idata.CoTDataset(tokenizer, str(path))
    res: dict = {"dataset": [[x.tolist() for x in ds[i]] for i in range(len(ds))], "slices": []}
    collate = idata.CoTDataCollator(tokenizer)
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds), collate_fn=collate, shuffle=False)
    lam = itrain.compute_lambda_distribution(4.0)
    n = len(ds)

    class Recorder:  # the model handed to train.evaluate: records what it computes the loss on
        def __init__(self):
            self.calls = []

        def eval(self):
            model.eval()

        def compute_loss(self, input_ids, labels, position_ids=None):
            o = model.compute_loss(input_ids=input_ids, labels=labels, position_ids=position_ids)
            self.calls.append((input_ids.tolist(), labels.tolist(), float(o.loss)))
            return o

        def generate(self, input_ids, **kw):  # the official one samples; not part of the parity
            return [input_ids[i : i + 1] for i in range(input_ids.shape[0])]

    real_multinomial = torch.multinomial
    for k, s in enumerate(ICOT_REMOVALS):
        offsets = [(k + i) % 3 if i % 2 == 0 else 0 for i in range(n)]
        torch.multinomial = lambda *a, _o=offsets, **kw: torch.tensor(_o)
        rec = Recorder()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                itrain.evaluate(loader, tokenizer, torch.device("cpu"), contextlib.nullcontext(), rec, 8,
                                float("inf") if s == "inf" else s, "left", 4.0, lam)
        finally:
            torch.multinomial = real_multinomial
        (ids, labels, loss), = rec.calls
        res["slices"].append({"removed": s, "offsets": offsets, "input_ids": ids, "labels": labels, "loss": loss})
    res["eos"] = tokenizer.eos_token_id
    return res


# ----------------------------------------------------------------------------------------- codi
class _Stop(Exception):
    pass


def _codi_patches(torch_mod, dtype=None):
    """float64 loads (or ``dtype``), the CPU in place of CUDA, and transformers' CUDA-only unmasking of padded rows."""
    import torch
    import transformers
    from transformers.modeling_attn_mask_utils import AttentionMaskConverter
    from transformers.models.gpt2 import modeling_gpt2

    dtype = dtype or torch.float64
    torch.set_default_dtype(dtype)
    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def from_pretrained(cls, *a, **kw):
        kw["torch_dtype"] = dtype
        return real_from_pretrained(cls, *a, **kw)

    transformers.AutoModelForCausalLM.from_pretrained = classmethod(from_pretrained)

    def _cpu(x):
        return "cpu" if (isinstance(x, str) and x.startswith("cuda")) or (isinstance(x, torch.device) and x.type == "cuda") else x

    real_module_to, real_tensor_to = torch.nn.Module.to, torch.Tensor.to

    def module_to(self, *a, **kw):
        a = [x for x in (_cpu(x) for x in a) if x is not torch.bfloat16 and x is not torch.float16]
        kw = {k: _cpu(v) for k, v in kw.items() if v not in (torch.bfloat16, torch.float16)}
        return real_module_to(self, *a, **kw) if (a or kw) else self

    def tensor_to(self, *a, **kw):
        return real_tensor_to(self, *[_cpu(x) for x in a], **{k: _cpu(v) for k, v in kw.items()})

    torch.nn.Module.to = module_to
    torch.Tensor.to = tensor_to
    for name in ("tensor", "zeros", "ones"):
        real = getattr(torch, name)
        setattr(torch, name, lambda *a, _r=real, **kw: _r(*a, **{k: _cpu(v) for k, v in kw.items()}))

    real_update = modeling_gpt2.GPT2Model._update_causal_mask

    def update(self, attention_mask, input_tensor, *a, **kw):
        mask = real_update(self, attention_mask, input_tensor, *a, **kw)
        if mask is not None and attention_mask is not None and self.config._attn_implementation == "sdpa":
            mask = AttentionMaskConverter._unmask_unattended(mask, torch.finfo(input_tensor.dtype).min)
        return mask

    modeling_gpt2.GPT2Model._update_causal_mask = update


def part_codi(official: Path, out: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    _codi_patches(torch)
    from safetensors.torch import save_file

    root = official / "codi"
    sys.path.insert(0, str(root))
    os.chdir(root)
    work = Path(tempfile.mkdtemp())
    mdir = hf_model_dir(out, work)
    rows = gsm_rows(out)
    import train as ctrain  # official

    captured = {}

    class Capture:  # in place of the official CustomTrainer: keep what train() built, stop before training
        def __init__(self, model, tokenizer, args, train_dataset, eval_dataset, data_collator):
            captured.update(model=model, tokenizer=tokenizer, dataset=train_dataset, collator=data_collator)
            raise _Stop

    ctrain.load_dataset = lambda name, *a, **kw: {"train": rows}
    ctrain.CustomTrainer = Capture
    common = ["--model_name_or_path", str(mdir), "--seed", "11", "--model_max_length", "512", "--lora_init", "True",
              "--use_lora", "False", "--num_latent", str(CODI_N_LATENT), "--use_prj", "True", "--prj_dim", str(N_EMBD),
              "--prj_dropout", "0.0", "--remove_eos", "True"]
    sys.argv = ["train.py", "--output_dir", str(work / "out"), "--data_name", "icot", "--distill_loss_div_std", "True",
                "--report_to", "none", *common]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            ctrain.train()
        except _Stop:
            pass
    model, ds, collator = captured["model"], captured["dataset"], captured["collator"]
    w = load_weights(out, "")
    sd = {"codi." + k: v for k, v in w.items() if k.startswith("transformer.")}
    sd["codi.lm_head.weight"] = w["transformer.wte.weight"]
    sd.update({k: v for k, v in w.items() if k.startswith("prj.")})
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    model.codi.tie_weights()
    model.print_loss = False
    items = [ds[i] for i in range(len(ds))]
    keys = ("encoder_input_ids", "decoder_input_ids", "ref_input_ids", "labels", "ref_answer_position",
            "model_answer_position", "ref_labels")
    res: dict = {"pad": model.pad_token_id, "bot": model.bot_id, "eot": model.eot_id,
                 "dataset": [{k: (it[k].tolist() if hasattr(it[k], "tolist") else it[k]) for k in keys} for it in items],
                 "kept_lines": [i for i, r in enumerate(rows) if r["answer"][0].isdigit()]}
    lens = [len(it["encoder_input_ids"]) for it in items]
    equal = [i for i in range(len(items)) if lens.count(lens[i]) > 1]
    groups = {"equal": [i for i in equal if lens[i] == lens[equal[0]]][:2] if equal else [],
              "padded": list(range(len(items)))}
    batches = []
    for name, idx in groups.items():
        if len(idx) < 2:
            continue
        batch = collator([items[i] for i in idx])
        with torch.no_grad():
            o = model(**batch)
        batches.append({"name": name, "rows": idx, "encoder_input_ids": batch["encoder_input_ids"].tolist(),
                        "student_ce": float(o["ce_loss"]), "distill": float(o["distill_loss"]),
                        "teacher_ce": float(o["ref_ce_loss"]), "loss": float(o["loss"])})
    res["batches"] = batches

    # greedy generation with the official test script (test.py evaluation) on a left-padded batch and alone
    ckpt = work / "ckpt"
    ckpt.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("codi.lm_head")},
              str(ckpt / "model.safetensors"))
    import test as ctest  # official
    import transformers

    gen_rows = [{"question": r["question"], "answer": "#### " + r["answer"]} for r in rows]
    ctest.load_dataset = lambda *a, **kw: {"test": gen_rows}
    recorded: list[list[int]] = []
    real_tok = transformers.AutoTokenizer.from_pretrained

    def tok_from_pretrained(*a, **kw):
        tk = real_tok(*a, **kw)
        real_decode = tk.decode

        def decode(ids, *da, **dkw):
            if isinstance(ids, list):
                recorded.append(list(ids))
            return real_decode(ids, *da, **dkw)

        tk.decode = decode
        return tk

    transformers.AutoTokenizer.from_pretrained = tok_from_pretrained
    gen = {}
    # (batch size 1 is not run: the official greedy step squeezes the batch dimension away and fails there)
    for bs in (len(gen_rows), 2):
        recorded.clear()
        sys.argv = ["test.py", "--output_dir", str(work / "out"), "--data_name", "gsm8k", "--batch_size", str(bs),
                    "--greedy", "True", "--inf_latent_iterations", str(CODI_N_LATENT), "--inf_num_iterations", "1",
                    "--ckpt_dir", str(ckpt), "--prj_no_ln", "False", *common]
        parser = transformers.HfArgumentParser((ctest.ModelArguments, ctest.DataArguments, ctest.TrainingArguments))
        margs, dargs, targs = parser.parse_args_into_dataclasses()
        ctest.data_args = dargs
        with contextlib.redirect_stdout(io.StringIO()):
            ctest.evaluation(margs, dargs, targs)
        gen[str(bs)] = [list(r) for r in recorded]
    res["generate"] = {"max_new_tokens": 256, "batch_all": gen[str(len(gen_rows))], "batch_2": gen["2"]}
    return res


# ----------------------------------------------------------------------------------------- main
PARTS = {"coconut": part_coconut, "icot": part_icot, "codi": part_codi}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-dir", required=True, type=Path, help="folder with the three official checkouts")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"fixture folder (default {DEFAULT_OUT})")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    ap.add_argument("--python-coconut", default=sys.executable, help="Python with the Coconut / iCoT pins")
    ap.add_argument("--python-codi", default=sys.executable, help="Python with the CODI pins")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    official, out = args.official_dir.resolve(), args.out.resolve()
    if args.part:  # a child process: one official part, its result as JSON on the last line of stdout
        res = PARTS[args.part](official, out)
        sys.stdout.write("\n" + json.dumps(res) + "\n")
        return
    for name in ("coconut", "codi", "Internalize_CoT_Step_by_Step"):
        if not (official / name).is_dir():
            sys.exit(f"--official-dir: {official / name} is missing (see --help for the layout)")
    out.mkdir(parents=True, exist_ok=True)
    make_inputs(out, args.data_dir)
    golden = {"config": {"c": COCONUT_C, "K": COCONUT_K, "codi_n_latent": CODI_N_LATENT, "vocab": VOCAB,
                         "official": {}}}
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               PYTHONWARNINGS="ignore", PYTHONBREAKPOINT="0", WANDB_MODE="disabled")
    for part, py in (("coconut", args.python_coconut), ("icot", args.python_coconut), ("codi", args.python_codi)):
        print(f"running the official {part} code with {py} ...", flush=True)
        proc = subprocess.run([py, str(Path(__file__).resolve()), "--official-dir", str(official), "--out", str(out),
                               "--part", part], capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"{part} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        golden[part] = json.loads(proc.stdout.strip().split("\n")[-1])
        repo = {"icot": "Internalize_CoT_Step_by_Step"}.get(part, part)
        head = subprocess.run(["git", "-C", str(official / repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit_file = official / repo / "COMMIT"  # for a checkout made with git archive
        commit = head.stdout.strip() if head.returncode == 0 else ""
        if not commit and commit_file.is_file():
            commit = commit_file.read_text().strip()
        golden["config"]["official"][repo] = commit or "unknown (not a git checkout)"
    with gzip.open(out / "golden.json.gz", "wt", encoding="utf-8") as f:  # gzip: a third of the size
        json.dump(golden, f, separators=(",", ":"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
