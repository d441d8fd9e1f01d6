"""One self-contained HTML report of a benchmark / demo run directory.

``write_report(run_dir)`` reads ``RUN_DIR/results.json``, every method's ``metrics.jsonl``,
``run_config.json`` and ``predictions.json``, the soft-thinking study (``soft_thinking/``),
thought-probing files (``probe-*.json``), System-1.5 grid files and any other figures, and writes
``RUN_DIR/report.html``: inline CSS, plots embedded as base64 PNG (drawn by
:mod:`latentreason.reporting.plots`), no script and no network reference, so the file can be
mailed or archived on its own. All text from the run is HTML-escaped (the HTML pieces: tables,
images, generic rendering, are in :mod:`latentreason.reporting.html`).

Sections (each only when its data is present):

* comparison table — accuracy, reasoning tokens, latent steps, generated tokens, forward passes,
  ms/question, batch size, speed-up vs CoT, training time and steps — with an accuracy-vs-latency
  scatter and bars of the per-question cost;
* out-of-distribution evaluation (``results["ood"]``);
* training — loss curves per method (and their loss parts), validation curves coloured by
  curriculum stage, each method's training setup, a few predictions;
* soft thinking — the mode table and the study's plots;
* System-1.5 grid — a heatmap drawn from the grid data (and any grid/heatmap PNG);
* thought probing — summary and a few decoded thoughts per ``probe-*.json``;
* adaptive thinking and every other results section, rendered generically (tables for
  records, key/value tables otherwise), and other PNG figures found in the run directory;
* the run's configuration (task, model) and library versions (``env``).

A section whose data has an unexpected shape is replaced by a visible note instead of aborting the
report.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Callable

from latentreason.errors import DataError
from latentreason.reporting import plots
from latentreason.reporting.html import (
    CSS,
    cell,
    esc,
    find_grid,
    fmt,
    img,
    img_file,
    int_key,
    is_grid_name,
    is_num,
    kv_table,
    read_json,
    read_jsonl,
    rel,
    render_generic,
    table,
)
from latentreason.utils import atomic_write_text

REPORT_NAME = "report.html"

#: results.json sections this module renders with their own layout
KNOWN_SECTIONS = ("task", "model", "methods", "soft_thinking", "ood", "env", "total_seconds", "seeds", "seed_dirs",
                  "seed", "code")
_SKIP_DIRS = {"checkpoints", "model"}








# --------------------------------------------------------------------------- the report
class _Report:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        path = run_dir / "results.json"
        if not path.exists():
            raise DataError(f"{path}: not found; is {str(run_dir)!r} a benchmark run directory (latentreason demo --out DIR)?")
        res = read_json(path)
        if not isinstance(res, dict):
            raise DataError(f"{path}: not a JSON object (is the file complete?)")
        self.results = res
        self.methods: dict[str, dict[str, Any]] = {k: v for k, v in (res.get("methods") or {}).items() if isinstance(v, dict)}
        self.seeds = [s for s in (res.get("seeds") or []) if isinstance(s, int)]
        dirs = res.get("seed_dirs") if isinstance(res.get("seed_dirs"), dict) else {}
        #: where per-entry files (curves, predictions, configs, study plots) are read: the first seed's directory
        self.seed_dir = run_dir / str(dirs.get(str(self.seeds[0]), "")) if dirs and self.seeds else run_dir
        self.multi = len(self.seeds) > 1
        self.curves = {name: read_jsonl(self.seed_dir / name / "metrics.jsonl") for name in self.methods}
        self.embedded: set[Path] = set()
        self.toc: list[tuple[str, str]] = []
        extra = [k for k in res if k not in KNOWN_SECTIONS]
        self.grid_keys = [k for k in extra if is_grid_name(k)]
        self.probe_keys = [k for k in extra if "prob" in k.lower() and k not in self.grid_keys]
        self.adaptive_keys = [k for k in extra if "adaptive" in k.lower() and k not in self.grid_keys + self.probe_keys]

    # ------------------------------------------------------------------ helpers
    def section(self, anchor: str, title: str, build: Callable[[], str]) -> str:
        try:
            body = build()
        except Exception as e:  # an optional section with an unexpected shape must not cost the whole report
            body = f'<p class="warn">this section could not be rendered: {esc(type(e).__name__)}: {esc(e)}</p>'
        if not body:
            return ""
        self.toc.append((anchor, title))
        return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'

    def image_file(self, path: Path, caption: str | None = None) -> str:
        self.embedded.add(path.resolve())
        return img_file(path, self.run_dir, caption)

    def files(self, pattern: str) -> list[Path]:
        """Files matching ``pattern`` in the run directory and its sub-directories (two levels)."""
        found = []
        for p in sorted(self.run_dir.glob(pattern)) + sorted(self.run_dir.glob(f"*/{pattern}")) + \
                sorted(self.run_dir.glob(f"*/*/{pattern}")):
            parts = p.relative_to(self.run_dir).parts[:-1]
            other_seed = parts and parts[0].startswith("seed-") and self.run_dir / parts[0] != self.seed_dir
            if p.is_file() and not _SKIP_DIRS & set(parts) and not other_seed:
                found.append(p)
        return found

    def seed_note(self) -> str:
        if not self.multi:
            return ""
        first = self.seeds[0]
        return (f'<p class="note">Curves, predictions and figures below are those of seed {first} '
                f'(<code>{esc(rel(self.seed_dir, self.run_dir))}</code>); every seed\'s own report: '
                f'<code>latentreason report {esc(self.run_dir)}/seed-S</code>.</p>')

    # ------------------------------------------------------------------ sections
    def comparison(self) -> str:
        if not self.methods:
            return '<p class="note">no methods in results.json</p>'
        cols = [
            ("accuracy", "accuracy", 3), ("n", "n", 0), ("unparseable", "unparseable", 0),
            ("mean_reasoning_tokens", "reasoning tokens", 2), ("mean_latent_steps", "latent steps", 2),
            ("mean_generated_tokens", "generated tokens", 2), ("mean_forward_passes", "forward passes", 2),
            ("latency_ms_per_question", "ms / question", 2), ("batch_size", "batch", 0),
            ("speedup_vs_cot", "speed-up vs CoT", 2), ("train_seconds", "train s", 1), ("train_steps", "train steps", 0),
        ]
        cols = [c for c in cols if any(c[0] in r for r in self.methods.values())]
        if self.multi:
            cols.insert(1, ("gap_closed", "gap closed", 3))
            cols.append(("n_seeds", "seeds", 0))
        rows = []
        for name, r in self.methods.items():
            cells = [f'<td class="key">{esc(name)}</td>', f"<td>{esc(r.get('method', ''))}</td>"]
            for key, _, d in cols:
                v = r.get(key)
                if self.multi and key in ("accuracy", "gap_closed", "speedup_vs_cot") and is_num(r.get(f"{key}_std")):
                    unit = "×" if key == "speedup_vs_cot" else ""
                    dd = 2 if key == "speedup_vs_cot" else 3
                    std, lo = r[f"{key}_std"], r.get(f"{key}_min", v)
                    main_txt = f"{v:.{dd}f}{unit} ± {std:.{dd}f}"
                    cells.append(f'<td class="num">{esc(main_txt)}<br><small>{esc(f"min {lo:.{dd}f}{unit}")}</small></td>')
                elif key == "speedup_vs_cot" and is_num(v):
                    cells.append(f'<td class="num">{esc(f"{v:.2f}×")}</td>')
                elif key == "train_seconds" and is_num(v):
                    cells.append(f'<td class="num">{esc(f"{v:.1f}")}</td>')
                elif is_num(v) and isinstance(v, float) and d:
                    cells.append(f'<td class="num">{esc(f"{v:.{d}f}")}</td>')
                else:
                    cells.append(cell(v))
            rows.append(cells)
        first = next(iter(self.methods.values()))
        device = ", ".join(f"{k} {first[k]}" for k in ("device", "dtype") if k in first)
        note = (f'<p class="note">All methods evaluated in this run on the same test questions'
                f'{", " + esc(device) if device else ""}; latency is wall-clock per question at the batch size shown '
                f'(device synchronised); speed-up = latency(cot) / latency(method) measured in this run.</p>')
        if self.multi:
            note += (f'<p class="note">{len(self.seeds)} training seeds ({esc(", ".join(map(str, self.seeds)))}), each '
                     'running the whole pipeline (CoT teacher and every model derived from it): values are means over '
                     'seeds, ± the sample standard deviation, with the worst seed (min) below; gap closed = (accuracy − '
                     'No-CoT) / (CoT − No-CoT) of the same seed. Error bars in the plots: ± one standard deviation.</p>')
        figs = "".join([
            img(plots.accuracy_latency_scatter(self.methods), "accuracy vs latency",
                 "accuracy against latency (ms / question, log scale)"),
            img(plots.cost_bars(self.methods), "reasoning length and cost",
                 "mean reasoning tokens, latent steps, generated tokens and forward passes per question"),
        ])
        return table(["name", "method"] + [c[1] for c in cols], rows) + note + f'<div class="grid2">{figs}</div>'

    def spread(self) -> str:
        if not self.multi:
            return ""
        names = [n for n, r in self.methods.items() if isinstance(r.get("per_seed"), list)]
        rows = []
        for n in names:
            by = {p.get("seed"): p for p in self.methods[n]["per_seed"] if isinstance(p, dict)}
            cells = [f'<td class="key">{esc(n)}</td>']
            for s in self.seeds:
                p = by.get(s) or {}
                acc, gap = p.get("accuracy"), p.get("gap_closed")
                txt = "–" if not is_num(acc) else f"{acc:.3f}" + (f" ({100 * gap:.0f} %)" if is_num(gap) else "")
                cells.append(f'<td class="num">{esc(txt)}</td>')
            rows.append(cells)
        seed_table = table(["name"] + [f"seed {s}" for s in self.seeds], rows)
        fig = img(plots.seed_strip(self.methods), "accuracy per seed",
                   "test accuracy of every seed (dots), mean ± one standard deviation (bar)")
        return (seed_table + '<p class="note">Test accuracy per seed (share of that seed\'s No-CoT → CoT gap closed in '
                'brackets).</p>' + fig + self.seed_note())

    def ood(self) -> str:
        ood = self.results.get("ood")
        if not ood:
            return ""
        if not isinstance(ood, dict):
            return render_generic(ood)
        sets = list(ood)
        names = list(dict.fromkeys(m for s in sets for m in (ood[s] or {})))
        rows = []
        for m in names:
            cells = [f'<td class="key">{esc(m)}</td>']
            for s in sets:
                r = (ood[s] or {}).get(m)
                if not isinstance(r, dict):
                    cells.append("<td>–</td>")
                    continue
                extra = [f"n={fmt(r.get('n'))}"]
                for k, label in (("too_long", "too long"), ("unparseable", "unparseable")):
                    if r.get(k):
                        extra.append(f"{fmt(r[k])} {label}")
                if is_num(r.get("latency_ms_per_question")):
                    extra.append(f"{r['latency_ms_per_question']:.2f} ms/q")
                acc = r.get("accuracy")
                acc_s = f"{acc:.3f}" if is_num(acc) else fmt(acc)
                cells.append(f'<td class="num"><b>{esc(acc_s)}</b><br><small>{esc(", ".join(extra))}</small></td>')
            rows.append(cells)
        note = ('<p class="note">Accuracy over all n questions of each set; questions longer than the model\'s context '
                'are counted as wrong and listed as "too long".</p>')
        sources = []
        for s in sets:
            src = next((r.get("source") for r in (ood[s] or {}).values() if isinstance(r, dict) and r.get("source")), None)
            if src:
                sources.append(f"{s}: {src}")
        if sources:
            note += f'<p class="note">Sets: {esc("; ".join(sources))}.</p>'
        return table(["name"] + sets, rows) + note

    def training(self) -> str:
        parts = []
        loss = plots.loss_curves(self.curves)
        if loss:
            parts.append(img(loss, "training loss", "training loss per method (from metrics.jsonl; dotted lines: stage changes)"))
        val = plots.validation_curves(self.curves)
        if val:
            parts.append(img(val, "validation accuracy", "validation accuracy by step, coloured by curriculum stage"))
        # setup + final validation per method
        rows = []
        for name in self.methods:
            rc = read_json(self.seed_dir / name / "run_config.json") or {}
            tr = rc.get("train") or {}
            final = [r for r in self.curves.get(name, []) if r.get("type") == "final"]
            stages = list(dict.fromkeys(str(r["stage"]) for r in self.curves.get(name, []) if r.get("stage") is not None))
            margs = rc.get("method_args") or {}
            init = rc.get("init_from")
            rows.append([
                f'<td class="key">{esc(name)}</td>', f"<td>{esc(rc.get('method', self.methods[name].get('method', '')))}</td>",
                f"<td><code>{esc(', '.join(f'{k}={fmt(v)}' for k, v in margs.items()) or '–')}</code></td>",
                f"<td>{esc(Path(init).parent.name if init else '–')}</td>",
                cell(tr.get("max_steps") if tr.get("max_steps") is not None else tr.get("epochs")),
                cell(tr.get("batch_size")), cell(tr.get("lr")),
                cell(self.methods[name].get("train_seconds"), 1),
                f"<td>{esc(', '.join(stages) or '–')}</td>",
                cell(final[-1].get("valid_accuracy") if final else None),
            ])
        if rows:
            parts.append("<h3>Training setup</h3>" + table(
                ["name", "method", "method options", "initialised from", "steps / epochs", "batch", "lr", "train s",
                 "stages", "final valid accuracy"], rows))
        preds = []
        for name in self.methods:
            recs = read_json(self.seed_dir / name / "predictions.json")
            if isinstance(recs, list) and recs:
                rows = []
                for r in recs[:4]:
                    if not isinstance(r, dict):
                        continue
                    ok = r.get("correct")
                    mark = '<span class="ok">✔</span>' if ok else '<span class="bad">✘</span>'
                    rows.append([f"<td><code>{esc(r.get('question', ''))}</code></td>", f"<td>{esc(r.get('gold', ''))}</td>",
                                 f"<td><code>{esc(r.get('output', ''))}</code></td>", f"<td>{mark}</td>"])
                preds.append(f"<details><summary>{esc(name)}: first {len(rows)} of {len(recs)} test predictions</summary>"
                             + table(["question", "gold", "output", "correct"], rows) + "</details>")
        if preds:
            parts.append("<h3>Predictions</h3>" + "".join(preds))
        if parts:
            parts.insert(0, self.seed_note())
        return "".join(parts)

    def soft_thinking(self) -> str:
        st_dir = self.seed_dir / "soft_thinking"
        study = read_json(st_dir / "soft_thinking.json") if (st_dir / "soft_thinking.json").exists() else None
        rows = self.results.get("soft_thinking") or (study or {}).get("results")
        pngs = sorted(st_dir.glob("*.png")) if st_dir.is_dir() else []
        if not rows and not pngs:
            return ""
        parts = []
        settings = (study or {}).get("settings") or {}
        dict_rows = {m: r for m, r in rows.items() if isinstance(r, dict)} if isinstance(rows, dict) else {}
        models = list(dict.fromkeys(str(r["model"]) for r in dict_rows.values() if r.get("model") and not r.get("extension")))
        horizons = sorted({r["js_horizon"] for r in dict_rows.values() if is_num(r.get("js_horizon"))})
        if settings or dict_rows:
            bits = [f"{k} {fmt(settings[k])}" for k in ("questions", "samples", "ks", "seed") if k in settings]
            if is_num((settings.get("config") or {}).get("temperature")):
                bits.append(f"thinking temperature {fmt(settings['config']['temperature'])}")
            model = f" Model studied: {esc(models[0])}." if len(models) == 1 else ""
            parts.append(f'<p class="note">Settings: {esc("; ".join(bits)) or "–"}.{model} Modes without randomness are '
                         f'decoded once (their Pass@k equals their accuracy). JS: divergence of the next-token distribution '
                         f'h tokens after a soft input from the one after its top-1 / top-2 component'
                         f'{esc(f" (h = {horizons[0]})") if len(horizons) == 1 else ""}. Thinking entropy: mean entropy '
                         f'(nats) of the model\'s own next-token distribution over the thinking steps. Softness / randomness '
                         f'(SPEC §4.2): entropy of the soft inputs\' weights / their JS to the un-noised soft token. Rows '
                         f'marked <em>project extension</em> put Dirichlet / Gumbel noise on a latent model\'s continuous '
                         f'thoughts: this project\'s own method, not a paper\'s (docs/soft_thinking.md).</p>')
        if dict_rows:
            ks = sorted({k for r in dict_rows.values() for k in (r.get("pass_at_k") or {})}, key=int_key)
            header = ["mode", "accuracy", *[f"pass@{k}" for k in ks], "ROUGE-L vs greedy", "JS to top-1", "JS to top-2",
                      "thinking entropy", "softness", "randomness", "reasoning tokens", "ms / question"]
            body = []
            for mode, r in dict_rows.items():
                pk = r.get("pass_at_k") or {}
                label = esc(mode) + (" <em>(project extension)</em>" if r.get("extension") else "")
                body.append([f'<td class="key">{label}</td>', cell(r.get("accuracy")), *[cell(pk.get(k)) for k in ks],
                             *[cell(r.get(k)) for k in ("rouge_l_vs_greedy", "js_top1", "js_top2", "mean_thinking_entropy",
                                                         "softness", "randomness")],
                             cell(r.get("mean_reasoning_tokens"), 1), cell(r.get("latency_ms_per_question"), 2)])
            parts.append(table(header, body))
        elif rows:
            parts.append(render_generic(rows))
        order = {n: i for i, n in enumerate(("pass_at_k", "rouge_l", "js_divergence", "logit_lens"))}
        figs = [self.image_file(p) for p in sorted(pngs, key=lambda p: (order.get(p.stem, 99), p.name))]
        parts.append(f'<div class="grid2">{"".join(figs)}</div>')
        return "".join(parts)

    def grid(self) -> str:
        keys = self.grid_keys
        files = [p for p in self.files("*.json") if is_grid_name(p.stem) and p.name != "results.json"]
        pngs = [p for p in self.files("*.png") if is_grid_name(p.stem) or "heatmap" in p.stem.lower()]
        parts = []
        for name, r in self.methods.items():
            hist = r.get("exit_histogram")
            if not isinstance(hist, dict):
                continue
            counts = hist.get("counts") or {}
            L = int(hist.get("num_layers") or 0)
            reused = hist.get("reused") or {}
            rows = [[f'<td class="key">{esc(k)}</td>', *[cell(v, 1) for v in counts[k]], cell(reused.get(k, 0), 1),
                     cell(hist.get(f"{k}_mean_exit_layer"), 2), cell(hist.get(f"{k}_mean_layers_run"), 2)]
                    for k in ("critical", "noncritical") if k in counts]
            parts.append(f"<h3>{esc(name)}: learned exits</h3>" + table(
                ["thoughts"] + [f"exit before layer {l}" for l in range(L)]
                + ["ran to the end", "reused every layer (step shortcut)", "mean exit layer (computed thoughts)",
                   "mean layers run"], rows)
                + img(plots.exit_histogram(hist, f"{name}: exits of critical vs non-critical thoughts"), "exit histogram")
                + '<p class="note">Thoughts aligned with a step inherit its criticality (the answer depends on the step '
                  'through the dependency graph); thoughts past the last step carry the result and are non-critical.'
                + (" Counts are means over seeds." if self.multi else "") + "</p>")
        for label, obj in [(f"results.json: {k}", self.results[k]) for k in keys] + \
                          [(rel(p, self.run_dir), read_json(p)) for p in files]:
            parts.append(f"<h3>{esc(label)}</h3>")
            g = find_grid(obj)
            if g:
                parts.append(img(plots.heatmap(g["values"], g["rows"], g["cols"], row_name=g["row_name"],
                                                col_name=g["col_name"], value_name=g["value_name"], title=label),
                                  "grid heatmap", f"{g['value_name'] or 'value'} over {g['row_name'] or 'rows'} × "
                                                  f"{g['col_name'] or 'columns'}"))
            parts.append(f"<details><summary>data</summary>{render_generic(obj)}</details>")
        parts += [self.image_file(p) for p in pngs]
        return "".join(parts)

    def probing(self) -> str:
        parts = []
        sources = [(f"results.json: {k}", self.results[k]) for k in self.probe_keys]
        sources += [(rel(p, self.run_dir), read_json(p)) for p in self.files("probe-*.json")]
        for label, obj in sources:
            parts.append(f"<h3>{esc(label)}</h3>")
            if isinstance(obj, dict) and isinstance(obj.get("summary"), dict):
                parts.append(kv_table(obj["summary"]))
                exs = obj.get("examples") or []
                for ex in exs[:3]:
                    if not isinstance(ex, dict):
                        continue
                    rows = []
                    for th in ex.get("thoughts") or []:
                        tops = " ".join(f"{t!r}:{p:.2f}" if is_num(p) else repr(t) for t, p in (th.get("top") or []))
                        rows.append([f"<td>{esc(th.get('position', ''))}</td>", cell(th.get("norm"), 2),
                                     f"<td><code>{esc(tops)}</code></td>"])
                    parts.append(f"<details><summary>{esc(ex.get('question', ''))} → {esc(ex.get('output', ''))} "
                                 f"(intermediate results {esc(fmt(ex.get('results')))})</summary>"
                                 + table(["position", "|h|", "top tokens (probability)"], rows) + "</details>")
            elif obj is not None:
                parts.append(render_generic(obj))
        return "".join(parts)

    def adaptive(self) -> str:
        parts = [f"<h3>{esc(k)}</h3>" + render_generic(self.results[k]) for k in self.adaptive_keys]
        parts += [self.image_file(p) for p in self.files("*.png") if "adaptive" in p.stem.lower()]
        return "".join(parts)

    def others(self) -> str:
        done = set(KNOWN_SECTIONS) | set(self.grid_keys) | set(self.probe_keys) | set(self.adaptive_keys)
        parts = [f"<h3>{esc(k)}</h3>" + render_generic(v) for k, v in self.results.items() if k not in done]
        figs = [self.image_file(p) for p in self.files("*.png") if p.resolve() not in self.embedded]
        if figs:
            parts.append("<h3>Other figures</h3>" + f'<div class="grid2">{"".join(figs)}</div>')
        return "".join(parts)

    def config(self) -> str:
        parts = []
        for key, title in (("task", "Task"), ("model", "Model")):
            v = self.results.get(key)
            if isinstance(v, dict):
                parts.append(f"<h3>{title}</h3>" + kv_table({k: x for k, x in v.items() if x not in ({}, None)}))
        env = self.results.get("env")
        if isinstance(env, dict):
            parts.append("<h3>Environment and library versions</h3>" + kv_table(env))
        if "total_seconds" in self.results:
            parts.append(f'<p class="note">Total run time: {esc(fmt(self.results["total_seconds"]))} s.</p>')
        return "".join(parts)

    # ------------------------------------------------------------------ assembly
    def html(self) -> str:
        sections = [
            self.section("comparison", "Comparison", self.comparison),
            self.section("seeds", "Spread over seeds", self.spread),
            self.section("ood", "Out-of-distribution evaluation", self.ood),
            self.section("training", "Training", self.training),
            self.section("soft-thinking", "Soft thinking", self.soft_thinking),
            self.section("grid", "System-1.5: exits and test-time grid", self.grid),
            self.section("probing", "Thought probing", self.probing),
            self.section("adaptive", "Adaptive thinking", self.adaptive),
            self.section("other", "Other results", self.others),
            self.section("config", "Configuration and environment", self.config),
        ]
        task = self.results.get("task") or {}
        model = self.results.get("model") or {}
        env = self.results.get("env") or {}
        sub = []
        if isinstance(task, dict) and task.get("name"):
            sub.append(f"task {task['name']}" + (f" ({task['n_steps']} steps)" if "n_steps" in task else ""))
        if isinstance(model, dict) and model.get("name"):
            sub.append(f"model {model['name']}" + (f" ({model['n_layer']} layers, d={model['n_embd']})"
                                                   if "n_layer" in model and "n_embd" in model else ""))
        if isinstance(env, dict):
            sub += [f"{k} {env[k]}" for k in ("device", "git_revision") if env.get(k)]
        now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in self.toc)
        title = f"latentreason report: {self.run_dir.resolve().name}"
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{esc(title)}</h1>"
            f'<p class="meta">{esc(" · ".join(sub))}</p>'
            f'<p class="meta">run directory {esc(self.run_dir.resolve())} · report written {esc(now)}</p>'
            f"<nav>Sections: {nav}</nav>"
            + "".join(sections)
            + "</main></body></html>\n"
        )


def build_report(run_dir: str | Path) -> str:
    """The report's HTML text for a run directory (see the module docstring)."""
    return _Report(Path(run_dir)).html()


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``output``) and return its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"{run}: not a directory (expected a run directory with results.json)")
    target = Path(output) if output is not None else run / REPORT_NAME
    atomic_write_text(target, build_report(run))
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(target, 0o666 & ~mask)  # a report is meant to be shared (the temporary file was 0600)
    return target


__all__ = ["REPORT_NAME", "build_report", "write_report"]
