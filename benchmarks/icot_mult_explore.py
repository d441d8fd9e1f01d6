"""A bare loop for exploring iCoT-SI on 4x4 multiplication quickly (docs/results.md, "What was tried"): a tiny
GPT-2 from scratch on digit tokens, CoT-SFT for --cot_steps, then one CoT token removed from the left every --spt
steps (Removal Smoothing λ, AdamW re-created at every removal), then --post_steps with no CoT.

Accuracy here is teacher-forced exact match of everything after the first EOS (equal to greedy exact match of the
whole output when the output is the reference), on the first 500 shipped test questions: acc_now at the current
removal amount, acc_full with the whole CoT removed. The CoT model is cached in --cache_dir, so a second variant
starts at the first removal. The project's own run of the same recipe is `latentreason repro icot-mult`.

    python benchmarks/icot_mult_explore.py --lr 1e-3 --cot_steps 2000 --spt 120 --post_steps 1500 --keep_position

--aux W adds an auxiliary running-sum loss (after Bai et al. 2025; docs/results.md, "An auxiliary running-sum loss").
--grokfast LAMBDA amplifies the slow gradients (Grokfast-EMA; docs/results.md, "Grokfast").
"""
import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from latentreason.data.multiplication import generate_multiplication
from latentreason.data.loaders import load_file

p = argparse.ArgumentParser()
p.add_argument("--layers", type=int, default=4); p.add_argument("--d", type=int, default=128); p.add_argument("--heads", type=int, default=4)
p.add_argument("--bs", type=int, default=32); p.add_argument("--lr", type=float, default=5e-4)
p.add_argument("--cot_steps", type=int, default=3000); p.add_argument("--spt", type=int, default=100)  # steps per removed token
p.add_argument("--post_steps", type=int, default=2000); p.add_argument("--keep_position", action="store_true")
p.add_argument("--lam", type=float, default=4.0); p.add_argument("--reset", type=int, default=1)
p.add_argument("--ntrain", type=int, default=100000); p.add_argument("--seed", type=int, default=0)
p.add_argument("--eval_every", type=int, default=500); p.add_argument("--threads", type=int, default=1)
p.add_argument("--mode", default="icot")  # icot | nocot
p.add_argument("--icot_lr", type=float, default=None, help="learning rate from the first removal on")
p.add_argument("--gate", type=float, default=None,
               help="adaptive schedule: remove the next token once teacher-forced exact match on --nvalid generated "
                    "validation questions (disjoint from train and test) reaches this, checked every --eval_every "
                    "steps; --spt is then the most steps a token may take")
p.add_argument("--nvalid", type=int, default=500)
p.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward passes (weights and AdamW stay float32)")
p.add_argument("--attn", default="sdpa", help="attention implementation: sdpa | eager (eager is faster under bf16 on CPU)")
p.add_argument("--dropout", type=float, default=0.1)
p.add_argument("--resume_gated", default=None,
               help="a gated run's state (written to --cache_dir at every removal) to continue from: weights, k, step")
p.add_argument("--aux", type=float, default=0.0,
               help="weight of an auxiliary running-sum loss (after Bai et al. 2025): a linear probe on the states after "
                    "block --aux_layer, at each position that predicts an answer digit c_k, regresses the running sum "
                    "c^_k = sum_{i+j=k} a_i b_j + carry_{k-1} (divided by 100; mean squared error); 0: off")
p.add_argument("--aux_layer", type=int, default=None, help="block whose output the probe reads (default: layers // 2)")
p.add_argument("--grokfast", type=float, default=0.0,
               help="Grokfast-EMA (Lee et al. 2024, arXiv 2405.20233): add LAMBDA x an EMA of past gradients to each "
                    "gradient (the slow component); the EMA restarts with the optimiser at every removal")
p.add_argument("--grokfast_alpha", type=float, default=0.98, help="the EMA's decay for --grokfast")
p.add_argument("--cot_from", default=None, help="start from this CoT model (a state dict this script cached) instead of "
               "the one its own settings name (e.g. a run with --aux from the CoT model of a run without)")
p.add_argument("--data_dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
p.add_argument("--cache_dir", default="runs/icot_explore")
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed); random.seed(a.seed)
V = {t: i for i, t in enumerate(list("0123456789") + ["*", "+", "(", ")", "####", "<eos>"])}
EOS = V["<eos>"]
def enc(s): return [V[t] for t in s.split()]
test = load_file(Path(a.data_dir) / "icot_multiplication/icot_si_2024/4_by_4_mult/test_bigbench.txt", "icot_mult")
train = generate_multiplication(4, 4, a.ntrain, seed=0, exclude={e.question for e in test})
valid = generate_multiplication(4, 4, a.nvalid, seed=12345, exclude={e.question for e in test} | {e.question for e in train})
def running_sums(q):
    """c^_k for k = 0..7 from the question's digits (least significant first: a0..a3 * b0..b3)."""
    x, y = q[:4], q[5:9]
    out, carry = [], 0
    for k in range(8):
        c = sum(x[i] * y[k - i] for i in range(4) if 0 <= k - i < 4) + carry
        out.append(c); carry = c // 10
    return out
def tok(e):
    q = enc(e.question); c = enc(" + ".join(e.steps)); ans = enc("#### " + e.answer)
    return q, c, ans
TR = [tok(e) for e in train]; TE = [tok(e) for e in test]; VA = [tok(e) for e in valid]
for q_, _, ans_ in TR[:50]:  # the running sums' digits are the answer's (both least significant first)
    assert [x % 10 for x in running_sums(q_)] == ans_[1:], (q_, ans_)
LC = len(TR[0][1]); print("cot len", LC, "q", len(TR[0][0]), "ans", len(TR[0][2]), flush=True)
cfg = GPT2Config(vocab_size=len(V), n_positions=128, n_embd=a.d, n_layer=a.layers, n_head=a.heads, bos_token_id=EOS, eos_token_id=EOS,
                 resid_pdrop=a.dropout, embd_pdrop=a.dropout, attn_pdrop=a.dropout)
cfg._attn_implementation = a.attn
model = GPT2LMHeadModel(cfg)
amp = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16)
print("params", sum(p.numel() for p in model.parameters()), flush=True)
lam_p = torch.tensor([(1 - math.exp(-a.lam)) * math.exp(-a.lam * o) for o in range(100)]); lam_p[-1] += 1 - lam_p.sum()
aux_layer = a.aux_layer if a.aux_layer is not None else a.layers // 2
probe = torch.nn.Linear(a.d, 1) if a.aux else None
def build(batch, removed, offsets):
    ids, labs, pos, apos, atgt = [], [], [], [], []
    for (q, c, ans), o in zip(batch, offsets):
        r = min(LC, removed + o) if removed != math.inf else LC
        if a.mode == "nocot": r = LC
        seq = q + [EOS] + c[r:] + [EOS] + ans + [EOS]
        lab = [-100] * (len(q) + 1) + seq[len(q) + 1:]
        ps = list(range(len(seq)))
        if a.keep_position:  # official: shift from the first EOS on
            ps = ps[:len(q)] + [x + r for x in ps[len(q):]]
        ids.append(seq); labs.append(lab); pos.append(ps)
        first = len(seq) - len(ans) - 1  # the position of "####": it predicts c_0, c_k's predecessor predicts c_k
        apos.append([first + k for k in range(8)]); atgt.append(running_sums(q))
    L = max(map(len, ids))
    pad = lambda xs, v: [x + [v] * (L - len(x)) for x in xs]
    return (torch.tensor(pad(ids, EOS)), torch.tensor(pad(labs, -100)),
            torch.tensor([p + list(range(p[-1] + 1, p[-1] + 1 + L - len(p))) for p in pos]),
            torch.tensor(apos), torch.tensor(atgt, dtype=torch.float32) / 100)
slow = {}  # --grokfast: parameter -> EMA of its gradients
def amplify_slow_gradients():
    for q in model.parameters():
        if q.grad is None: continue
        e = slow.get(q)
        if e is None: slow[q] = e = q.grad.detach().clone()
        else: e.mul_(a.grokfast_alpha).add_(q.grad, alpha=1 - a.grokfast_alpha)
        q.grad.add_(e, alpha=a.grokfast)
def opt():
    slow.clear()
    return torch.optim.AdamW(list(model.parameters()) + (list(probe.parameters()) if probe else []), lr=(a.icot_lr or a.lr) if step >= a.cot_steps else a.lr, weight_decay=0.01)
@torch.no_grad()
def evaluate(removed, n=1000, data=None):
    data = TE if data is None else data
    model.eval(); ok = 0
    for i in range(0, n, 250):
        b = data[i:i + 250]
        ids, labs, pos, _, _ = build(b, removed, [0] * len(b))
        with amp():
            logits = model(input_ids=ids, position_ids=pos).logits
        pred = logits[:, :-1].argmax(-1); tgt = labs[:, 1:]
        m = tgt != -100
        ok += ((pred == tgt) | ~m).all(1).sum().item()
    model.train(); return ok / n
step = 0; o = opt(); t0 = time.time(); removed = 0; last_empty = False
os.makedirs(a.cache_dir, exist_ok=True)
ck = f"{a.cache_dir}/cot_L{a.layers}_d{a.d}_s{a.seed}_n{a.cot_steps}_lr{a.lr}{'_bf16' if a.bf16 else ''}{'' if a.dropout == 0.1 else f'_do{a.dropout}'}{f'_aux{a.aux}' if a.aux else ''}.pt"
if a.mode == "icot" and os.path.exists(a.cot_from or ck):
    model.load_state_dict(torch.load(a.cot_from or ck, weights_only=True)); step = a.cot_steps
    print("loaded", a.cot_from or ck, flush=True)
total = a.cot_steps + a.spt * (LC + 2) + a.post_steps if a.mode == "icot" else a.cot_steps
if a.mode == "nocot": a.lam = 1e9
stage_start = a.cot_steps; gate_removed = 1  # the gated schedule's state: when the current token's stage began
valid_seen = (None, None, None)  # (step, removed, validation accuracy) of the newest periodic report
if a.gate is not None:
    total = 10**9
if a.resume_gated:
    st = torch.load(a.resume_gated, weights_only=True)
    model.load_state_dict(st["model"]); gate_removed = st["removed"]; step = stage_start = st["step"]
    print("resumed", a.resume_gated, "at k =", gate_removed, "step", step, flush=True)
while step < total:
    if a.mode == "icot" and a.gate is not None and step >= a.cot_steps:
        steps_in = step - stage_start
        checked = steps_in > 0 and steps_in % a.eval_every == 0
        if checked or steps_in >= a.spt:
            # the periodic report just above measured these weights at this amount: reuse it
            v = valid_seen[2] if valid_seen[:2] == (step, gate_removed) else evaluate(gate_removed, a.nvalid, VA)
            if steps_in >= a.spt or v >= a.gate:
                print(json.dumps(dict(removal_done=gate_removed, steps=steps_in, at_step=step, valid=v)), flush=True)
                gate_removed += 1; stage_start = step
                torch.save(dict(model=model.state_dict(), removed=gate_removed, step=step), f"{ck[:-3]}_gated_latest.pt")
        if gate_removed >= LC + 1:
            break
        new = gate_removed
        if new > removed and a.reset and not last_empty: o = opt()
        removed = new
    elif a.mode == "icot":
        new = 0 if step < a.cot_steps else (step - a.cot_steps) // a.spt + 1
        if new >= LC + 1: new = math.inf
        if new > removed and a.reset and not last_empty: o = opt()
        removed = new
    batch = random.sample(TR, a.bs)
    offs = torch.multinomial(lam_p, a.bs, replacement=True).tolist() if (a.mode == "icot" and step >= a.cot_steps) else [0] * a.bs
    ids, labs, pos, apos, atgt = build(batch, removed, offs)
    last_empty = all(removed == math.inf or removed + x >= LC for x in offs)
    with amp():
        out = model(input_ids=ids, position_ids=pos, output_hidden_states=probe is not None)
    loss = F.cross_entropy(out.logits[:, :-1].float().reshape(-1, len(V)), labs[:, 1:].reshape(-1))
    if probe is not None:
        hs = out.hidden_states[aux_layer].float()
        pred = probe(hs.gather(1, apos[..., None].expand(-1, -1, hs.shape[-1]))).squeeze(-1)
        aux_loss = F.mse_loss(pred, atgt)
        loss = loss + a.aux * aux_loss
    loss.backward()
    if a.grokfast: amplify_slow_gradients()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); o.step(); o.zero_grad(set_to_none=True)
    step += 1
    if a.mode == "icot" and step == a.cot_steps and not os.path.exists(ck): torch.save(model.state_dict(), ck)
    if step % a.eval_every == 0 or step == total:
        print(json.dumps(dict(step=step, t=round(time.time() - t0), removed=str(removed), loss=round(loss.item(), 4), **({"aux": round(aux_loss.item(), 4)} if probe is not None else {}), acc_now=evaluate(removed, 500), valid_now=(valid_seen := (step, removed, evaluate(removed, a.nvalid, VA)))[2], acc_full=evaluate(math.inf, 500))), flush=True)
print("final", evaluate(math.inf), "time", time.time() - t0, flush=True)
