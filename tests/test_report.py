"""The one-page report: built from the committed default run's metrics and plots and real MLflow
runs, rendered in headless Chromium (no console error, every image decoded)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pipeline.report import PLOTS, build, markdown_to_html
from pipeline.tracking import stage_run, stage_runs

from .browser import render
from .conftest import ROOT


def test_markdown_tables_lists_and_verdicts_become_html():
    page = markdown_to_html(
        "### Title\n\n| claim | holds |\n|---|---|\n| `a_b` | yes |\n| **c** <x> | no |\n\n- one\n- two\ntext"
    )
    assert "<h5>Title</h5>" in page and "<th>claim</th>" in page
    assert '<td class="yes">yes</td>' in page and '<td class="no">no</td>' in page
    assert "<code>a_b</code>" in page and "<b>c</b> &lt;x&gt;" in page  # escaped, never raw HTML
    assert "<ul><li>one</li><li>two</li></ul>" in page and "<p>text</p>" in page


def test_stage_runs_keep_the_latest_run_of_each_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for stage, lr in (("pretrain@simsiam", 0.1), ("prepare", 0), ("pretrain@simsiam", 0.2)):
        with stage_run(stage, {"lr": lr}, "report-test"):
            pass
    with pytest.raises(KeyboardInterrupt), stage_run("pretrain@simsiam", {"lr": 0.3}, "report-test"):
        raise KeyboardInterrupt  # an interrupted rerun: its outputs are not the study's, nor is its run
    runs = stage_runs("report-test")
    assert [r["stage"] for r in runs] == ["prepare", "pretrain@simsiam"]
    assert runs[1]["params"] == {"lr": "0.2"} and runs[1]["status"] == "FINISHED" and runs[1]["wall_s"] >= 0
    assert runs[1]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert stage_runs("no-such-experiment") == []


def test_report_of_the_committed_run_renders_in_headless_chromium(tmp_path, monkeypatch):
    for folder in ("metrics", "plots"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with stage_run("claims", {"profile": "default"}, "report-test"):
        pass
    runs = stage_runs("report-test")
    page = build(tmp_path, runs, "study", "abc123", "default")
    (tmp_path / "index.html").write_text(page)
    result = render((tmp_path / "index.html").as_uri())
    (tmp_path / "report.png").write_bytes(result.screenshot)
    assert result.errors == [] and result.title == "study"
    present = [p for p, _ in PLOTS if (tmp_path / p).is_file()]
    assert len(present) >= 8 and len(result.images) == len(present)
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in result.images), result.images
    simsiam = json.loads((tmp_path / "metrics/pretrain_simsiam.json").read_text())
    lo, hi = simsiam["knn_gain_ci95_vs_seed0"]  # the interval sits beside the gain it bounds
    assert f"{simsiam['knn_gain_vs_seed0']:+.4f} [{lo:+.4f}, {hi:+.4f}]" in page
    claims = json.loads((tmp_path / "metrics/claims.json").read_text())["claims"]
    assert all(f"<code>{c['id']}</code>" in page for c in claims)
    assert (
        "<td>claims</td>" in page
        and f"<td>{runs[0]['cpu_capability']}</td>" in page
        and "oracle (oracle: true nuisance re-drawn)" in page
    )
    assert result.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(result.screenshot) > 50_000


def test_the_browser_check_catches_a_broken_image_and_a_console_error(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<html><body><img src="data:image/png;base64,AAAA" alt="x"><script>console.error("boom")</script></body></html>'
    )
    result = render(broken.as_uri())
    assert result.errors == ["console: boom"] and result.images[0]["width"] == 0
