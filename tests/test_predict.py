"""Model files, the serving modules, `stages.predict` and the MLflow models, on small real networks."""

from __future__ import annotations

import csv
import subprocess
import sys
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.color import rgb_to_lab
from pipeline.errors import UserError
from pipeline.model_files import load_model, save_backbone, save_model, save_translator, servables
from pipeline.models.classifier import ResNet20
from pipeline.models.resnet import ResNet
from pipeline.models.unet import DomainGenerator
from pipeline.predict import predict
from pipeline.tracking import model_file_from_uri, stage_run

from .conftest import ROOT


def translator_file(path, task: str, seeds=(0, 1), **backbone):
    """A translator file of small random generators, as the colorize/stylize stages write it
    (``backbone``: ResNet's ``arch`` and ``stem``)."""
    spec = ResNet(4, 3, **backbone).spec()
    fwd, back = ("colorize", "decolorize") if task == "colorize" else ("rgb", "rgb")
    runs = []
    for seed in seeds:
        torch.manual_seed(seed)
        models = {
            "G": DomainGenerator(ResNet(4, 3, **backbone), fwd, 4).state_dict(),
            "F": DomainGenerator(ResNet(4, 3, **backbone), back, 4).state_dict(),
        }
        config = SimpleNamespace(task=task, gan="cyclegan", seed=seed, backbone_spec=spec,
                                 translate=SimpleNamespace(decoder_width=4, crop_size=16))  # fmt: skip
        runs.append((config, {"models": models}))
    save_translator(path, runs, "scratch")
    return path


def test_a_colorizer_on_the_imagenet_stems_resnet50_pads_odd_images_to_its_multiple_of_32(tmp_path, images):
    model = load_model(translator_file(tmp_path / "c.pt", "colorize", seeds=(0,), arch="resnet50", stem="imagenet"))
    assert model.meta["backbone_spec"]["arch"] == "resnet50_imagenet"
    summary = predict("colorize", model, [images], tmp_path / "out", size=40)  # 40 x 30 and 40 x 28: padded to 64 x 32
    assert summary["images"] == 2
    src = np.asarray(Image.open(images / "sub" / "coffee.jpg"))
    assert np.asarray(Image.open(tmp_path / "out" / "sub" / "coffee.png")).shape == src.shape


def classifier_file(path):
    torch.manual_seed(0)
    seeds = {s: {"classifier": ResNet20(10, 1, 2).state_dict()} for s in (0, 3)}
    save_model(path, "classifier", {"width": 2, "num_classes": 10, "method": "erm"}, seeds)
    return path


@pytest.fixture
def images(tmp_path):
    """A user folder: two photos of odd sizes (one in a sub-folder), plus three bad files."""
    from skimage import data

    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(data.astronaut()[::4, ::3]).save(root / "astronaut.png")  # 128 x 171
    Image.fromarray(data.coffee()[:50, :70]).save(root / "sub" / "coffee.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "tiny.png")
    return root


def test_colorize_keeps_the_input_luminance_at_full_size(tmp_path, images):
    model = load_model(translator_file(tmp_path / "c.pt", "colorize"))
    summary = predict("colorize", model, [images], tmp_path / "out")
    assert summary["images"] == 2 and summary["skipped"] == 3
    src = np.asarray(Image.open(images / "astronaut.png"))
    out = np.asarray(Image.open(tmp_path / "out" / "astronaut.png"))
    assert out.shape == src.shape and (tmp_path / "out" / "sub" / "coffee.png").is_file()
    lab_in, lab_out = (rgb_to_lab(torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255) for a in (src, out))
    assert (lab_in[:, 0] - lab_out[:, 0]).abs().mean() < 1.5  # L kept (up to 8-bit rounding and gamut clipping)
    assert (lab_out[:, 1:] - lab_in[:, 1:]).abs().mean() > 0.5  # ab is the model's, not the input's


def test_stylize_is_the_generator_resized_back_and_each_seed_its_own(tmp_path, images):
    path = translator_file(tmp_path / "s.pt", "stylize")
    model = load_model(path)
    predict("stylize", model, [images / "sub"], tmp_path / "s0", size=32)
    predict("stylize", model, [images / "sub"], tmp_path / "s1", size=32, seed=1)
    predict("stylize", model, [images / "sub"], tmp_path / "back", size=32, reverse=True)
    outs = {k: np.asarray(Image.open(tmp_path / k / "coffee.png")).astype(int) for k in ("s0", "s1", "back")}
    src = np.asarray(Image.open(images / "sub" / "coffee.jpg")).astype(int)
    assert all(o.shape == src.shape for o in outs.values())
    gaps = [
        float(np.abs(a - b).mean())
        for a, b in ((outs["s0"], src), (outs["s0"], outs["s1"]), (outs["s0"], outs["back"]))
    ]
    assert gaps[0] > 5 and gaps[1] > 0.2 and gaps[2] > 0.2, gaps  # untrained generators: near grey, each its own
    # at a size where nothing is resized the output is exactly the serving module's
    x = torch.from_numpy(src[:48, :64].astype(np.uint8).copy())
    Image.fromarray(x.numpy().astype(np.uint8)).save(tmp_path / "crop.png")
    predict("stylize", model, [tmp_path / "crop.png"], tmp_path / "crop_out", size=64)
    with torch.no_grad():
        want = model.serving_modules()["stylize"](x.permute(2, 0, 1)[None].float() / 255)
    got = (
        torch.from_numpy(np.asarray(Image.open(tmp_path / "crop_out" / "crop.png")).copy())
        .permute(2, 0, 1)[None]
        .float()
        / 255
    )
    assert (got - want).abs().max() <= 1 / 255 + 1e-6


def test_classify_writes_the_class_probabilities_of_the_module(tmp_path, images):
    model = load_model(classifier_file(tmp_path / "k.pt"))
    assert model.seeds == [0, 3]
    predict("classify", model, [images], tmp_path / "p.csv", seed=3)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["file"] for r in rows] == ["astronaut.png", "sub/coffee.jpg"]
    probs = np.array([[float(r[f"p{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert [int(r["predicted"]) for r in rows] == probs.argmax(1).tolist()
    other = tmp_path / "p0.csv"
    predict("classify", model, [images], other, seed=0)
    assert open(other).read() != open(tmp_path / "p.csv").read()  # seed 3's network, not seed 0's


def test_bad_files_skip_with_a_count_or_stop_with_one_line_and_no_output(tmp_path, images):
    model = load_model(translator_file(tmp_path / "c.pt", "colorize"))
    with pytest.raises(UserError, match=r"bad image .*(broken|notes|tiny)"):
        predict("colorize", model, [images], tmp_path / "out", on_bad_image="fail")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(UserError, match="no image files"):
        predict("colorize", model, [images / "notes.txt"], tmp_path / "out")
    with pytest.raises(UserError, match="no usable image"):
        predict("colorize", model, [images / "tiny.png", images / "broken.png"], tmp_path / "out")
    with pytest.raises(UserError, match="input not found"):
        predict("colorize", model, [tmp_path / "nowhere"], tmp_path / "out")


def test_an_existing_output_is_replaced_only_when_asked(tmp_path, images):
    model = load_model(translator_file(tmp_path / "c.pt", "colorize"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists: pass --overwrite"):
        predict("colorize", model, [images], out)
    assert (out / "keep.txt").read_text() == "mine"
    predict("colorize", model, [images], out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "astronaut.png").is_file()


def test_a_model_of_another_kind_or_a_foreign_file_is_one_line(tmp_path, images):
    with pytest.raises(UserError, match="is a classifier model: colorize needs a colorizer model"):
        predict("colorize", load_model(classifier_file(tmp_path / "k.pt")), [images], tmp_path / "o")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a model file of this pipeline"):
        load_model(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a model file of this pipeline"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="no model of seed 7"):
        predict("classify", load_model(classifier_file(tmp_path / "k.pt")), [images], tmp_path / "o.csv", seed=7)


def test_stage_models_are_mlflow_models_that_predict_loads_by_uri(tmp_path, images, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = classifier_file(tmp_path / "classify_erm.pt")
    with stage_run("classify@erm", {}, "models-test", register="digits") as run:
        uris = run.log_models(path, *servables(path))
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("models-test")
    logged = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert [m.name for m in logged] == ["classify"] and logged[0].source_run_id == run.run_id
    assert str(mlflow.MlflowClient().get_registered_model("digits").latest_versions[0].version) == "1"
    # the MLflow model (a torch.export program, no pickle) computes what the model file's module computes
    x = torch.rand(3, 3, 24, 20)
    with torch.no_grad():
        assert torch.allclose(
            mlflow.pytorch.load_model(uris["classify"])(x), load_model(path).serving_modules()["classify"](x), atol=1e-5
        )
    # predict takes the model URI (and the registry name) as it takes the file
    assert load_model(model_file_from_uri(uris["classify"], tmp_path / "dl")).kind == "classifier"
    env = {"MLFLOW_TRACKING_URI": uri, "PATH": str(ROOT / ".venv/bin") + ":/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "stages.predict", "classify", "--model", "models:/digits/1", "--input", str(images),
                          "--output", str(tmp_path / "p.csv")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "predict classify: 2 images" in out.stdout and "(3 bad files skipped)" in out.stdout
    assert len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 2
    bad = subprocess.run([sys.executable, "-m", "stages.predict", "classify", "--model", "models:/nothing/1", "--input", str(images),
                          "--output", str(tmp_path / "q.csv")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: MLflow model models:/nothing/1 not found"
    )


def model_files(root, params) -> dict[str, object]:
    """One small model file of every kind, in the layout its stage writes."""
    from pipeline.ace import save_ace
    from pipeline.models.ace import build as build_ace
    from pipeline.models.munit import MUNIT

    torch.manual_seed(0)
    backbone = ResNet(4, 3)
    mp = params.munit
    munit = MUNIT(1, mp.dim, mp.style_dim, mp.n_down, mp.n_res, mp.mlp_dim)
    save_backbone(root / "backbone.pt", backbone, "scratch", 0)
    save_model(root / "munit.pt", "munit", {"munit": mp.model_dump()}, {mp.seed: {"munit": munit.state_dict()}})
    save_ace(
        root / "ace.pt",
        params,
        backbone,
        {0: {"ace": build_ace(params.ace, ResNet(4, 3))[0].state_dict()}},
        "zero_shot",
    )
    from pipeline.models.simgan import Refiner

    save_model(root / "refiner.pt", "refiner", {"simgan": params.simgan.model_dump()},
               {0: {"refiner": Refiner(1, params.simgan.width, params.simgan.blocks).state_dict()}})  # fmt: skip
    return {"backbone": root / "backbone.pt", "colorizer": translator_file(root / "colorize.pt", "colorize"), "refiner": root / "refiner.pt",
            "stylizer": translator_file(root / "stylize.pt", "stylize"), "munit": root / "munit.pt",
            "classifier": classifier_file(root / "classify.pt"), "ace": root / "ace.pt"}  # fmt: skip


@pytest.mark.timeout(600)
def test_every_kind_of_model_file_logs_mlflow_models_that_compute_what_its_modules_compute(
    tmp_path, monkeypatch, tiny_params
):
    """What each training stage logs (``tracking.log_models``): every serving module of every kind is
    a torch.export program in MLflow whose output is the module's, on inputs other than the example."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    files = model_files(tmp_path, tiny_params)
    assert {kind: load_model(path).kind for kind, path in files.items()} == {kind: kind for kind in files}
    with stage_run("every-kind", {}, "models-test") as run:
        uris = {kind: run.log_models(path, *servables(path)) for kind, path in files.items()}
    assert {k: sorted(u) for k, u in uris.items()} == {"backbone": ["embed"], "colorizer": ["colorize"], "stylizer": ["stylize", "unstylize"],
                                                       "munit": ["restyle"], "classifier": ["classify"], "ace": ["stylize_like"], "refiner": ["refine"]}  # fmt: skip
    g = torch.Generator().manual_seed(1)
    for kind, path in files.items():
        model = load_model(path)
        for name, module in model.serving_modules().items():
            example = servables(path)[0][name][1]
            other = tuple(torch.rand(3, *t.shape[1:2], 48, 64, generator=g) if t.dim() == 4 else torch.randn(3, *t.shape[1:], generator=g)
                          for t in example)  # fmt: skip
            if name == "stylize_like":
                other = (other[0], torch.rand(2, 3, 48, 64, generator=g))
            with torch.no_grad():
                want, got = module(*other), mlflow.pytorch.load_model(uris[kind][name])(*other)
            assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5), (kind, name)


def test_models_off_logs_a_tag_and_no_model_and_register_needs_them(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = classifier_file(tmp_path / "classify_erm.pt")
    with stage_run("classify@erm", {}, "models-off", log_models=False) as run:
        assert run.log_models(path, *servables(path)) == {}
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("models-off")
    assert mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list") == []
    assert mlflow.get_run(run.run_id).data.tags["models.classify_erm"] == "not logged (tracking.log_models: false)"
    with pytest.raises(UserError, match="--register digits needs the MLflow models: set tracking.log_models: true"):
        with stage_run("classify@erm", {}, "models-off", log_models=False, register="digits"):
            pass


def test_colorize_a_16_bit_grey_photo_keeps_its_luminance_instead_of_turning_white(tmp_path):
    """A 16-bit greyscale PNG (PIL mode I;16) came out almost white (mean 253 for a mid-grey
    picture): the decoder clipped it at 255. Scaled to 8 bits, its luminance is the 8-bit file's."""
    from skimage import data

    grey8 = data.camera()[::4, ::4]
    (tmp_path / "in").mkdir()
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "in" / "deep.png")
    Image.fromarray(grey8).save(tmp_path / "in" / "plain.png")
    model = load_model(translator_file(tmp_path / "c.pt", "colorize"))
    predict("colorize", model, [tmp_path / "in"], tmp_path / "out")
    deep, plain = (np.asarray(Image.open(tmp_path / "out" / f"{n}.png")) for n in ("deep", "plain"))
    assert np.array_equal(deep, plain)
    lum = rgb_to_lab(torch.from_numpy(deep.copy()).permute(2, 0, 1)[None].float() / 255)[:, 0].mean().item()
    want = (
        rgb_to_lab(torch.from_numpy(np.repeat(grey8[..., None], 3, 2)).permute(2, 0, 1)[None].float() / 255)[:, 0]
        .mean()
        .item()
    )
    assert abs(lum - want) < 1.5
