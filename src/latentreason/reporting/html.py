"""The HTML pieces of the run report: escaping and number formats, tables, embedded images, generic rendering.

Everything the report writes goes through :func:`esc`; images are embedded as base64 PNG
(:func:`img`, :func:`img_file`); a results section without its own layout is rendered by
:func:`render_generic` (records as tables, key/value tables otherwise); :func:`find_grid` finds a
2-D grid (System-1.5's test-time grid) in any JSON object. :mod:`latentreason.reporting.report`
assembles the report from these.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

_MAX_IMAGE_BYTES = 8 * 1024 * 1024


CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --head:#eef1f6; --accent:#2f5fa7; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: var(--fg);
       margin: 0; background: #fafbfc; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 1.7em; margin: 0 0 4px; color: var(--accent); }
h2 { font-size: 1.3em; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.08em; margin: 22px 0 8px; }
h4 { font-size: 0.98em; margin: 14px 0 6px; color: var(--muted); }
p.meta, p.note { color: var(--muted); font-size: 0.92em; margin: 4px 0 10px; }
p.warn { color: #8a4b00; background: #fff4e0; padding: 6px 10px; border-left: 3px solid #e0a040; }
nav { font-size: 0.92em; margin: 12px 0 0; color: var(--muted); }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 0.9em; }
th, td { border: 1px solid var(--line); padding: 4px 9px; vertical-align: top; }
th { background: var(--head); text-align: left; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #f7f9fc; }
td.key { font-weight: 600; white-space: nowrap; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.88em; }
pre { background: #f4f6f9; padding: 8px 10px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.88em; margin-top: 3px; }
.grid2 { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.grid2 figure { flex: 1 1 480px; min-width: 0; }
.grid2 figure.wide { flex: 1 1 100%; }
details { margin: 6px 0 10px; }
summary { cursor: pointer; color: var(--accent); }
.ok { color: #1b7a33; } .bad { color: #b3261e; }
"""


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v: Any, digits: int = 3) -> str:
    """Plain-text rendering of one value (None -> en dash)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 1000 or (v == int(v) and abs(v) >= 100):
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) < 10 ** -digits and v != 0:
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)):
        if len(v) > 12:
            return ", ".join(fmt(x, digits) for x in v[:12]) + f", … ({len(v)} items)"
        return ", ".join(fmt(x, digits) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def cell(v: Any, digits: int = 3) -> str:
    cls = ' class="num"' if is_num(v) else ""
    return f"<td{cls}>{esc(fmt(v, digits))}</td>"


def table(header: list[str], rows: list[list[str]]) -> str:
    """``rows`` are lists of already-rendered ``<td>`` cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(d: dict[str, Any], digits: int = 3) -> str:
    rows = [[f'<td class="key">{esc(k)}</td>', cell(v, digits)] for k, v in d.items()]
    return table(["key", "value"], rows)


def png_size(png: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, None when it is not a PNG."""
    if len(png) < 24 or not png.startswith(b"\x89PNG\r\n\x1a\n") or png[12:16] != b"IHDR":
        return None
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def img(png: bytes | None, alt: str, caption: str | None = None) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    size = png_size(png)
    wide = ' class="wide"' if size and size[0] > 2.2 * size[1] else ""
    return f'<figure{wide}><img alt="{esc(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def img_file(path: Path, run_dir: Path, caption: str | None = None) -> str:
    try:
        if path.stat().st_size > _MAX_IMAGE_BYTES:
            return f'<p class="note">{esc(rel(path, run_dir))}: not embedded (larger than {_MAX_IMAGE_BYTES >> 20} MiB)</p>'
        png = path.read_bytes()
    except OSError as e:
        return f'<p class="warn">{esc(rel(path, run_dir))}: could not be read ({esc(e)})</p>'
    if png_size(png) is None:
        return f'<p class="warn">{esc(rel(path, run_dir))}: not a PNG file, not embedded</p>'
    return img(png, path.stem, caption or rel(path, run_dir))


def rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return rows
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interrupted run
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def _flatten_row(r: dict[str, Any]) -> dict[str, Any]:
    """One level of nested small scalar dicts becomes ``key.sub`` columns (``pass_at_k.4``)."""
    out: dict[str, Any] = {}
    for k, v in r.items():
        if isinstance(v, dict) and 0 < len(v) <= 12 and all(not isinstance(x, (dict, list)) for x in v.values()):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv
        elif not isinstance(v, (dict, list)) or (isinstance(v, list) and len(v) <= 12
                                                 and all(not isinstance(x, (dict, list)) for x in v)):
            out[k] = v
    return out


def records_table(records: list[dict[str, Any]], first_col: str | None = None, names: list[str] | None = None,
                   limit: int = 60) -> str:
    flat = [_flatten_row(r) for r in records[:limit]]
    cols = list(dict.fromkeys(k for r in flat for k in r))
    header = ([first_col] if first_col else []) + cols
    rows = []
    for i, r in enumerate(flat):
        cells = [f'<td class="key">{esc(names[i])}</td>'] if names else []
        rows.append(cells + [cell(r.get(c)) for c in cols])
    more = f'<p class="note">{len(records) - limit} more rows not shown</p>' if len(records) > limit else ""
    return table(header, rows) + more


def render_generic(obj: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: dicts of records and lists of records as tables, other dicts as
    key/value tables with nested sections below, long or deep values as a JSON excerpt."""
    if isinstance(obj, dict):
        if not obj:
            return '<p class="note">(empty)</p>'
        vals = list(obj.values())
        if len(vals) >= 1 and all(isinstance(v, dict) for v in vals) and all(_flatten_row(v) for v in vals) and \
                sum(len(_flatten_row(v)) for v in vals) >= sum(len(v) for v in vals) / 2:
            return records_table(vals, "name", [str(k) for k in obj])
        scalars = {k: v for k, v in obj.items() if not isinstance(v, (dict, list)) or
                   (isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v))}
        parts = [kv_table(scalars)] if scalars else []
        for k, v in obj.items():
            if k in scalars:
                continue
            if depth >= 3:
                parts.append(f"<h4>{esc(k)}</h4>" + json_excerpt(v))
            else:
                parts.append(f"<h4>{esc(k)}</h4>" + render_generic(v, depth + 1))
        return "".join(parts)
    if isinstance(obj, list):
        if obj and all(isinstance(x, dict) for x in obj):
            return records_table(obj)
        if all(not isinstance(x, (dict, list)) for x in obj):
            return f"<p>{esc(fmt(obj))}</p>"
        return json_excerpt(obj)
    return f"<p>{esc(fmt(obj))}</p>"


def json_excerpt(obj: Any, limit: int = 4000) -> str:
    text = json.dumps(obj, indent=1, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters)"
    return f"<pre>{esc(text)}</pre>"


def find_grid(obj: Any) -> dict[str, Any] | None:
    """A 2-D grid inside ``obj``: ``{values, rows, cols, row_name, col_name, value_name}`` or None.

    Recognised shapes: a rectangular numeric matrix next to two label lists of matching lengths
    (``{"lambda_depth": [...], "lambda_step": [...], "accuracy": [[...]]}``); a list of records
    two of whose keys index a full grid (``[{"lambda_depth": .., "lambda_step": .., "accuracy": ..}]``,
    also under a key of a dict); a dict of dicts of numbers (``{row: {col: value}}``).
    """
    if isinstance(obj, dict):
        mats = {k: v for k, v in obj.items() if _is_matrix(v)}
        lists = {k: v for k, v in obj.items() if isinstance(v, list) and v and all(not isinstance(x, (dict, list)) for x in v)}
        for mk in sorted(mats, key=lambda k: (k != "accuracy", 0)):
            m = mats[mk]
            r = next((k for k, v in lists.items() if len(v) == len(m)), None)
            c = next((k for k, v in lists.items() if len(v) == len(m[0]) and k != r), None)
            if r and c:
                return {"values": m, "rows": lists[r], "cols": lists[c], "row_name": r, "col_name": c, "value_name": mk}
        if obj and all(isinstance(v, dict) and v and all(is_num(x) or x is None for x in v.values()) for v in obj.values()):
            cols = list(dict.fromkeys(k for v in obj.values() for k in v))
            if len(obj) >= 2 and len(cols) >= 2:
                return {"values": [[v.get(c) for c in cols] for v in obj.values()], "rows": list(obj), "cols": cols,
                        "row_name": "", "col_name": "", "value_name": ""}
        for v in obj.values():
            if isinstance(v, (dict, list)):
                g = find_grid(v)
                if g:
                    return g
        return None
    if isinstance(obj, list) and len(obj) >= 4 and all(isinstance(x, dict) for x in obj):
        keys = [k for k in obj[0] if all(k in r and not isinstance(r[k], (dict, list)) for r in obj)]
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                ra = list(dict.fromkeys(r[a] for r in obj))
                rb = list(dict.fromkeys(r[b] for r in obj))
                if len(ra) < 2 or len(rb) < 2 or len(ra) * len(rb) != len(obj):
                    continue
                if len({(r[a], r[b]) for r in obj}) != len(obj):
                    continue
                metrics = [k for k in keys if k not in (a, b) and all(is_num(r[k]) or r[k] is None for r in obj)]
                if not metrics:
                    continue
                vk = "accuracy" if "accuracy" in metrics else metrics[0]
                cell = {(r[a], r[b]): r[vk] for r in obj}
                ra_s, rb_s = _sorted_labels(ra), _sorted_labels(rb)
                return {"values": [[cell[(x, y)] for y in rb_s] for x in ra_s], "rows": ra_s, "cols": rb_s,
                        "row_name": a, "col_name": b, "value_name": vk}
    return None


def _sorted_labels(vals: list[Any]) -> list[Any]:
    return sorted(vals) if all(is_num(v) for v in vals) else vals


def _is_matrix(v: Any) -> bool:
    return (isinstance(v, list) and len(v) >= 1 and all(isinstance(r, list) for r in v) and len(v[0]) >= 1
            and len({len(r) for r in v}) == 1 and all(is_num(x) or x is None for r in v for x in r))


def int_key(k: Any) -> tuple[int, Any]:
    try:
        return (0, int(k))
    except (TypeError, ValueError):
        return (1, str(k))


def is_grid_name(name: str) -> bool:
    n = name.lower()
    return "grid" in n or "system1" in n or "system_1" in n or "s15" in n


__all__ = [
    "CSS", "cell", "esc", "find_grid", "fmt", "img", "img_file", "int_key", "is_grid_name", "is_num", "json_excerpt", "kv_table",
    "png_size", "read_json", "read_jsonl", "records_table", "rel", "render_generic", "table",
]
