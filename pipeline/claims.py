"""The seeds' claims that the study tests, each as an effect over seeds with a 95 % interval.

Every function takes the stages' metrics (the parsed ``metrics/<name>.json`` files, by name) and
returns entries of ``metrics/claims.json`` (:func:`pipeline.metrics.seeds.claim`): ``value`` > 0
means the claim holds on average, ``holds`` means the interval's lower end is > 0.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.config import Params, PretrainParams
from pipeline.metrics.seeds import claim

SSL = ("simsiam", "swav")
ENCODERS = ("scratch", *SSL)
GANS = ("cgan", "cyclegan")
METRICS = (  # the metrics files the claims read
    "pretrain_simsiam", "pretrain_swav", *(f"colorize_{e}_{g}" for e in ENCODERS for g in GANS),
    "stylize", "ace", "classify", "augment", "simgan",
)  # fmt: skip


def _per_seed(metrics: dict[str, Any], key: str) -> dict[str, float]:
    """{seed: metrics[key]} of a stage run once per seed (``per_seed``)."""
    return {seed: float(row[key]) for seed, row in metrics["per_seed"].items()}


def ssl_claims(m: dict[str, dict[str, Any]], profile: str, pre: PretrainParams) -> list[dict[str, Any]]:
    """kNN top-1 of the pretrained backbone minus the untrained one's (the fair baseline: same
    architecture and probe, ``pretrain.baseline_seeds`` random inits)."""
    out = []
    for method in SSL:
        p = m[f"pretrain_{method}"]
        baseline = f"untrained backbone, kNN top-1 {p['knn_top1_untrained']:.3f} (chance {p['knn_chance']:.2f})"
        statement = f"{method} pretraining learns features: kNN top-1 above the untrained backbone's"
        if len(p.get("knn_gain_per_seed", {})) >= 2:  # pretrain.extra_seeds: a t interval over pretraining seeds
            per_seed = p["knn_gain_per_seed"]
            out.append(claim(f"ssl_knn_gain_{method}", statement, list(per_seed.values()), baseline, profile, [int(s) for s in per_seed],
                             "t over pretraining seeds (each gain against the mean of the untrained inits)",
                             detail={"knn_top1": p["knn_top1"], "knn_top1_untrained": p["knn_top1_untrained"]}))  # fmt: skip
            continue
        # one pretraining seed: the interval joins the probe-query bootstrap (paired against init 0)
        # with the spread of the untrained baseline over its inits, as independent normal errors
        lo_q, hi_q = p["knn_gain_ci95_vs_seed0"]
        se_queries = (hi_q - lo_q) / (2 * 1.96)
        se_inits = p["knn_gain_std_over_init_seeds"] / math.sqrt(pre.baseline_seeds)
        half = 1.96 * math.hypot(se_queries, se_inits)
        out.append(claim(
            f"ssl_knn_gain_{method}", statement, [p["knn_gain"]], baseline, profile,
            [pre.seed], "one pretraining seed: normal interval from a paired bootstrap over probe queries and the "
            "spread of the untrained baseline over its init seeds", (p["knn_gain"] - half, p["knn_gain"] + half),
            {"knn_top1": p["knn_top1"], "knn_top1_untrained": p["knn_top1_untrained"]},
        ))  # fmt: skip
    return out


def colorize_claims(m: dict[str, dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """Test ab L1 of the scratch-encoder cGAN minus the SSL-encoder cGAN's, paired by seed (same
    train subset, same batches)."""
    scratch = _per_seed(m["colorize_scratch_cgan"], "l1_ab")
    out = []
    for method in SSL:
        ssl = _per_seed(m[f"colorize_{method}_cgan"], "l1_ab")
        seeds = sorted(set(scratch) & set(ssl), key=int)
        out.append(claim(
            f"colorize_ssl_beats_scratch_{method}", f"a {method} encoder makes a better cGAN colorizer than scratch (test ab L1)",
            [scratch[s] - ssl[s] for s in seeds], f"scratch encoder cGAN, ab L1 {sum(scratch[s] for s in seeds) / len(seeds):.4f}",
            profile, [int(s) for s in seeds], "t over seeds, paired (same train subset and batches)",
            detail={"l1_ab_scratch": [scratch[s] for s in seeds], f"l1_ab_{method}": [ssl[s] for s in seeds]},
        ))  # fmt: skip
    return out


def table_one_claims(m: dict[str, dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """The other comparisons of seed 002's Table I (ab L1: baseline 0.082, SwAV + cGAN 0.069,
    SimSiam + CycleGAN 0.054, SwAV + CycleGAN 0.051), paired by seed (same train subset): the
    CycleGAN colorizer against the cGAN for every encoder, and SwAV against SimSiam for each GAN."""
    l1 = {(e, g): _per_seed(m[f"colorize_{e}_{g}"], "l1_ab") for e in ENCODERS for g in GANS}

    def paired(worse: tuple[str, str], better: tuple[str, str]) -> tuple[list[str], list[float], str]:
        seeds = sorted(set(l1[worse]) & set(l1[better]), key=int)
        mean = sum(l1[worse][s] for s in seeds) / len(seeds)
        return seeds, [l1[worse][s] - l1[better][s] for s in seeds], f"{worse[0]} encoder {worse[1]}, ab L1 {mean:.4f}"

    out = []
    for e in ENCODERS:
        seeds, effect, baseline = paired((e, "cgan"), (e, "cyclegan"))
        out.append(claim(
            f"colorize_cyclegan_beats_cgan_{e}", f"with a {e} encoder the CycleGAN colorizer beats the cGAN (test ab L1; seed 002's Table I)",
            effect, baseline, profile, [int(s) for s in seeds], "t over seeds, paired (same train subset)",
        ))  # fmt: skip
    for g in GANS:
        seeds, effect, baseline = paired(("simsiam", g), ("swav", g))
        out.append(claim(
            f"colorize_swav_beats_simsiam_{g}", f"in the {g} a SwAV encoder beats a SimSiam one (test ab L1; seed 002's Table I)",
            effect, baseline, profile, [int(s) for s in seeds], "t over seeds, paired (same train subset and batches)",
        ))  # fmt: skip
    return out


def stylize_claims(m: dict[str, dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """The identity's score minus each CycleGAN stylizer's (every encoder, every seed), on the test
    photos against their painted twins: L1 (exact fidelity) and KID (the style's distribution)."""
    st = m["stylize"]
    identity = st["identity"]
    encoders = [k for k, v in st.items() if isinstance(v, dict) and "per_seed" in v]  # the stylize@<encoder> rows
    seeds = sorted({int(seed) for enc in encoders for seed in st[enc]["per_seed"]})
    runs = {f"{enc}/{seed}": row for enc in encoders for seed, row in st[enc]["per_seed"].items()}
    method = f"t over {len(runs)} runs (stylize@{{{','.join(encoders)}}} x seeds)"

    def oracle(key: str) -> str:  # the renderer's colour step on the photo (translate_report's "palette" row)
        return f"; palette oracle {st['palette'][key]:.4f}" if "palette" in st else ""

    return [
        claim("stylize_beats_identity", "CycleGAN translates photo to painting: test L1 to the painted twins below the identity's",
              [identity["l1_rgb"] - r["l1_rgb"] for r in runs.values()], f"identity, L1 {identity['l1_rgb']:.4f}{oracle('l1_rgb')}", profile, seeds, method,
              detail={"l1_rgb": {k: r["l1_rgb"] for k, r in runs.items()}}),
        claim("stylize_kid_below_identity", "CycleGAN outputs look like the paintings: KID to the painted twins below the identity's",
              [identity["kid"] - r["kid"] for r in runs.values()], f"identity, KID {identity['kid']:.4f} (paintings against paintings "
              f"{identity.get('kid_paintings_split_half', float('nan')):.4f}){oracle('kid')}", profile, seeds, method,
              detail={"kid": {k: r["kid"] for k, r in runs.items()}}),
    ]  # fmt: skip


def ace_claims(m: dict[str, dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """ACE against the identity and fine-tuned against zero-shot (test L1, per ACE seed); and the
    floor (the best style code per image) against the identity: where it does not hold, no
    zero-shot style can beat the identity and the decoder is what limits ACE."""
    a = m["ace"]
    seeds = sorted(a["per_seed"], key=int)
    table = a["table"]

    def effects(key: str) -> list[float]:
        return [a["per_seed"][s][key] for s in seeds]

    ids = [int(s) for s in seeds]
    return [
        claim("ace_zero_shot_beats_identity", "ACE zero-shot (trained on photos only) paints: test L1 to the twins below the identity's",
              effects("zero_shot_gain_over_identity_l1"), f"identity, L1 {table['identity']['l1_rgb']:.4f}", profile, ids,
              detail={"floor_l1": table["ace_floor"]["l1_rgb"], "zero_shot_l1": table["ace_zero_shot"]["l1_rgb"]}),
        claim("ace_finetune_beats_zero_shot", "fine-tuning ACE on paintings lowers its test L1 to the twins",
              effects("finetune_gain_over_zero_shot_l1"), f"ACE zero-shot, L1 {table['ace_zero_shot']['l1_rgb']:.4f}", profile, ids),
        claim("ace_floor_beats_identity", "diagnostic: with the best style code per image, ACE's decoder gets closer to the twins than the identity",
              effects("floor_gain_over_identity_l1"), f"identity, L1 {table['identity']['l1_rgb']:.4f}", profile, ids),
    ]  # fmt: skip


def invariance_claims(m: dict[str, dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """GIT (seed 000) on the long-tailed digits: every classifier effect paired by classifier seed
    (the methods share seeds), eKLD = mean over classes (tail: classes under the threshold); and
    MUNIT's style against the collapse rule of ``augment`` (one MUNIT run, over test contents)."""
    cl = m["classify"]["classifiers"]
    transform = m["classify"]["transform"]
    seeds = cl["erm"]["seeds"]
    for method in ("drs", "git", "oracle"):
        if cl[method]["seeds"] != seeds:
            raise ValueError(
                f"classify@{method} ran seeds {cl[method]['seeds']}, classify@erm {seeds}: the claims pair them"
            )

    def per_seed(method: str, key: str) -> list[float]:
        return cl[method][f"{key}_per_seed"]

    acc, tail = {k: per_seed(k, "balanced_acc") for k in cl}, {k: per_seed(k, "ekld_tail") for k in cl}
    mean_ek = {k: per_seed(k, "ekld_mean") for k in cl}
    aug = m["augment"]
    margins = aug["style_margin_per_image"]
    erm_acc = sum(acc["erm"]) / len(seeds)
    paired = "t over classifier seeds, paired (same seed: init and batch order)"
    return [
        claim("oracle_beats_erm_bal_acc", f"the oracle (fresh '{transform}' draws for every image) is more accurate than ERM (balanced)",
              [o - e for o, e in zip(acc["oracle"], acc["erm"])], f"ERM, balanced accuracy {erm_acc:.3f}",
              profile, seeds, paired),
        claim("erm_ekld_falls_with_size", "ERM is less invariant on small classes: minus Spearman(class size, eKLD)",
              [-r for r in per_seed("erm", "spearman_size_ekld")], "no relation, Spearman 0", profile, seeds),
        claim("oracle_lowest_ekld", "the oracle has the lowest mean eKLD: the smallest of ERM, DRS and GIT minus the oracle's",
              [min(mean_ek[k][i] for k in ("erm", "drs", "git")) - mean_ek["oracle"][i] for i in range(len(seeds))],
              f"best of ERM / DRS / GIT, mean eKLD {min(sum(mean_ek[k]) / len(seeds) for k in ('erm', 'drs', 'git')):.3f}", profile, seeds, paired),
        claim("git_lowers_tail_ekld", "GIT transfers invariance to the tail: 0.8 x ERM's tail eKLD minus GIT's",
              [0.8 * e - g for e, g in zip(tail["erm"], tail["git"])], f"ERM, tail eKLD {sum(tail['erm']) / len(seeds):.3f}",
              profile, seeds, paired),
        claim("git_keeps_bal_acc", "GIT costs no more than 0.01 balanced accuracy: GIT minus ERM, plus 0.01",
              [g - e + 0.01 for g, e in zip(acc["git"], acc["erm"])], f"ERM, balanced accuracy {erm_acc:.3f}",
              profile, seeds, paired),
        claim("munit_style_alive", "MUNIT's style changes the image more than its reconstruction error (augment's collapse rule)",
              margins, f"style spread = reconstruction error (L1 {aug['recon_l1']:.4f})", profile, [aug["munit_seed"]],
              f"t over {len(margins)} test contents ({aug['styles']} random styles each), one MUNIT run",
              detail={"style_diversity": aug["style_diversity"], "recon_s": aug["recon_s"]}),
    ]  # fmt: skip


def simgan_claims(m: dict[str, dict[str, Any]], profile: str) -> list[dict[str, Any]]:
    """SimGAN (seed 003): classifiers trained on refined synthetic digits against ones trained on the
    raw synthetic digits, both tested on real test digits and paired by classifier seed; and the
    share of images that classifiers of real digits read as their source digit, refined against raw."""
    s = m["simgan"]
    acc, kept = s["balanced_acc"], s["label_kept"]
    seeds = sorted(s["refined_minus_synthetic"], key=int)
    paired = "t over classifier seeds, paired (same seed: init and batch order)"
    return [
        claim("simgan_refined_beats_synthetic", "training on refined synthetic digits beats training on the raw ones, on real test digits (balanced accuracy)",
              [s["refined_minus_synthetic"][k] for k in seeds],
              f"raw synthetic, balanced accuracy {acc['synthetic']['mean']:.3f} (trained on real digits: {acc['real']['mean']:.3f})",
              profile, [int(k) for k in seeds], paired),
        claim("simgan_keeps_label", "refined digits keep their label: the share a real-digit classifier reads as the source digit, refined minus raw",
              [s["label_kept_refined_minus_synthetic"][k] for k in seeds],
              f"raw synthetic digits read as their digit: {sum(kept['synthetic'].values()) / len(seeds):.3f}",
              profile, [int(k) for k in seeds], "t over the real-digit classifiers' seeds"),
    ]  # fmt: skip


def study_claims(m: dict[str, dict[str, Any]], params: Params) -> list[dict[str, Any]]:
    """Every claim of the study (seeds 000-003), in a fixed order."""
    profile = params.tracking.profile
    return (ssl_claims(m, profile, params.pretrain) + colorize_claims(m, profile) + table_one_claims(m, profile)
            + stylize_claims(m, profile) + ace_claims(m, profile) + invariance_claims(m, profile)
            + simgan_claims(m, profile))  # fmt: skip


def markdown(claims: list[dict[str, Any]]) -> str:
    """The claims table: id, value, interval, holds, baseline, seeds."""

    def ci(c: dict[str, Any]) -> str:
        lo, hi = c["ci95"]
        return f"[{'-inf' if lo is None else f'{lo:+.4f}'}, {'inf' if hi is None else f'{hi:+.4f}'}]"

    lines = ["| claim | value | 95 % CI | holds | baseline | seeds |", "|---|---|---|---|---|---|"]
    for c in claims:
        lines.append(
            f"| `{c['id']}` | {c['value']:+.4f} | {ci(c)} | {'yes' if c['holds'] else 'no'} | {c['baseline']} | {len(c['per_seed'])} |"
        )
    return "\n".join(lines) + "\n"
