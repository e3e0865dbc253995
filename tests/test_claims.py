"""Claims: statistics over seeds, the t interval, and the claims the study derives from its metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.claims import invariance_claims, markdown, study_claims
from pipeline.config import parse_params
from pipeline.metrics.seeds import claim, mean_over_seeds, t_interval

from .conftest import tiny_raw


def test_t_interval_matches_scipy_and_widens_with_spread():
    v = [0.1, 0.3, 0.2, 0.25]
    mean, lo, hi = t_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert mean == pytest.approx(0.2125) and (lo, hi) == pytest.approx(ref)
    assert t_interval([1.0, 2.0, 3.0])[2] - t_interval([1.9, 2.0, 2.1])[2] > 0
    assert t_interval([0.4]) == (0.4, -math.inf, math.inf)  # one seed: no interval


def test_claim_holds_only_when_the_interval_leaves_zero():
    assert claim("a", "s", [0.10, 0.12, 0.11], "b", "default", [0, 1, 2])["holds"]
    noisy = claim("a", "s", [0.3, -0.2, 0.1], "b", "default", [0, 1, 2])
    assert noisy["value"] > 0 and not noisy["holds"]  # positive on average, yet the interval includes 0
    one = claim("a", "s", [0.5], "b", "default", [0])
    assert one["ci95"] == [None, None] and not one["holds"]
    given = claim("a", "s", [0.05], "b", "default", [0], "bootstrap", interval=(0.01, 0.09))
    assert given["holds"] and given["ci95"] == [0.01, 0.09] and given["ci_method"] == "bootstrap"


def test_mean_over_seeds_averages_numbers_in_nested_dicts():
    rows = [
        {"l1": 1.0, "by": {"a": 2.0}, "name": "x", "ok": True},
        {"l1": 3.0, "by": {"a": 4.0}, "name": "y", "ok": False},
    ]
    assert mean_over_seeds(rows) == {"l1": 2.0, "by": {"a": 3.0}, "name": "x", "ok": True}


def _metrics(ssl_l1: list[float], stylize_l1: list[float], zero: list[float], fine: list[float]) -> dict:
    seeds = [str(s) for s in range(len(ssl_l1))]
    pre = {"knn_gain": 0.05, "knn_gain_ci95_vs_seed0": [0.02, 0.09], "knn_gain_std_over_init_seeds": 0.01,
           "knn_top1": 0.6, "knn_top1_untrained": 0.55, "knn_chance": 0.1}  # fmt: skip

    def cgan(v):
        return {"per_seed": {s: {"l1_ab": x} for s, x in zip(seeds, v)}}

    stylize = {"identity": {"l1_rgb": 0.10, "kid": 0.05, "kid_paintings_split_half": 0.0}, "palette": {"l1_rgb": 0.04, "kid": 0.001},
               **{e: {"per_seed": {s: {"l1_rgb": x, "kid": 0.04 + x} for s, x in zip(seeds, stylize_l1)}} for e in ("scratch", "simsiam", "swav")}}  # fmt: skip
    ace = {"table": {"identity": {"l1_rgb": 0.10}, "ace_zero_shot": {"l1_rgb": float(np.mean(zero))}, "ace_floor": {"l1_rgb": 0.05}},
           "per_seed": {s: {"zero_shot_gain_over_identity_l1": 0.10 - z, "finetune_gain_over_zero_shot_l1": z - f,
                            "floor_gain_over_identity_l1": 0.05} for s, z, f in zip(seeds, zero, fine)}}  # fmt: skip
    return {"pretrain_simsiam": pre, "pretrain_swav": {**pre, "knn_gain": 0.0}, "colorize_scratch_cgan": cgan([0.20, 0.21, 0.19]),
            "colorize_simsiam_cgan": cgan(ssl_l1), "colorize_swav_cgan": cgan([0.22, 0.20, 0.21]), "stylize": stylize, "ace": ace,
            "colorize_scratch_cyclegan": cgan([0.21, 0.22, 0.20]), "colorize_simsiam_cyclegan": cgan([0.16, 0.17, 0.15]),
            "colorize_swav_cyclegan": cgan([0.15, 0.17, 0.14]),
            **_invariance_metrics([0.80, 0.85, 0.90, 0.82, 0.88], [0.5] * 5, [0.01, 0.02, 0.015, 0.012, 0.018]),
            "simgan": _simgan_metrics([0.60, 0.62, 0.58], [0.66, 0.61, 0.65], [0.7, 0.72, 0.71], [0.75, 0.8, 0.78])}  # fmt: skip


def _simgan_metrics(
    synthetic: list[float], refined: list[float], kept_raw: list[float], kept_refined: list[float]
) -> dict:
    seeds = [str(s) for s in range(len(synthetic))]
    acc = {name: {"mean": float(np.mean(v)), "per_seed": dict(zip(seeds, v))}
           for name, v in (("synthetic", synthetic), ("refined", refined), ("real", [0.9] * len(seeds)))}  # fmt: skip
    return {"balanced_acc": acc, "refined_minus_synthetic": {s: r - y for s, r, y in zip(seeds, refined, synthetic)},
            "label_kept": {"synthetic": dict(zip(seeds, kept_raw)), "refined": dict(zip(seeds, kept_refined))},
            "label_kept_refined_minus_synthetic": {s: r - y for s, r, y in zip(seeds, kept_refined, kept_raw)}}  # fmt: skip


def _invariance_metrics(oracle_acc: list[float], git_tail: list[float], margins: list[float]) -> dict:
    n = len(oracle_acc)

    def row(acc, tail, mean, rho):
        return {
            "seeds": list(range(n)),
            "balanced_acc_per_seed": acc,
            "ekld_tail_per_seed": tail,
            "ekld_mean_per_seed": mean,
            "spearman_size_ekld_per_seed": rho,
        }

    erm_acc = [0.50, 0.48, 0.52, 0.49, 0.51]
    classify = {"transform": "rot", "classifiers": {
        "erm": row(erm_acc, [2.4, 2.5, 2.3, 2.6, 2.4], [1.0, 1.1, 0.9, 1.0, 1.05], [-0.6, -0.7, -0.5, -0.65, -0.55]),
        "drs": row(erm_acc, [2.0] * n, [0.9] * n, [0.0] * n),
        "git": row([a + 0.005 for a in erm_acc], git_tail, [0.8] * n, [0.0] * n),
        "oracle": row(oracle_acc, [0.2] * n, [0.1, 0.12, 0.09, 0.11, 0.1], [0.0] * n)}}  # fmt: skip
    augment = {
        "style_margin_per_image": margins,
        "recon_l1": 0.04,
        "style_diversity": 0.06,
        "recon_s": 0.3,
        "munit_seed": 0,
        "styles": 4,
    }
    return {"classify": classify, "augment": augment}


def test_invariance_claims_pair_the_methods_by_seed_and_judge_each_effect():
    claims = {c["id"]: c for c in invariance_claims(_invariance_metrics([0.80, 0.85, 0.90, 0.82, 0.88], [2.5, 2.4, 2.6, 2.5, 2.3],
                                                                         [0.01, -0.02, 0.015, -0.012, 0.004]), "default")}  # fmt: skip
    assert list(claims) == ["oracle_beats_erm_bal_acc", "erm_ekld_falls_with_size", "oracle_lowest_ekld", "git_lowers_tail_ekld",
                            "git_keeps_bal_acc", "munit_style_alive"]  # fmt: skip
    assert (
        claims["oracle_beats_erm_bal_acc"]["per_seed"] == pytest.approx([0.30, 0.37, 0.38, 0.33, 0.37])
        and claims["oracle_beats_erm_bal_acc"]["holds"]
    )
    assert (
        claims["erm_ekld_falls_with_size"]["value"] == pytest.approx(0.6)
        and claims["erm_ekld_falls_with_size"]["holds"]
    )
    assert claims["oracle_lowest_ekld"]["per_seed"] == pytest.approx(
        [0.8 - 0.1, 0.8 - 0.12, 0.8 - 0.09, 0.8 - 0.11, 0.8 - 0.1]
    )  # GIT is the best of the three here
    assert not claims["git_lowers_tail_ekld"]["holds"] and claims["git_lowers_tail_ekld"]["per_seed"][
        0
    ] == pytest.approx(0.8 * 2.4 - 2.5)
    assert claims["git_keeps_bal_acc"]["value"] == pytest.approx(0.015) and claims["git_keeps_bal_acc"]["holds"]
    alive = claims["munit_style_alive"]
    assert not alive["holds"] and len(alive["per_seed"]) == 5 and "one MUNIT run" in alive["ci_method"]
    unpaired = _invariance_metrics([0.8] * 5, [2.0] * 5, [0.01] * 5)
    unpaired["classify"]["classifiers"]["git"]["seeds"] = [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="classify@git ran seeds"):
        invariance_claims(unpaired, "default")


def test_study_claims_sign_and_judge_each_effect():
    params = parse_params(tiny_raw())
    claims = {
        c["id"]: c
        for c in study_claims(
            _metrics([0.18, 0.19, 0.17], [0.08, 0.085, 0.082], [0.2, 0.18, 0.19], [0.3, 0.25, 0.28]), params
        )
    }
    assert list(claims) == ["ssl_knn_gain_simsiam", "ssl_knn_gain_swav", "colorize_ssl_beats_scratch_simsiam", "colorize_ssl_beats_scratch_swav",
                            "colorize_cyclegan_beats_cgan_scratch", "colorize_cyclegan_beats_cgan_simsiam", "colorize_cyclegan_beats_cgan_swav",
                            "colorize_swav_beats_simsiam_cgan", "colorize_swav_beats_simsiam_cyclegan", "stylize_beats_identity", "stylize_kid_below_identity", "ace_zero_shot_beats_identity", "ace_finetune_beats_zero_shot", "ace_floor_beats_identity",
                            "oracle_beats_erm_bal_acc", "erm_ekld_falls_with_size", "oracle_lowest_ekld", "git_lowers_tail_ekld", "git_keeps_bal_acc",
                            "munit_style_alive", "simgan_refined_beats_synthetic", "simgan_keeps_label"]  # fmt: skip
    assert claims["ssl_knn_gain_simsiam"]["holds"] and not claims["ssl_knn_gain_swav"]["holds"]
    # SimGAN, paired by classifier seed: refined 0.66 / 0.61 / 0.65 against raw 0.60 / 0.62 / 0.58
    assert claims["simgan_refined_beats_synthetic"]["per_seed"] == pytest.approx([0.06, -0.01, 0.07])
    assert not claims["simgan_refined_beats_synthetic"]["holds"]  # one seed the other way: the interval spans 0
    assert (
        claims["simgan_refined_beats_synthetic"]["baseline"]
        == "raw synthetic, balanced accuracy 0.600 (trained on real digits: 0.900)"
    )
    assert (
        claims["simgan_keeps_label"]["per_seed"] == pytest.approx([0.05, 0.08, 0.07])
        and claims["simgan_keeps_label"]["holds"]
    )
    lo, hi = claims["ssl_knn_gain_simsiam"]["ci95"]
    assert hi - lo > 0.09 - 0.02 and (lo + hi) / 2 == pytest.approx(
        0.05
    )  # centred on the gain; the init spread widens the query bootstrap
    assert (
        claims["colorize_ssl_beats_scratch_simsiam"]["value"] == pytest.approx(0.02)
        and claims["colorize_ssl_beats_scratch_simsiam"]["holds"]
    )
    assert (
        claims["colorize_ssl_beats_scratch_swav"]["value"] < 0
        and not claims["colorize_ssl_beats_scratch_swav"]["holds"]
    )
    # seed 002's Table I, paired by seed: scratch cGAN 0.20 / 0.21 / 0.19 against its CycleGAN 0.21 / 0.22 / 0.20
    assert claims["colorize_cyclegan_beats_cgan_scratch"]["per_seed"] == pytest.approx([-0.01, -0.01, -0.01])
    assert not claims["colorize_cyclegan_beats_cgan_scratch"]["holds"]
    assert claims["colorize_cyclegan_beats_cgan_simsiam"]["value"] == pytest.approx(0.02)
    assert claims["colorize_cyclegan_beats_cgan_simsiam"]["holds"]
    assert claims["colorize_swav_beats_simsiam_cyclegan"]["per_seed"] == pytest.approx([0.01, 0.0, 0.01])
    assert claims["colorize_swav_beats_simsiam_cgan"]["per_seed"] == pytest.approx([-0.04, -0.01, -0.04])
    assert claims["colorize_cyclegan_beats_cgan_swav"]["baseline"] == "swav encoder cgan, ab L1 0.2100"
    assert claims["stylize_beats_identity"]["holds"] and len(claims["stylize_beats_identity"]["per_seed"]) == 9
    assert (
        claims["stylize_beats_identity"]["baseline"] == "identity, L1 0.1000; palette oracle 0.0400"
    )  # the oracle row is no stylizer run
    assert claims["stylize_kid_below_identity"]["value"] < 0 and not claims["stylize_kid_below_identity"]["holds"]
    assert not claims["ace_zero_shot_beats_identity"]["holds"] and claims["ace_zero_shot_beats_identity"][
        "value"
    ] == pytest.approx(-0.09)
    assert not claims["ace_finetune_beats_zero_shot"]["holds"]
    assert all(
        c["profile"] == "default" and {"statement", "baseline", "ci_method", "seeds"} <= set(c) for c in claims.values()
    )
    table = markdown(list(claims.values()))
    assert "| `stylize_beats_identity` | +0.0177 |" in table and table.count("\n") == 2 + len(claims)
    # pretrain.extra_seeds: the kNN gain's interval is a t interval over the pretraining seeds
    m = _metrics([0.18, 0.19, 0.17], [0.08, 0.085, 0.082], [0.2, 0.18, 0.19], [0.3, 0.25, 0.28])
    m["pretrain_swav"]["knn_gain_per_seed"] = {"0": 0.05, "1": 0.04, "2": 0.06}
    swav = {c["id"]: c for c in study_claims(m, params)}["ssl_knn_gain_swav"]
    assert (
        swav["seeds"] == [0, 1, 2]
        and swav["per_seed"] == [0.05, 0.04, 0.06]
        and swav["ci_method"].startswith("t over pretraining seeds")
    )
    assert (
        swav["value"] == pytest.approx(0.05)
        and swav["ci95"][0] == pytest.approx(0.05 - 4.303 * 0.01 / 3**0.5, abs=1e-3)
        and swav["holds"]
    )


def test_claims_stage_names_the_missing_metrics_file(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "stages.claims", "--metrics", str(tmp_path)], cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == f"error: {tmp_path / 'pretrain_simsiam.json'} not found: run `dvc repro` up to the stage that writes it"
    )
