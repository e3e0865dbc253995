"""The study on one self-contained HTML page: claims, every results table beside its baselines, the
key plots (inlined as PNG data), and per stage its MLflow run, wall time, git commit, CPU kernel level and params.

:func:`build` takes the folder holding ``metrics/`` and ``plots/`` and a list of stage runs (see
``pipeline.tracking.stage_runs``); it reads only files, so a missing one leaves its section out
with a note instead of failing the page.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: (section title, markdown table file, what the table is measured against)
TABLES = [
    (
        "Claims of the seeds",
        "metrics/claims.md",
        "each effect over seeds with its 95 % interval; > 0 means the claim holds",
    ),
    ("Translation", "metrics/translation_table.md", "baselines: ab = 0 (no colour) and the identity (output = input)"),
    ("ACE zero-shot translation", "metrics/ace_table.md", "baselines: the identity and AdaIN feature statistics"),
]
#: (plot file, caption), shown when present
PLOTS = [
    (
        "plots/pretrain_simsiam.png",
        "SimSiam pretraining: loss, representation spread and kNN top-1 against the untrained backbone and chance",
    ),
    ("plots/pretrain_swav.png", "SwAV pretraining"),
    ("plots/colorize_l1_ab.png", "Colorization: ab L1 per encoder and GAN, beside ab = 0"),
    ("plots/colorize_data_efficiency.png", "Colorization data efficiency (studies/data_efficiency)"),
    ("plots/colorize_simsiam_cgan_samples.png", "SimSiam + cGAN colorization samples: input | output | target"),
    ("plots/stylize_simsiam_samples.png", "SimSiam + CycleGAN style transfer samples: input | output | target"),
    ("plots/munit_samples.png", "MUNIT: real | random styles | draws of the true nuisance"),
    ("plots/augment_samples.png", "Tail-class augmentation by MUNIT"),
    ("plots/ekld_by_class.png", "Per-class invariance (eKLD) against class size"),
    ("plots/ace_grid.png", "ACE zero-shot samples"),
    ("plots/ace_l1.png", "ACE against its baselines"),
    ("plots/simgan_samples.png", "SimGAN: synthetic | refined | real digits"),
]
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f4f4f4}td.yes{background:#e3f5e1}td.no{background:#fbe9e7}code{background:#f4f4f4;padding:0 .2em}
figure{margin:1.2em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.note{color:#666;font-size:.9em}details{margin:.2em 0}pre{white-space:pre-wrap;font-size:.85em}
"""


def _inline(text: str) -> str:
    """Escape ``text`` and render markdown's `code` and **bold**."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cell(tag: str, text: str) -> str:
    cls = {"yes": ' class="yes"', "no": ' class="no"'}.get(text.strip().lower(), "")
    return f"<{tag}{cls}>{_inline(text.strip())}</{tag}>"


def markdown_to_html(md: str) -> str:
    """The markdown the stages write: ``#`` headings, pipe tables, ``-`` lists, paragraphs."""
    blocks, table, items = [], [], []

    def flush() -> None:
        if items:
            blocks.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|[\s\-:|]+\|", r)]
            cells = [[c for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(_cell("th", c) for c in cells[0])
            body = "".join("<tr>" + "".join(_cell("td", c) for c in r) + "</tr>" for r in cells[1:])
            blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if line.startswith("- "):
            items.append(line[2:])
            continue
        flush()
        if m := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(6, len(m.group(1)) + 2)
            blocks.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.strip():
            blocks.append(f"<p>{_inline(line)}</p>")
    flush()
    return "\n".join(blocks)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    return markdown_to_html("\n".join("| " + " | ".join(fmt(v) for v in r) + " |" for r in [header, *rows]))


def image(path: Path, caption: str) -> str:
    """A figure with the PNG inlined as a data URI (the page needs no file beside it)."""
    data = base64.b64encode(path.read_bytes()).decode()
    alt = html.escape(caption, quote=True)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _json(root: Path, name: str) -> dict[str, Any] | None:
    path = root / name
    return json.loads(path.read_text()) if path.is_file() else None


def pretraining_table(root: Path) -> str:
    rows = []
    for method in ("simsiam", "swav"):
        m = _json(root, f"metrics/pretrain_{method}.json")
        if m:
            ci = m["knn_gain_ci95_vs_seed0"]
            rows.append([method, m["knn_top1"], m["knn_top1_untrained"], m["knn_chance"], f"{m['knn_gain']:+.4f}",
                         f"{m['knn_gain_vs_seed0']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]", m["epochs"]])  # fmt: skip
    if not rows:
        return '<p class="note">not run yet (metrics/pretrain_*.json missing)</p>'
    return html_table(["method", "kNN top-1", "untrained (baseline, mean over inits)", "chance", "gain over the baseline",
                       "gain over untrained init 0 [95 % paired bootstrap CI]", "epochs"], rows)  # fmt: skip


def invariance_table(root: Path) -> str:
    c = _json(root, "metrics/classify.json")
    if not c:
        return '<p class="note">not run yet (metrics/classify.json missing)</p>'
    rows = []
    for name, m in c["classifiers"].items():
        rows.append([name + (" (oracle: true nuisance re-drawn)" if name == "oracle" else ""), f"{m['balanced_acc']:.4f} ± {m['balanced_acc_std']:.4f}",
                     f"{m['ekld_head']:.3f}", f"{m['ekld_tail']:.3f}", f"{m['spearman_size_ekld']:+.2f}", len(m["balanced_acc_per_seed"])])  # fmt: skip
    n_classes = len(next(iter(c["classifiers"].values()))["class_sizes"])
    note = f"<p>Chance balanced accuracy: {1 / n_classes:.2f}. Nuisance: <code>{html.escape(str(c['transform']))}</code>; tail = classes under {c['tail_threshold']} train images.</p>"
    header = [
        "classifier",
        "balanced acc (mean ± sd over seeds)",
        "eKLD head",
        "eKLD tail",
        "Spearman(size, eKLD)",
        "seeds",
    ]
    return note + html_table(header, rows)


def stages_table(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return '<p class="note">no MLflow runs found</p>'
    rows = []
    for r in runs:
        params = "\n".join(f"{k} = {v}" for k, v in sorted(r["params"].items()))
        rows.append(
            f"<tr><td>{html.escape(r['stage'])}</td><td><code>{html.escape(r['run_id'])}</code></td><td>{html.escape(r['status'])}</td>"
            f"<td>{r['wall_s']:.0f} s</td><td><code>{html.escape(r['commit'][:10])}</code></td><td>{html.escape(r['cpu_capability'])}</td>"
            f"<td><details><summary>{len(r['params'])} params</summary><pre>{html.escape(params)}</pre></details></td></tr>"
        )  # fmt: skip
    head = "".join(
        f"<th>{h}</th>"
        for h in ("stage", "MLflow run id", "status", "wall time", "git commit", "CPU kernels", "params")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def build(root: str | Path, runs: Sequence[Mapping[str, Any]], title: str, commit: str, profile: str) -> str:
    """The whole page as one HTML string."""
    root = Path(root)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>git commit <code>{html.escape(commit)}</code> · profile <code>{html.escape(profile)}</code> · "
             f"{len(runs)} stage runs in MLflow</p>"]  # fmt: skip
    for heading, name, baseline in TABLES[:1]:
        parts += [f"<h2>{heading}</h2>", f'<p class="note">{html.escape(baseline)}</p>', _section(root, name)]
    parts += ["<h2>SSL pretraining</h2>", pretraining_table(root)]
    for heading, name, baseline in TABLES[1:]:
        parts += [f"<h2>{heading}</h2>", f'<p class="note">{html.escape(baseline)}</p>', _section(root, name)]
    parts += ["<h2>Generative invariance transfer</h2>", invariance_table(root)]
    parts += ["<h2>Plots</h2>", *(image(root / p, cap) for p, cap in PLOTS if (root / p).is_file())]
    parts += ["<h2>Stages</h2>", stages_table(runs)]
    body = "\n".join(parts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")  # fmt: skip


def _section(root: Path, name: str) -> str:
    path = root / name
    return (
        markdown_to_html(path.read_text())
        if path.is_file()
        else f'<p class="note">not run yet ({html.escape(name)} missing)</p>'
    )
