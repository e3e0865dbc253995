"""End to end through the real clients: `dvc repro`, `dvc exp run`, the MLflow API, Ray Train."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from pipeline.data.shards import read_table
from pipeline.model_files import load_model

from .browser import browser_available, render
from .cluster import local_cluster, ray_env
from .conftest import ROOT, tiny_raw

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", RAY_USAGE_STATS_ENABLED="0", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")  # fmt: skip
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(key, None)
    return env


def _run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None, timeout: float = 1200
) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def copy_repo(dest: Path, **overrides: dict) -> Path:
    """The project's files (tracked and not ignored) in a fresh git repo at ``dest``, with the tiny
    params (and ``overrides``)."""
    files = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/", "models/", "metrics/", "plots/", "checkpoints/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_raw(**overrides), sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "tiny"], dest)
    return dest


@pytest.mark.timeout(
    3000
)  # the whole DAG (25 stages) at tiny size: 22 to 24 minutes on 2 cores, beside the rest of the suite
def test_dvc_repro_end_to_end(tmp_path):
    # the MLflow models (torch.export, ~15 s each) are left out here: test_predict logs one of every kind
    repo = copy_repo(tmp_path / "repo", pretrain={"extra_seeds": [1]}, tracking={"log_models": False})
    # every stage joins one private Ray cluster (RAY_ADDRESS), as on a real cluster; it also
    # saves each stage the start-up of its own Ray instance
    with local_cluster(num_cpus=4) as cluster:
        first = _run(
            ["dvc", "repro"],
            repo,
            env={"RAY_ADDRESS": cluster["address"], "RAY_AUTH_MODE": ray_env()["RAY_AUTH_MODE"]},
            timeout=2400,
        )
    for stage in ("prepare", "pretrain@simsiam", "pretrain@swav", "munit", "augment", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    for method in ("simsiam", "swav"):
        assert (repo / f"models/backbone_{method}.pt").is_file()
        assert (repo / f"plots/pretrain_{method}.png").is_file()
        m = json.loads((repo / f"metrics/pretrain_{method}.json").read_text())
        for key in ("knn_top1", "knn_chance", "knn_top1_untrained", "z_std", "loss", "images_per_s", "world_size",
                    "knn_gain", "knn_gain_ci95_vs_seed0"):  # fmt: skip
            assert key in m, key
        assert m["world_size"] == 2 and m["knn_chance"] == pytest.approx(0.1)
    table = json.loads((repo / "metrics/colorize.json").read_text())
    variants = [f"{e}-{g}" for g in ("cgan", "cyclegan") for e in ("scratch", "simsiam", "swav")]
    assert set(table) == {"ab0", *variants, "notes"}
    for name in ("ab0", *variants):
        assert {"l1_ab", "l1_rgb", "psnr", "ssim", "fd", "kid"} <= set(table[name]), name
    assert table["simsiam-cgan"]["world_size"] == 2 and table["notes"]["fd_kid_features"] == "random_resnet"
    styl = json.loads((repo / "metrics/stylize.json").read_text())
    assert set(styl) == {"identity", "palette", "scratch", "simsiam", "swav", "notes"} and "cycle_l1" in styl["swav"]
    assert "| SimSiam + cGAN |" in (repo / "metrics/translation_table.md").read_text()
    for png in ("colorize_l1_ab.png", "colorize_swav_cyclegan_samples.png", "stylize_scratch.png"):
        assert (repo / "plots" / png).stat().st_size > 1000, png
    cls = json.loads((repo / "metrics/classify.json").read_text())
    assert set(cls["classifiers"]) == {"erm", "drs", "git", "oracle"} and -1 <= cls["spearman_size_ekld_erm"] <= 1
    for m in cls["classifiers"].values():
        assert {"balanced_acc", "ekld_mean", "ekld_head", "ekld_tail", "ekld_by_class", "class_sizes"} <= set(m)
        assert len(m["balanced_acc_per_seed"]) == 2  # tiny: 2 seeds
    aug = read_table(repo / "data/augmented", "train", columns=["label", "source", "transform", "transform_seed"])
    assert aug.num_rows == json.loads((repo / "metrics/augment.json").read_text())["generated"] > 0
    assert all(json.loads(t)["model"] == "munit" for t in aug.column("transform").to_pylist())
    munit = json.loads((repo / "metrics/munit.json").read_text())
    assert munit["world_size"] == 2 and munit["style_diversity"] >= 0
    assert (repo / "plots/ekld_by_class.png").stat().st_size > 1000 and (repo / "plots/munit_samples.png").is_file()
    ace = json.loads((repo / "metrics/ace.json").read_text())
    assert set(ace["table"]) == {
        "identity",
        "adain",
        "cyclegan",
        "ace_zero_shot",
        "ace_finetuned",
        "ace_self_style",
        "ace_floor",
    }
    assert sorted(ace["per_seed"]) == ["0", "1"] and sorted(table["simsiam-cgan"]["per_seed"]) == [
        "0",
        "1",
    ]  # tiny: 2 seeds each
    assert {"l1_rgb", "psnr", "ssim", "fd", "kid"} <= set(ace["table"]["ace_zero_shot"])
    assert "| ACE zero-shot (trained on photos only) |" in (repo / "metrics/ace_table.md").read_text()
    assert {"content_similarity_own", "content_similarity_others", "style_diversity"} <= set(ace["multimodal"])
    assert json.loads((repo / "metrics/ace_train.json").read_text())["world_size"] == 2
    assert (repo / "plots/ace_grid.png").stat().st_size > 1000 and (repo / "models/ace_finetune.pt").is_file()
    claims = json.loads((repo / "metrics/claims.json").read_text())
    assert claims["profile"] == "default"
    by_id = {c["id"]: c for c in claims["claims"]}
    assert {"ssl_knn_gain_simsiam", "ssl_knn_gain_swav", "colorize_ssl_beats_scratch_simsiam", "colorize_ssl_beats_scratch_swav",
            "stylize_beats_identity", "ace_zero_shot_beats_identity", "ace_finetune_beats_zero_shot", "oracle_beats_erm_bal_acc",
            "erm_ekld_falls_with_size", "oracle_lowest_ekld", "git_lowers_tail_ekld", "git_keeps_bal_acc", "munit_style_alive"} <= set(by_id)  # fmt: skip
    for c in by_id.values():
        lo, hi = c["ci95"]
        assert lo <= c["value"] <= hi and c["holds"] == (lo > 0), c["id"]
    assert (
        len(by_id["colorize_ssl_beats_scratch_swav"]["per_seed"]) == 2
        and len(by_id["stylize_beats_identity"]["per_seed"]) == 6
    )
    for method in ("simsiam", "swav"):  # pretrain.extra_seeds [1]: two pretraining runs, a t interval over them
        gains = json.loads((repo / f"metrics/pretrain_{method}.json").read_text())["knn_gain_per_seed"]
        ssl = by_id[f"ssl_knn_gain_{method}"]
        assert (
            list(gains) == ["0", "1"]
            and ssl["per_seed"] == list(gains.values())
            and ssl["ci_method"].startswith("t over pretraining seeds")
        )
    assert len(by_id["git_lowers_tail_ekld"]["per_seed"]) == 2 and by_id["munit_style_alive"]["ci_method"].endswith(
        "one MUNIT run"
    )
    assert "| `ace_zero_shot_beats_identity` |" in (repo / "metrics/claims.md").read_text()
    simgan = json.loads((repo / "metrics/simgan.json").read_text())
    assert set(simgan["balanced_acc"]) == {"synthetic", "refined", "real"} and simgan["world_size"] == 2
    assert sorted(simgan["refined_minus_synthetic"]) == ["0", "1"] and simgan["moved"] > 0  # tiny: 2 classifier seeds
    refined = read_table(repo / "data/simgan/refined_digits", "train", columns=["label"])
    assert refined.num_rows == 60 and sorted(set(refined.column("label").to_pylist())) == list(range(10))
    assert {"simgan_refined_beats_synthetic", "simgan_keeps_label"} <= set(by_id)
    assert (repo / "plots/simgan_samples.png").stat().st_size > 1000
    prep = json.loads((repo / "metrics/prepare.json").read_text())
    assert prep["counts"]["photos"]["test"] > 0 and len(prep["digits_lt_counts"]) == 10

    # MLflow: one run per stage with params and per-epoch metrics
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["ssl-i2i"], output_format="list")
    by_name = {r.info.run_name: r for r in runs}
    translation = {f"colorize@{v}" for v in variants} | {f"stylize@{e}" for e in ("scratch", "simsiam", "swav")}
    git = {"munit", "augment", "evaluate", *(f"classify@{m}" for m in ("erm", "drs", "git", "oracle"))}
    ace_stages = {"ace", "ace_finetune", "ace_eval", "claims", "report"}
    assert set(by_name) == {
        "prepare",
        "pretrain@simsiam",
        "pretrain@swav",
        "backbone_scratch",
        "translate_report",
        *translation,
        *git,
        *ace_stages,
        "simgan",
    }
    ace_hist = mlflow.MlflowClient(uri).get_metric_history(by_name["ace"].info.run_id, "loss_contrastive")
    assert sorted(m.step for m in ace_hist) == [0, 1, 2]  # two epochs, then the final metrics
    assert all(r.info.status == "FINISHED" for r in runs)
    sim = by_name["pretrain@simsiam"]
    assert sim.data.params["simsiam.proj_dim"] == "32"
    hist = mlflow.MlflowClient(uri).get_metric_history(sim.info.run_id, "knn_top1")
    assert sorted(m.step for m in hist) == [0, 1, 2]  # two epochs, then the final probe
    cyc = by_name["colorize@swav-cyclegan"]
    assert cyc.data.params["cyclegan.cycle"] == "10.0" and "l1_ab" in cyc.data.metrics
    assert len(mlflow.MlflowClient(uri).get_metric_history(cyc.info.run_id, "val_l1")) == 2

    # every trained network is a DVC output; its MLflow model is left out by tracking.log_models: false, and the run says so
    kinds = {"backbone_simsiam": "backbone", "backbone_scratch": "backbone", "colorize_swav_cgan": "colorizer", "colorize_scratch_cyclegan": "colorizer",
             "stylize_simsiam": "stylizer", "munit": "munit", "classify_git": "classifier", "ace": "ace", "ace_finetune": "ace", "simgan": "refiner"}  # fmt: skip
    for name, kind in kinds.items():
        model = load_model(repo / f"models/{name}.pt")
        assert model.kind == kind and model.seeds == ([0] if kind in ("backbone", "munit", "refiner") else [0, 1]), name
    exp_id = mlflow.get_experiment_by_name("ssl-i2i").experiment_id
    assert mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list") == []
    assert by_name["stylize@swav"].data.tags["models.stylize_swav"] == "not logged (tracking.log_models: false)"
    # predict on the user's own files: a folder the test writes, digits from the prepared test split
    user = tmp_path / "user"
    (user / "photos").mkdir(parents=True)
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()[::8, ::8]).save(user / "photos" / "astronaut.png")
    Image.fromarray(data.chelsea()[:60, :90]).save(user / "photos" / "cat.jpg")
    (user / "photos" / "readme.txt").write_text("not an image")
    digits = read_table(repo / "data/prepared/digits_lt", "test", columns=["image", "label"]).to_pylist()[:6]
    (user / "digits").mkdir()
    for i, row in enumerate(digits):
        (user / "digits" / f"{i}_{row['label']}.png").write_bytes(row["image"])
    predict = [sys.executable, "-m", "stages.predict"]
    for task, model in (("colorize", "models/colorize_simsiam_cgan.pt"), ("stylize", "models/stylize_swav.pt")):
        out = _run(
            [*predict, task, "--model", model, "--input", str(user / "photos"), "--output", str(user / task)], repo
        )
        assert f"predict {task}: 2 images" in out.stdout and "(1 bad files skipped)" in out.stdout
        for name in ("astronaut", "cat"):
            src = np.asarray(Image.open(next((user / "photos").glob(f"{name}.*")))).astype(int)
            got = np.asarray(Image.open(user / task / f"{name}.png")).astype(int)
            assert got.shape == src.shape and np.abs(got - src).mean() > 1, (task, name)
    failed = _run([*predict, "stylize", "--model", "models/stylize_swav.pt", "--input", str(user / "photos"), "--output", str(user / "strict"),
                   "--on-bad-image", "fail"], repo, check=False)  # fmt: skip
    assert (
        failed.returncode == 2
        and failed.stderr.strip().splitlines()[-1].startswith("error: bad image")
        and not (user / "strict").exists()
    )
    again = _run(
        [
            *predict,
            "stylize",
            "--model",
            "models/stylize_swav.pt",
            "--input",
            str(user / "photos"),
            "--output",
            str(user / "stylize"),
        ],
        repo,
        check=False,
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr
    ace_out = _run([*predict, "stylize", "--model", "models/ace.pt", "--style", str(user / "photos"), "--input", str(user / "photos" / "cat.jpg"),
                    "--output", str(user / "ace")], repo)  # fmt: skip
    assert "predict stylize: 1 images" in ace_out.stdout and (user / "ace" / "cat.png").is_file()
    _run(
        [
            *predict,
            "classify",
            "--model",
            "models/classify_oracle.pt",
            "--input",
            str(user / "digits"),
            "--output",
            str(user / "digits.csv"),
        ],
        repo,
    )
    rows = list(csv.DictReader(open(user / "digits.csv")))
    assert len(rows) == 6 and all(abs(sum(float(r[f"p{c}"]) for c in range(10)) - 1) < 1e-3 for r in rows)
    # the report: one page, rendered in headless Chromium with no error and every image decoded
    report = repo / "reports/index.html"
    if browser_available():
        shown = render(report.as_uri())
        assert shown.errors == [] and len(shown.images) >= 8 and all(i["width"] > 0 for i in shown.images)
    assert by_name["claims"].info.run_id in report.read_text()
    recorded = {r["stage"]: r["run_id"] for r in json.loads((repo / "reports/runs.json").read_text())}
    assert recorded["claims"] == by_name["claims"].info.run_id and recorded["prepare"] == by_name["prepare"].info.run_id
    assert "report/index.html" in [
        a.path for a in mlflow.MlflowClient(uri).list_artifacts(by_name["report"].info.run_id, "report")
    ]

    # nothing changed: nothing runs
    second = _run(["dvc", "repro"], repo)
    assert "Running stage" not in second.stdout
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "lock"], repo)

    # one SimSiam param: only pretrain@simsiam reruns (its downstream stages are left out by the target);
    # run in a temporary workspace, its MLflow run still lands in the repo's store, tagged with the experiment
    exp = _run(["dvc", "exp", "run", "--temp", "-n", "lr-01", "-S", "simsiam.lr=0.1", "pretrain@simsiam"], repo)
    assert "Running stage 'pretrain@simsiam'" in exp.stdout
    assert "Running stage 'pretrain@swav'" not in exp.stdout and "Running stage 'prepare'" not in exp.stdout
    (tagged,) = mlflow.search_runs(
        experiment_names=["ssl-i2i"], filter_string="tags.`dvc.exp_name` = 'lr-01'", output_format="list"
    )
    assert tagged.info.run_name == "pretrain@simsiam" and tagged.data.params["simsiam.lr"] == "0.1"


@pytest.mark.timeout(1500)
def test_your_own_images_end_to_end(tmp_path):
    """README "Use your own images": prepare on a user folder (a test/ sub-folder, a bad file),
    `dvc repro` of a colorizer, then predict on new files."""
    from PIL import Image
    from skimage import data

    user = tmp_path / "my_photos"
    (user / "test").mkdir(parents=True)
    for name in ("astronaut", "rocket", "coffee", "chelsea", "hubble_deep_field"):
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((120, 120))
        image.save(user / ("test" if name == "chelsea" else ".") / f"{name}.png")
    (user / "clipboard.png").write_bytes(b"not a png")
    repo = copy_repo(tmp_path / "repo")
    raw = tiny_raw(prepare={"photos": {"source": "folder", "path": str(user), "test_sources": []}})
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(
        ["dvc", "repro", "colorize@scratch-cgan"], repo, env={"RAY_AUTH_MODE": ray_env()["RAY_AUTH_MODE"]}, timeout=1200
    )
    prep = json.loads((repo / "metrics/prepare.json").read_text())
    assert prep["photo_test_sources"] == ["test/chelsea.png"] and len(prep["photo_train_sources"]) == 4
    assert prep["bad_images_skipped"] == 1
    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(data.astronaut()[100:260, 150:330]).convert("L").save(
        new / "grey_crop.png"
    )  # a grey photo to colorize
    out = _run([sys.executable, "-m", "stages.predict", "colorize", "--model", "models/colorize_scratch_cgan.pt", "--input", str(new),
                "--output", str(tmp_path / "colour")], repo)  # fmt: skip
    assert "predict colorize: 1 images" in out.stdout
    colour = np.asarray(Image.open(tmp_path / "colour" / "grey_crop.png")).astype(int)
    assert colour.shape == (160, 180, 3) and np.abs(colour[..., 0] - colour[..., 2]).mean() > 0.5  # no longer grey


def test_stage_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(tiny_raw(pretrain={"width": -3})))
    out = _run([sys.executable, "-m", "stages.pretrain", "simsiam", "--params", str(bad)], ROOT, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {bad}: pretrain.width: Input should be greater than or equal to 4 (got -3)"
    ]
    out = _run([sys.executable, "-m", "stages.pretrain", "byol"], ROOT, check=False)
    assert out.returncode == 2 and out.stderr.strip() == "error: unknown SSL method 'byol' (allowed: simsiam, swav)"
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_raw()))
    out = _run(
        [sys.executable, "-m", "stages.pretrain", "simsiam", "--params", str(good), "--data", str(tmp_path / "none")],
        tmp_path,
        check=False,
    )
    assert out.returncode == 2 and "run the 'prepare' stage first" in out.stderr.strip().splitlines()[-1]


def test_prepare_bad_image_is_one_line_and_keeps_old_output(tmp_path):
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            photos / f"{name}.png"
        )
    (photos / "c.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "old.txt").write_text("previous output")
    raw = tiny_raw(
        prepare={"on_bad_image": "fail", "photos": {"source": "folder", "path": str(photos), "test_sources": ["b.png"]}}
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    res = _run(
        [sys.executable, "-m", "stages.prepare", "--params", str(params), "--out", str(out)], tmp_path, check=False
    )
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"error: bad image {photos / 'c.png'}: ")
    assert line.endswith("(set prepare.on_bad_image: skip to skip such files)")
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_translate_bad_input_is_one_line(tmp_path, tiny_data):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_raw()))
    env_uri = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    base = [sys.executable, "-m", "stages.translate"]
    out = _run([*base, "colorize", "simsiam", "cgan", "--params", str(good), "--data", str(tiny_data),
                "--backbone", str(tmp_path / "none.pt")], ROOT, check=False, env=env_uri)  # fmt: skip
    assert out.returncode == 2
    assert (
        out.stderr.strip().splitlines()[-1]
        == f"error: model file not found: {tmp_path / 'none.pt'}: run `dvc repro pretrain@simsiam` first"
    )
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(tiny_raw(translate={"crop_size": 64})))
    out = _run(
        [*base, "stylize", "scratch", "--params", str(big), "--data", str(tiny_data)], ROOT, check=False, env=env_uri
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip().splitlines()[-1]
        == "error: translate.crop_size=64 is larger than the images (16 px): lower it"
    )
    out = _run([*base, "paint", "scratch"], ROOT, check=False, env=env_uri)
    assert out.stderr.strip() == "error: unknown translation task 'paint' (allowed: colorize, stylize)"


def test_every_stage_depends_on_the_library_code_it_imports():
    """dvc.yaml's deps cover every non-empty pipeline module a stage script imports, transitively:
    a change in the code a stage runs reruns that stage. Bookkeeping modules that cannot change
    a result (logging, atomic writes, plots, errors, params parsing: every value is in params.yaml;
    run names, joining or starting Ray, the GPU monitor) are left out on purpose."""
    from pipeline.fingerprint import imported_files

    bookkeeping = {
        f"pipeline/{m}.py"
        for m in ("tracking", "io", "plots", "errors", "config", "fingerprint", "ray_cluster", "monitor")
    }

    stages = {name: stage for f in ("dvc.yaml", "studies/sweep/dvc.yaml", "studies/data_efficiency/dvc.yaml")
              for name, stage in yaml.safe_load((ROOT / f).read_text())["stages"].items()}  # fmt: skip
    missing = []
    for name, stage in stages.items():
        spec = stage.get("do", stage)
        items = stage.get("foreach", [None])
        for item in items:
            deps = [d.replace("${item}", str(item)) for d in spec["deps"]]
            script = next(d for d in deps if d.startswith("stages/"))
            module = script[:-3].replace("/", ".")
            for f in imported_files(module, ROOT, packages=("pipeline",)).values():
                rel = f.relative_to(ROOT).as_posix()
                if not rel.startswith("pipeline/") or rel in bookkeeping or not f.read_text().strip():
                    continue
                if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps):
                    missing.append(f"{name}{'@' + str(item) if item else ''}: {rel}")
    assert not missing, "dvc.yaml deps miss imported code:\n" + "\n".join(missing)
