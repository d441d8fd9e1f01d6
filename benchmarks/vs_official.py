"""The project next to the OFFICIAL Coconut and CODI code on the same model, batch and questions.

    python benchmarks/vs_official.py --setup /work/official          # once: checkouts + the two environments
    python benchmarks/vs_official.py --official-dir /work/official/src \
        --python-coconut /work/official/venv-coconut/bin/python --python-codi /work/official/venv-codi/bin/python \
        [--rounds 3] [--threads 1]

The official code needs its own transformers: under the project's (5.24+) the official Coconut fails
on the cache object (transformers 5 returns a ``Cache`` where it indexes a tuple of tuples) and the
official CODI on a private method transformers removed. ``--setup DIR`` makes what it needs (it needs
git, ``python3.11`` and internet access; nothing else on the machine changes):

* ``DIR/src/coconut`` and ``DIR/src/codi``: checkouts of github.com/facebookresearch/coconut at
  27273cb and github.com/zhenyi4/codi at 4fd88d4 (the commits the parity fixtures were made with);
* ``DIR/venv-coconut``: torch 2.13.0 (CPU build), transformers 4.46.2, datasets 3.1.0 (Coconut's pins);
* ``DIR/venv-codi``: torch 2.13.0 (CPU build), transformers 4.52.4, peft 0.15.2, datasets (CODI's pins);
  both also get safetensors and tokenizers, which ``benchmarks/parity/make_golden.py`` uses.

``--setup`` prints every command before running it; ``--setup DIR --dry-run`` only prints them.
This script runs under the project's own environment and starts the official parts as subprocesses
in those environments.

Measured, all on CPU with ``--threads`` threads per process (default 1; run once with 1 and once with the
machine's cores to report both), float32, on a 4-layer GPT-2 (d = 128, the demo's size) with the
parity fixtures' GPT-2-style BPE tokenizer and GSM8k-Aug validation questions (``--data-dir``):

* training step (forward + backward + AdamW) of Coconut at its final stage (c = 2, K = 3: 6 thoughts)
  and of CODI (6 thoughts, teacher + student), batch 32, the same examples on both sides;
* answers per second of greedy generation after the thoughts, at batch 1 and batch 64, 64 questions.
  The official Coconut ``generate`` handles one question at a time and recomputes the whole prefix
  for every thought and every token (no cache), so its batch-64 figure is its batch-1 loop. Shapes, as the
  table names them: short prompts (each question's first 8 words) + 6 thoughts + 32 new tokens (Coconut),
  GSM8k-Aug validation questions as prompts + 6 thoughts + 256 (Coconut and CODI; the official CODI loop
  always decodes 256); the mean prompt length in tokens is printed. The official CODI test loop
  (``test.py``) is batched and cached; greedy on both sides at every batch size (its greedy step drops
  the batch dimension at batch 1: one documented shim, in ``official_codi``). Both sides decode the same
  number of tokens (a random model rarely stops early, and the mean is printed).
* with ``--compile``, also the project's optional compiled decode path (``latentreason eval --compile``:
  torch.compile'd fixed-shape steps on a static cache) at both batch sizes, against the same official
  figures; the first call of each shape compiles and is not timed (its seconds are printed), and the
  table counts the answers whose tokens equal the eager path's. (This random model, its weights scaled
  up for decisive predictions, amplifies float32 rounding: the static cache's attention over masked
  empty slots sums in another order, and over 256 tokens a few answers part from the eager ones at a
  near-tie — logit margins of 0.002-0.004 where it was checked — also with the same steps run uncompiled.)

Each measurement is the median over ``--repeats`` runs inside a round; the rounds alternate official
and project runs and the table reports the median over rounds, with the ratio official / project
(> 1: the project is faster). Results: ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "parity"))

N_EMBD, N_LAYER, N_HEAD, N_POS = 128, 4, 4, 1024
BATCH, N_GEN, N_THOUGHTS = 32, 64, 6
# the named shapes: prompt kind, new tokens after the 6 thoughts (every part decodes them all or stops at EOS)
SHAPES = {"short": ("short", 32), "gsm": ("gsm", 256)}
SHORT_WORDS = 8  # a short prompt: the question's first 8 words
# what runs: Coconut on both shapes; CODI on GSM8k-length prompts (its official loop decodes a fixed 256 tokens)
JOBS = [("coconut", "short"), ("coconut", "gsm"), ("codi", "gsm")]


def new_tokens(method: str, shape: str) -> int:
    return 256 if method == "codi" else SHAPES[shape][1]


def _lines(data_dir: Path) -> list[str]:
    lines = [ln for ln in (data_dir / "gsm8k_aug" / "valid.txt").read_text(encoding="utf-8").split("\n") if ln.strip()]
    return [ln for ln in lines if len(ln) < 400 and not ln.rsplit("####", 1)[1].strip().startswith("-")][:N_GEN]


def make_model(out: Path, data_dir: Path) -> None:
    """config + tokenizer (the parity fixtures') + random float32 weights with 3 rows beyond the tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    tok_dir = ROOT / "tests" / "parity" / "data" / "tokenizer"
    vocab = len(json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8")))
    cfg = GPT2Config(vocab_size=vocab, n_positions=N_POS, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    # weights well above GPT-2's 0.02 initialiser: decisive predictions, so that the official and the project
    # code (different kernels, different transformers versions) decode the same tokens and do the same work
    w = {"transformer." + k: (v.detach().clone() * (15.0 if v.dim() == 2 else 1.0))
         for k, v in model.transformer.named_parameters()}
    w["transformer.wte.weight"] = torch.cat([w["transformer.wte.weight"], 0.3 * torch.randn(3, N_EMBD)])
    d = N_EMBD
    w.update({"prj.1.weight": 0.3 * torch.randn(d, d), "prj.1.bias": torch.zeros(d), "prj.3.weight": 0.3 * torch.randn(d, d),
              "prj.3.bias": torch.zeros(d), "prj.ln.weight": torch.ones(d), "prj.ln.bias": torch.zeros(d)})
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json_string())
    save_file({k: v.contiguous() for k, v in w.items()}, str(out / "weights.safetensors"))
    (out / "lines").mkdir(exist_ok=True)
    (out / "lines" / "gsm.txt").write_text("\n".join(_lines(data_dir)) + "\n", encoding="utf-8")
    (out / "tokenizer").mkdir(exist_ok=True)
    for f in tok_dir.iterdir():
        (out / "tokenizer" / f.name).write_bytes(f.read_bytes())


def make_shapes(work: Path, data_dir: Path) -> dict[str, Path]:
    """One work folder per named shape (the same model; ``lines/gsm.txt`` holds that shape's prompts)."""
    import shutil

    dirs = {}
    for name, (prompts, _) in SHAPES.items():
        d = work / name
        if dirs:
            shutil.copytree(next(iter(dirs.values())), d)
        else:
            make_model(d, data_dir)
        lines = _lines(data_dir)
        if prompts == "short":
            lines = [" ".join(ln.split("||", 1)[0].split()[:SHORT_WORDS]) + "||" + ln.split("||", 1)[1] for ln in lines]
        (d / "lines" / "gsm.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        dirs[name] = d
    return dirs


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ----------------------------------------------------------------------------------------- official parts
def official_coconut(official: Path, work: Path, repeats: int, threads: int = 1, n_new: int = 32,
                     train: bool = True) -> dict:
    import make_golden as mg
    import torch

    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(official / "coconut"))
    import dataset as cdata  # official
    from coconut import Coconut  # official

    mdir = mg.hf_model_dir(work, Path(tempfile.mkdtemp()))
    rows = [{"question": r["question"], "steps": r["cot"].split(" ") if r["cot"] else [""], "answer": r["answer"]}
            for r in mg.gsm_rows(work)]  # preprocessing/gsm_icot.py's JSON layout
    jpath = Path(tempfile.mkdtemp()) / "gsm.json"
    jpath.write_text(json.dumps(rows))
    tok = AutoTokenizer.from_pretrained(mdir)
    tok.pad_token = tok.eos_token
    for t in ("<|start-latent|>", "<|end-latent|>", "<|latent|>"):
        tok.add_tokens(t)
    latent, start, end = (tok.convert_tokens_to_ids(t) for t in ("<|latent|>", "<|start-latent|>", "<|end-latent|>"))
    model = AutoModelForCausalLM.from_pretrained(mdir, torch_dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    model.load_state_dict(mg.load_weights(work), strict=False)
    model.tie_weights()
    coconut = Coconut(model, latent, start, end, tok.eos_token_id)
    configs = type("C", (), dict(c_thought=2, max_latent_stage=3, pad_latent_to_max=True, uniform_prob=0.0, no_cot=False))()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        base = cdata.get_dataset(str(jpath), tok)
        train = cdata.get_cot_latent_dataset(4, base, configs, start, latent, end)
        qds = cdata.get_question_latent_dataset(4, base, configs, start, latent, end)
    tok.padding_side = "right"
    collator = cdata.MyCollator(tok, latent_id=latent, label_pad_token_id=-100)
    feats = [{k: train[i][k] for k in ("input_ids", "labels", "attention_mask", "position_ids")} for i in range(BATCH)]
    batch = collator([dict(f) for f in feats])
    batch = {k: v for k, v in batch.items() if k != "idx"}
    opt = torch.optim.AdamW(coconut.parameters(), lr=1e-4, weight_decay=0.01)
    coconut.train()

    def step():
        loss = coconut(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    t_train = _median_time(step, repeats) if train else float("nan")
    coconut.eval()
    n_tok = []

    def gen():
        n_tok.clear()
        with torch.no_grad():
            for i in range(len(qds)):  # the official evaluation: batch 1
                ids = torch.tensor([qds[i]["input_ids"]])
                seq = coconut.generate(ids, torch.ones_like(ids), max_new_tokens=n_new)
                n_tok.append(seq.shape[1] - ids.shape[1])

    t_gen = _median_time(gen, max(1, repeats // 3))
    return {"train_step_s": t_train, "gen_b1_s": t_gen, "gen_b64_s": t_gen, "n_questions": len(qds),
            "tokens_b1": statistics.mean(n_tok), "tokens_b64": statistics.mean(n_tok)}


def official_codi(official: Path, work: Path, repeats: int, threads: int = 1, n_new: int = 256,
                  train: bool = True) -> dict:
    import make_golden as mg
    import torch

    torch.set_num_threads(threads)
    mg._codi_patches(torch, torch.float32)
    import transformers

    sys.path.insert(0, str(official / "codi"))
    os.chdir(official / "codi")
    mdir = mg.hf_model_dir(work, Path(tempfile.mkdtemp()))
    rows = mg.gsm_rows(work)
    import train as ctrain  # official

    captured: dict = {}

    class Capture:
        def __init__(self, model, tokenizer, args, train_dataset, eval_dataset, data_collator):
            captured.update(model=model, dataset=train_dataset, collator=data_collator)
            raise mg._Stop

    ctrain.load_dataset = lambda *a, **kw: {"train": rows}
    ctrain.CustomTrainer = Capture
    common = ["--model_name_or_path", str(mdir), "--seed", "11", "--model_max_length", "512", "--lora_init", "True",
              "--use_lora", "False", "--num_latent", "6", "--use_prj", "True", "--prj_dim", str(N_EMBD),
              "--prj_dropout", "0.0", "--remove_eos", "True"]
    sys.argv = ["train.py", "--output_dir", tempfile.mkdtemp(), "--data_name", "icot", "--distill_loss_div_std", "True",
                "--report_to", "none", *common]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            ctrain.train()
        except mg._Stop:
            pass
    model, ds, collator = captured["model"], captured["dataset"], captured["collator"]
    w = mg.load_weights(work, "")
    sd = {"codi." + k: v for k, v in w.items() if k.startswith("transformer.")}
    sd["codi.lm_head.weight"] = w["transformer.wte.weight"]
    sd.update({k: v for k, v in w.items() if k.startswith("prj.")})
    model.load_state_dict(sd, strict=False)
    model.codi.tie_weights()
    model.print_loss = False
    batch = collator([ds[i] for i in range(BATCH)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)

    def step():
        out = model(**batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()

    t_train = _median_time(step, repeats) if train else float("nan")

    from safetensors.torch import save_file

    ckpt = Path(tempfile.mkdtemp())
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("codi.lm_head")},
              str(ckpt / "model.safetensors"))
    import test as ctest  # official
    from src.model import CODI  # official

    ctest.load_dataset = lambda *a, **kw: {"test": [{"question": r["question"], "answer": "#### " + r["answer"]} for r in rows]}
    marks: dict = {}
    real_eval = CODI.eval

    def eval_(self):  # the last eval() call of test.evaluation() comes right before its generation loop
        marks["t0"] = time.perf_counter()
        return real_eval(self)

    CODI.eval = eval_
    # The one shim: test.py's greedy branch takes ``torch.argmax(logits, dim=-1).squeeze(-1)``, which at batch 1
    # squeezes the batch dimension away (a 0-d tensor it then indexes by row, and fails). test.py gets a torch
    # whose argmax keeps the reduced dimension, which the squeeze then removes: the same tokens at every batch size.
    class _KeepdimArgmax:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def argmax(x, dim=None, keepdim=False):
            return torch.argmax(x, dim=dim, keepdim=True) if dim == -1 else torch.argmax(x, dim=dim, keepdim=keepdim)

    ctest.torch = _KeepdimArgmax()
    res = {"train_step_s": t_train, "n_questions": len(rows)}
    for bs, key in ((len(rows), "gen_b64_s"), (1, "gen_b1_s")):
        sys.argv = ["test.py", "--output_dir", tempfile.mkdtemp(), "--data_name", "gsm8k", "--batch_size", str(bs),
                    "--greedy", "True", "--inf_latent_iterations", str(N_THOUGHTS), "--inf_num_iterations", "1",
                    "--ckpt_dir", str(ckpt), *common]
        parser = transformers.HfArgumentParser((ctest.ModelArguments, ctest.DataArguments, ctest.TrainingArguments))
        margs, dargs, targs = parser.parse_args_into_dataclasses()
        ctest.data_args = dargs
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            ctest.evaluation(margs, dargs, targs)
        res[key] = time.perf_counter() - marks["t0"]
        lens = [float(x) for x in out.getvalue().split("average length of COT: ")[-1].split()[:1]]
        res["tokens_" + key.split("_")[1]] = lens[0] if lens else float("nan")
    return res


# ----------------------------------------------------------------------------------------- project part
def project_part(work: Path, repeats: int, threads: int = 1, n_new: dict | None = None,
                 train: bool = True, compiled: bool = False) -> dict:
    import torch
    from safetensors.torch import load_file

    from latentreason.data.loaders import load_gsm8k_aug
    from latentreason.decoding.compiled import compile_seconds
    from latentreason.decoding.latent import latent_generate
    from latentreason.methods.base import method_config
    from latentreason.methods.coconut import Coconut
    from latentreason.methods.codi import CODI
    from latentreason.models.backbone import ModelConfig, load_backbone
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()
    mdir = Path(tempfile.mkdtemp()) / "tiny-gpt2"
    cfg = GPT2Config.from_json_file(str(work / "config.json"))
    w = load_file(str(work / "weights.safetensors"))
    base = {k: v for k, v in w.items() if k.startswith("transformer.")}
    base["transformer.wte.weight"] = base["transformer.wte.weight"][: cfg.vocab_size]
    m0 = GPT2LMHeadModel(cfg)
    m0.load_state_dict(base, strict=False)
    m0.save_pretrained(mdir)
    for f in (work / "tokenizer").iterdir():
        (mdir / f.name).write_bytes(f.read_bytes())
    exs = load_gsm8k_aug(work / "lines" / "gsm.txt")

    def build(cls, preset):
        mc = method_config(cls, {"preset": preset})
        bb = load_backbone(ModelConfig(name=str(mdir)), layout=mc.special_tokens)
        full = {k: v for k, v in w.items() if k.startswith("transformer.")}
        bb.model.load_state_dict(full, strict=False)
        bb.model.tie_weights()
        m = cls(bb, mc)
        if getattr(m, "projection", None) is not None:
            m.projection.load_state_dict({"fc1.weight": w["prj.1.weight"], "fc1.bias": w["prj.1.bias"],
                                          "fc2.weight": w["prj.3.weight"], "fc2.bias": w["prj.3.bias"],
                                          "norm.weight": w["prj.ln.weight"], "norm.bias": w["prj.ln.bias"]})
        return m

    res = {}
    n_new = n_new or {"coconut": 32, "codi": 256}
    for name, cls, preset in (("coconut", Coconut, "coconut_paper"), ("codi", CODI, "codi_paper_official_padding")):
        if name not in n_new:
            continue
        m = build(cls, preset)
        if name == "coconut":
            m.stage = m._batch_stage = m.final_stage
        toks = m.prepare(exs)
        batch = m.collate([m.features(t) for t in toks[:BATCH]])
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        m.train()

        def step():
            m(batch)["loss"].backward()
            opt.step()
            opt.zero_grad()

        r = {"train_step_s": _median_time(step, repeats) if train else float("nan")}
        m.eval()
        n = m.n_latent(m.stage) if name == "coconut" else m.config.n_latent

        tokens: list[list[int]] = []

        def gen(bs, compiled=False):
            tokens.clear()
            for i in range(0, len(exs), bs):
                prompts = m.latent_prompts(exs[i : i + bs])
                out = latent_generate(m.model, prompts, n_latent=n, thought_fn=m.thought, eot_id=m.ids.eot,
                                      eos_id=m.ids.eos, pad_id=m.ids.pad, max_new_tokens=n_new[name],
                                      count_padding=getattr(m.config, "official_padding", False), compiled=compiled)
                tokens.extend(out.tokens)

        with torch.no_grad():
            for b, bs in (("b1", 1), ("b64", N_GEN)):
                r[f"gen_{b}_s"] = _median_time(lambda: gen(bs), max(1, repeats // 3) if bs == 1 else repeats)
                r[f"tokens_{b}"] = statistics.mean(len(t) for t in tokens)
                if compiled:  # the optional compiled path (--compile): its first call compiles (timed apart)
                    eager = [list(t) for t in tokens]
                    r[f"gen_{b}_compiled_s"] = _median_time(lambda: gen(bs, True),
                                                            max(1, repeats // 3) if bs == 1 else repeats)
                    r[f"compiled_{b}_same"] = sum(list(a) == c for a, c in zip(tokens, eager))
            if compiled:
                r["compile_s"] = compile_seconds(m.model)
        r["n_questions"] = len(exs)
        r["prompt_tokens"] = statistics.mean(len(p) for p in m.latent_prompts(exs))
        res[name] = r
    return res


# ----------------------------------------------------------------------------------------- set-up
OFFICIAL = {"coconut": ("https://github.com/facebookresearch/coconut", "27273cb"),
            "codi": ("https://github.com/zhenyi4/codi", "4fd88d4")}
ENVS = {"coconut": ["transformers==4.46.2", "datasets==3.1.0", "safetensors", "tokenizers"],
        "codi": ["transformers==4.52.4", "peft==0.15.2", "datasets", "safetensors", "tokenizers"]}
TORCH = ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"]


def setup_commands(root: Path, repos: dict[str, str] | None = None, torch_from: Path | None = None) -> list[list[str]]:
    """The commands that make the official checkouts and their two Python environments under ``root``.

    ``repos`` replaces a repository's URL (a local clone or mirror holding the pinned commit); ``torch_from`` is
    the site-packages folder of an environment whose torch the two environments share (a ``.pth`` file appended
    to their ``sys.path``, so their own transformers comes first) instead of installing torch from its index.
    """
    cmds: list[list[str]] = []
    for name, (url, commit) in OFFICIAL.items():
        dest = root / "src" / name
        url = (repos or {}).get(name, url)
        # the Python files only: the data files are not needed (and a mirror may leave its largest ones out)
        cmds += [["git", "clone", "--quiet", "--no-checkout", url, str(dest)],
                 ["git", "-C", str(dest), "checkout", "--quiet", commit, "--", "*.py"]]
    for name, pins in ENVS.items():
        venv = root / f"venv-{name}"
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        cmds.append(["python3.11", "-m", "venv", str(venv)])
        if torch_from is None:
            cmds.append([*pip, *TORCH])
        else:
            pth = venv / "lib" / "python3.11" / "site-packages" / "zz_shared_torch.pth"
            cmds.append([sys.executable, "-c", f"open({str(pth)!r}, 'w').write({str(torch_from) + chr(10)!r})"])
        cmds.append([*pip, *pins])
    return cmds


def link_torch(dest: Path) -> Path:
    """Links this interpreter's torch and the distributions it needs (its dependency closure, packages and
    metadata) into ``dest``, and nothing else: an environment that appends ``dest`` to its path gets this torch
    without seeing this environment's transformers, huggingface_hub or kernels (which an old transformers would
    import and fail on)."""
    import importlib.metadata as md
    import re

    dest.mkdir(parents=True, exist_ok=True)
    todo, seen = ["torch"], set()
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        todo += [r for r in (dist.requires or []) if "extra ==" not in r]
        tops = {f.parts[0] for f in dist.files or [] if f.parts and not f.parts[0].startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (dest / top).exists() and top != "__pycache__":
                (dest / top).symlink_to(src)
    return dest


def setup(root: Path, dry_run: bool, repos: dict[str, str] | None = None, share_torch: bool = False) -> None:
    torch_from = None
    if share_torch:
        torch_from = root.resolve() / "shared-torch"
        print(f"+ link this interpreter's torch and its dependencies into {torch_from}", flush=True)
        if not dry_run:
            link_torch(torch_from)
    for cmd in setup_commands(root.resolve(), repos, torch_from):
        print("+ " + " ".join(cmd), flush=True)
        if not dry_run:
            subprocess.run(cmd, check=True)
    if not dry_run:
        print(f"done: --official-dir {root / 'src'} --python-coconut {root / 'venv-coconut/bin/python'} "
              f"--python-codi {root / 'venv-codi/bin/python'}")


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-dir", type=Path, help="checkouts of facebookresearch/coconut and zhenyi4/codi")
    ap.add_argument("--setup", type=Path, metavar="DIR", help="make the checkouts and the two environments in DIR")
    ap.add_argument("--dry-run", action="store_true", help="with --setup: print the commands only")
    ap.add_argument("--coconut-repo", help="with --setup: clone Coconut from here (a local clone or mirror with the "
                    "pinned commit) instead of GitHub")
    ap.add_argument("--codi-repo", help="with --setup: clone CODI from here instead of GitHub")
    ap.add_argument("--share-torch", action="store_true", help="with --setup: the two environments use this "
                    "interpreter's torch (no download from the PyTorch index; their own transformers shadows this one's)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of every process (official and project)")
    ap.add_argument("--python-coconut", default=sys.executable)
    ap.add_argument("--python-codi", default=sys.executable)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=["coconut", "codi"], help="time one method's rows only")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="time one prompt shape's rows only (short: Coconut only)")
    ap.add_argument("--compile", action="store_true", help="also time the project's optional compiled decode path "
                    "(the CLI's --compile: torch.compile'd fixed-shape steps on a static cache; compile time apart)")
    ap.add_argument("--part", choices=["coconut", "codi"], help=argparse.SUPPRESS)
    ap.add_argument("--project", action="store_true", help=argparse.SUPPRESS)  # with --part: the project's side
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--new-tokens", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--no-train", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.setup:
        repos = {k: v for k, v in (("coconut", args.coconut_repo), ("codi", args.codi_repo)) if v}
        setup(args.setup, args.dry_run, repos, args.share_torch)
        return
    if args.official_dir is None:
        ap.error("--official-dir is required (make it with --setup DIR)")
    if args.part and args.project:
        res = project_part(args.work, args.repeats, args.threads, {args.part: args.new_tokens}, not args.no_train,
                           args.compile)[args.part]
        sys.stdout.write("\n" + json.dumps(res) + "\n")
        return
    if args.part:
        fn = official_coconut if args.part == "coconut" else official_codi
        res = fn(args.official_dir.resolve(), args.work, args.repeats, args.threads, args.new_tokens, not args.no_train)
        sys.stdout.write("\n" + json.dumps(res) + "\n")
        return
    for name in ("coconut", "codi"):
        if not (args.official_dir / name).is_dir():
            sys.exit(f"--official-dir: {args.official_dir / name} is missing (a checkout of the official repository)")
    works = make_shapes(Path(tempfile.mkdtemp()), args.data_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               PYTHONWARNINGS="ignore", PYTHONBREAKPOINT="0", PYTHONPATH=str(HERE / "parity"),
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    project_env = dict(env, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env["PYTHONPATH"]]))
    jobs = [(m, sh) for m, sh in JOBS if args.only in (None, m) and args.shape in (None, sh)]
    rounds: dict[str, list[dict]] = {f"{side}_{m}_{sh}": [] for m, sh in jobs for side in ("official", "project")}
    for r in range(args.rounds):
        for method, shape in jobs:
            n_new, train = new_tokens(method, shape), shape == "gsm"
            # each side in a fresh process every round, started alike (OMP_NUM_THREADS=--threads from the start):
            # a process's speed varies from one process to the next by more than some of the margins measured
            # here, so both sides sample that variation in every round
            for side, py in (("official", args.python_coconut if method == "coconut" else args.python_codi),
                             ("project", sys.executable)):
                print(f"round {r + 1}: {side} {method}, {shape} prompts + {N_THOUGHTS} thoughts + {n_new} ...",
                      flush=True)
                cmd = [py, str(Path(__file__).resolve()), "--official-dir", str(args.official_dir), "--part", method,
                       "--work", str(works[shape]), "--repeats", str(args.repeats), "--threads", str(args.threads),
                       "--new-tokens", str(n_new)] + ([] if train else ["--no-train"])
                if side == "project":
                    cmd += ["--project"] + (["--compile"] if args.compile else [])
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      env=env if side == "official" else project_env)
                if proc.returncode:
                    sys.exit(f"{side} {method} failed:\n{proc.stderr[-5000:]}")
                rounds[f"{side}_{method}_{shape}"].append(json.loads(proc.stdout.strip().split("\n")[-1]))

    def med(rows, key):
        return statistics.median(x[key] for x in rows)

    table = []
    for method, shape in jobs:
        off, proj = rounds[f"official_{method}_{shape}"], rounds[f"project_{method}_{shape}"]
        n = proj[0]["n_questions"]
        named = f"{shape} prompts ({proj[0]['prompt_tokens']:.0f} tokens) + {N_THOUGHTS} thoughts + {new_tokens(method, shape)}"
        measures = [("training step, batch 32 (ms)", "train_step_s", "ms")] if shape == "gsm" else []
        measures += [(f"generation, batch 1, {named} (answers/s)", "gen_b1_s", "aps"),
                     (f"generation, batch 64, {named} (answers/s)", "gen_b64_s", "aps")]
        if args.compile:
            measures += [(f"generation, batch 1, compiled, {named} (answers/s)", "gen_b1_compiled_s", "aps"),
                         (f"generation, batch 64, compiled, {named} (answers/s)", "gen_b64_compiled_s", "aps")]
        for what, key, unit in measures:
            o, p = med(off, key.replace("_compiled", "")), med(proj, key)
            if unit == "ms":
                table.append((method, what, f"{1000 * o:.1f}", f"{1000 * p:.1f}", o / p))
            else:
                table.append((method, what, f"{n / o:.2f}", f"{n / p:.2f}", o / p))
        for b in ("b1", "b64"):
            table.append((method, f"mean new tokens per answer, {b.replace('b', 'batch ')}, {shape} prompts",
                          f"{med(off, 'tokens_' + b):.1f}", f"{med(proj, 'tokens_' + b):.1f}", None))
        if args.compile:
            same = "; ".join(f"batch {b[1:]} {min(x[f'compiled_{b}_same'] for x in proj)}/{n}" for b in ("b1", "b64"))
            table.append((method, f"compiled path: answers token-identical to the eager path (fewest over rounds) "
                          f"/ compile seconds (first round), {shape} prompts", "",
                          f"{same} / {proj[0]['compile_s']:.0f} s", None))
    print(f"\n{args.rounds} rounds x {args.repeats} repeats; GPT-2 {N_LAYER} layers d={N_EMBD}, CPU {args.threads} "
          f"thread(s), float32; prompts: {N_GEN} GSM8k-Aug validation questions (short: their first {SHORT_WORDS} words); "
          f"greedy on both sides")
    print("| method | measure | official | project | official time / project time |")
    print("|---|---|---|---|---|")
    for name, what, o, p, ratio in table:
        print(f"| {name} | {what} | {o} | {p} | {'' if ratio is None else f'{ratio:.2f}x'} |")
    print(json.dumps(rounds))


if __name__ == "__main__":
    main()
