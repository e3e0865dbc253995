import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import parse_params
from pipeline.data import sources
from pipeline.data.longtail import assign_counts, class_counts, exp_counts, zipf_counts
from pipeline.data.painting import brush_strokes, edge_darkening, painterly, saturate
from pipeline.data.prepare import _paint, build_digits_lt, build_photo_sets, split_photos
from pipeline.data.shards import Record, decode_png, read_images, read_rows, read_table, write_set
from pipeline.data.transforms import apply_nuisance, draw_nuisance, kuwahara, posterize, random_patches, to_tensor
from pipeline.errors import UserError
from pipeline.io import atomic_dir, load_torch, save_torch, write_json

from .conftest import tiny_raw


def test_read_rows_takes_rows_across_shards_without_reading_the_set_whole(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(11)]
    write_set(
        tmp_path / "set", [Record(im, "photo", "train", f"s{i}", i) for i, im in enumerate(images)], rows_per_shard=4
    )
    assert len(list((tmp_path / "set").glob("train-*.parquet"))) == 3
    table = read_rows(tmp_path / "set", "train", np.array([0, 3, 4, 9, 10]), ["image", "label"])
    assert table.column("label").to_pylist() == [0, 3, 4, 9, 10]
    assert all(
        np.array_equal(decode_png(b), images[i]) for b, i in zip(table.column("image").to_pylist(), [0, 3, 4, 9, 10])
    )
    assert read_rows(tmp_path / "set", "train", np.array([], dtype=int), ["label"]).num_rows == 0
    with pytest.raises(IndexError, match="outside the 11 rows"):
        read_rows(tmp_path / "set", "train", np.array([11]), ["label"])


def test_parquet_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    recs = [
        Record(rgb, "photo", "train", "a", 3),
        Record(
            grey,
            "digits",
            "test",
            "b",
            1,
            clean=grey[::-1].copy(),
            transform={"name": "rot", "angle": 5.0},
            transform_seed=9,
        ),
    ]
    counts = write_set(tmp_path / "set", recs, rows_per_shard=1)
    assert counts == {"train": 1, "test": 1}
    t = read_table(tmp_path / "set", "test")
    row = t.to_pylist()[0]
    assert (row["height"], row["width"], row["channels"], row["label"], row["domain"]) == (4, 6, 1, 1, "digits")
    np.testing.assert_array_equal(decode_png(row["image"]), grey)
    np.testing.assert_array_equal(decode_png(row["clean"]), grey[::-1])
    assert json.loads(row["transform"]) == {"name": "rot", "angle": 5.0} and row["transform_seed"] == 9
    images, labels, srcs = read_images(tmp_path / "set", "train")
    np.testing.assert_array_equal(images[0], rgb)
    assert labels.tolist() == [3] and srcs == ["a"]
    assert read_table(tmp_path / "set", "train").column("clean").to_pylist() == [None]


def test_missing_shards_name_the_stage(tmp_path):
    with pytest.raises(UserError, match="run the 'prepare' stage"):
        read_table(tmp_path / "nothing", "train")


def test_images_become_plain_nchw_tensors_so_cpu_convolutions_avoid_the_nhwc_path():
    """A permuted (H, W, C) array is channels_last in memory, and PyTorch's CPU convolutions then run
    oneDNN's nhwc kernels, whose 1x1 stride-2 backward hangs or returns wrong weight gradients when
    the input has fewer channels than the SIMD block (oneDNN issue 6035; a test's ResNet shortcut
    with 4 input channels spun for 30 minutes)."""
    import torch

    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = to_tensor(images)
    assert x.shape == (2, 3, 8, 8) and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[1, 2], torch.from_numpy(images[1, :, :, 2]).float() / 255)
    shortcut = torch.nn.Conv2d(3, 8, 1, 2, bias=False)
    assert shortcut(x).is_contiguous()  # the convolution keeps the plain layout


def test_rotation_angles_are_uniform_over_the_circle():
    rng = np.random.default_rng(0)
    angles = np.array([draw_nuisance("rot", rng)["angle"] for _ in range(4000)])
    assert angles.min() >= -180 and angles.max() <= 180
    hist, _ = np.histogram(angles, bins=4, range=(-180, 180))
    assert np.all(np.abs(hist / 1000 - 1) < 0.1)


def test_background_levels_cover_0_to_99():
    rng = np.random.default_rng(1)
    levels = np.array([draw_nuisance("bg", rng)["level"] for _ in range(5000)])
    assert levels.min() == 0 and levels.max() == 99 and len(np.unique(levels)) == 100
    img = np.zeros((8, 8), np.uint8)
    img[2:5, 2:5] = 200
    out = apply_nuisance(img, {"name": "bg", "level": 42})
    assert np.all(out[img == 0] == 42) and np.all(out[img == 200] == 200)


def test_dilation_erosion_mix_and_effect():
    rng = np.random.default_rng(2)
    draws = [draw_nuisance("dil", rng) for _ in range(5000)]
    dil = [d for d in draws if d["op"] == "dilate"]
    assert abs(len(dil) / len(draws) - 0.6) < 0.03
    assert {d["size"] for d in dil} == {2, 3, 4}
    assert {d["size"] for d in draws if d["op"] == "erode"} == {1, 2}
    img = np.zeros((9, 9), np.uint8)
    img[3:6, 3:6] = 255
    assert (apply_nuisance(img, {"name": "dil", "op": "dilate", "size": 3}) > 0).sum() > 9
    assert (apply_nuisance(img, {"name": "dil", "op": "erode", "size": 2}) > 0).sum() < 9


def test_rotation_by_zero_is_identity_and_unknown_name_fails():
    img = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    np.testing.assert_array_equal(apply_nuisance(img, {"name": "rot", "angle": 0.0}), img)
    with pytest.raises(ValueError, match="unknown nuisance transform 'blur'"):
        draw_nuisance("blur", np.random.default_rng(0))


def test_long_tail_counts():
    assert zipf_counts(10, 150, 5, 1.5) == [150, 53, 28, 18, 13, 10, 8, 6, 5, 5]
    exp = exp_counts(10, 150, 5)
    assert exp[0] == 150 and exp[-1] == 5 and all(a >= b for a, b in zip(exp, exp[1:]))
    assert class_counts("exp", 10, 150, 5, 1.5) == exp
    labels = np.repeat(np.arange(10), 3)
    a = assign_counts(labels, zipf_counts(10, 150, 5, 1.5), np.random.default_rng(0))
    b = assign_counts(labels, zipf_counts(10, 150, 5, 1.5), np.random.default_rng(0))
    assert a == b and sorted(a.values(), reverse=True) == zipf_counts(10, 150, 5, 1.5)


def test_digits_lt_has_one_recorded_draw_per_train_image():
    p = parse_params(tiny_raw()).prepare
    sets = build_digits_lt(p)
    train = [r for r in sets.sets["digits_lt"] if r.split == "train"]
    test = [r for r in sets.sets["digits_lt"] if r.split == "test"]
    assert sorted(np.bincount([r.label for r in train]), reverse=True) == class_counts("zipf", 10, 20, 2, 1.5)
    assert np.all(np.bincount([r.label for r in test]) == 3)
    for r in train[:20]:
        # the stored draw re-creates the stored image from the clean one
        again = apply_nuisance(r.clean, draw_nuisance("rot", np.random.default_rng(r.transform_seed)))
        np.testing.assert_array_equal(again, r.image)
    assert all(r.transform is None and r.clean is None for r in test)
    assert {r.source for r in train}.isdisjoint({r.source for r in test})


def test_digits_lt_refuses_more_images_than_a_class_has():
    p = parse_params(tiny_raw(prepare={"digits_lt": {"n_max": 170, "test_per_class": 24}})).prepare
    with pytest.raises(UserError, match="digit class .* fewer than"):
        build_digits_lt(p)


def test_photo_split_is_by_source_and_paintings_pair_with_test_photos():
    p = parse_params(tiny_raw()).prepare
    sets = build_photo_sets(p, sources.BadImages("fail")).sets
    train_src = {r.source.split(":")[0] for r in sets["photos"] if r.split == "train"}
    test_src = {r.source.split(":")[0] for r in sets["photos"] if r.split == "test"}
    assert test_src == set(p.photos.test_sources) and train_src.isdisjoint(test_src)
    test_photos = {r.source: r.image for r in sets["photos"] if r.split == "test"}
    test_paint = {r.source: r.image for r in sets["painting"] if r.split == "test"}
    assert test_photos.keys() == test_paint.keys()
    for src, img in test_photos.items():
        np.testing.assert_array_equal(test_paint[src], _paint(img, p))
    # train photos come from the left region, train paintings from the right one
    for r in sets["photos"]:
        if r.split == "train":
            name, y, x, side = r.source.split(":")
            full = next(f for f in sets["photos_full"] if f.source == name)
            assert int(x) + int(side) <= round(0.5 * full.image.shape[1])
    for r in sets["painting"]:
        if r.split == "train":
            name, y, x, side = r.source.split(":")
            full = next(f for f in sets["photos_full"] if f.source == name)
            assert int(x) >= round(0.5 * full.image.shape[1])


def test_unknown_test_source_lists_available_names():
    photos = [sources.NamedImage(np.zeros((4, 4, 3), np.uint8), n) for n in ("a", "b")]
    with pytest.raises(UserError, match=r"unknown source\(s\) \['c'\] \(available: a, b\)"):
        split_photos(photos, ["c"])


def test_painterly_filter_is_deterministic_and_flat_stays_flat():
    img = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(painterly(img, 2, 3, 1.6, 6, 0.7), painterly(img, 2, 3, 1.6, 6, 0.7))
    flat = np.full((10, 10, 3), 102, np.uint8)  # 102 = 2 * 255 / 5: a palette level
    np.testing.assert_array_equal(kuwahara(flat, 2), flat)
    np.testing.assert_array_equal(painterly(flat, 2, 3, 1.6, 6, 0.7), flat)  # no edge, no colour: nothing to paint
    assert len(np.unique(posterize(img, 4))) <= 4


def test_brush_strokes_follow_the_edges_and_contours_get_ink():
    stripes = np.zeros((24, 24, 3))
    stripes[::4] = 255.0  # horizontal lines: strokes run along them, not across
    out = brush_strokes(stripes, 3)
    np.testing.assert_allclose(out[4:20, 4:20], stripes[4:20, 4:20], atol=1e-6)
    assert np.abs(brush_strokes(stripes.transpose(1, 0, 2), 3) - stripes.transpose(1, 0, 2)).max() < 1e-6
    step = np.full((16, 16, 3), 100.0)
    step[:, 8:] = 200.0
    dark = edge_darkening(step, 1.0)
    assert dark[:, 7].mean() < 50  # the dark side of the contour gets an ink line
    assert np.allclose(dark[:, :4], 100.0, atol=1) and np.allclose(
        dark[:, 8:], 200.0
    )  # away from it, and the bright side, stay
    pale = np.full((4, 4, 3), (140.0, 120.0, 100.0))
    assert np.isclose(np.ptp(saturate(pale, 2.0)[0, 0]), 2 * np.ptp(pale[0, 0]))


def test_kuwahara_keeps_an_edge_sharp():
    img = np.zeros((12, 12, 3), np.uint8)
    img[:, 6:] = 200
    out = kuwahara(img, 2)
    assert set(np.unique(out)) == {0, 200}


def test_patches_stay_inside_their_region():
    img = np.zeros((50, 100, 3), np.uint8)
    for patch, y, x, side in random_patches(img, 50, 8, (0.1, 0.5), np.random.default_rng(0), (0.5, 1.0)):
        assert patch.shape == (8, 8, 3) and x >= 50 and x + side <= 100 and y + side <= 50


def _write_png(path, rng, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def test_folder_with_class_subfolders_and_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    _write_png(tmp_path / "cats" / "a.png", rng)
    _write_png(tmp_path / "dogs" / "b.png", rng)
    (tmp_path / "dogs" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "dogs" / "notes.txt").write_text("hello")
    bad = sources.BadImages("skip")
    images = sources.load_folder(tmp_path, bad)
    assert [(i.name, i.label) for i in images] == [("cats/a.png", 0), ("dogs/b.png", 1)]
    assert len(bad.skipped) == 2
    assert "broken.png" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"bad image .*broken.png"):
        sources.load_folder(tmp_path, sources.BadImages("fail"))


def test_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(UserError, match="image folder not found"):
        sources.load_folder(tmp_path / "missing", sources.BadImages("skip"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no readable images"):
        sources.load_folder(tmp_path / "empty", sources.BadImages("skip"))


def test_cyclegan_folder(tmp_path):
    rng = np.random.default_rng(0)
    for part in ("trainA", "trainB", "testA", "testB"):
        _write_png(tmp_path / part / "x.png", rng, (40, 40))
    raw = tiny_raw(prepare={"photos": {"source": "cyclegan", "path": str(tmp_path), "patches_per_image": 2}})
    sets = build_photo_sets(parse_params(raw).prepare, sources.BadImages("fail")).sets
    assert {(r.domain, r.split) for r in sets["painting"]} == {("painting", "train"), ("painting", "test")}
    assert len(sets["photos"]) == 4
    (tmp_path / "testB" / "x.png").unlink()
    (tmp_path / "testB").rmdir()
    with pytest.raises(UserError, match="missing testB"):
        build_photo_sets(parse_params(raw).prepare, sources.BadImages("fail"))


def test_grey_only_photos_and_too_small_photos_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(path)
    raw = tiny_raw(prepare={"photos": {"source": "folder", "path": str(tmp_path), "test_sources": ["b.png"]}})
    with pytest.raises(UserError, match="only grey images"):
        build_photo_sets(parse_params(raw).prepare, sources.BadImages("fail"))
    raw = tiny_raw(
        prepare={"photos": {"source": "folder", "path": str(tmp_path), "test_sources": ["b.png"], "patch_size": 64}}
    )
    _write_png(tmp_path / "a.png", rng, (40, 40))
    with pytest.raises(UserError, match="smaller than prepare.photos.patch_size=64"):
        build_photo_sets(parse_params(raw).prepare, sources.BadImages("fail"))


def test_cifar_without_download_names_the_option(tmp_path):
    with pytest.raises(UserError, match="download: true"):
        sources.load_cifar("cifar10", tmp_path, download=False, train=True)


def test_cifar_from_local_files(tmp_path, monkeypatch):
    """The CIFAR-10 loader reads torchvision's on-disk layout (a tiny batch the test writes)."""
    import pickle

    from torchvision.datasets import CIFAR10

    base = tmp_path / CIFAR10.base_folder
    base.mkdir()
    rng = np.random.default_rng(0)
    for fname, _ in CIFAR10.train_list + CIFAR10.test_list:
        batch = {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 1, 2]}
        (base / fname).write_bytes(pickle.dumps(batch))
    (base / CIFAR10.meta["filename"]).write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # checksums belong to the real files
    images = sources.load_cifar("cifar10", tmp_path, download=False, train=False)
    assert len(images) == 3 and images[0].image.shape == (32, 32, 3) and [i.label for i in images] == [0, 1, 2]


def test_atomic_dir_keeps_old_output_on_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    write_json(tmp_path / "m.json", {"x": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_the_same_weights_save_to_the_same_bytes(tmp_path):
    """A rerun that trains the same weights must leave the file's hash (DVC's view of it) alone."""
    import torch

    obj = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "method": "scratch"}
    save_torch(tmp_path / "a.pt", obj)
    save_torch(tmp_path / "b.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(load_torch(tmp_path / "b.pt")["state_dict"]["w"], obj["state_dict"]["w"])


def test_a_user_folder_splits_by_its_test_subfolder_or_a_seeded_fraction(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d", "e"):
        _write_png(tmp_path / "flat" / f"{name}.png", rng, (40, 40))
        _write_png(tmp_path / "withtest" / ("test" if name in "de" else "train") / f"{name}.png", rng, (40, 40))

    def split(folder, **photos):
        p = parse_params(
            tiny_raw(
                prepare={"photos": {"source": "folder", "path": str(tmp_path / folder), "test_sources": [], **photos}}
            )
        ).prepare
        info = build_photo_sets(p, sources.BadImages("fail")).info
        return info["photo_train_sources"], info["photo_test_sources"]

    assert split("withtest") == (["train/a.png", "train/b.png", "train/c.png"], ["test/d.png", "test/e.png"])
    train, test = split("flat", test_fraction=0.4)
    assert len(test) == 2 and sorted(train + test) == [f"{n}.png" for n in "abcde"]
    assert split("flat", test_fraction=0.4) == (train, test)  # seeded
    assert split("flat", test_sources=["c.png"]) == (
        ["a.png", "b.png", "d.png", "e.png"],
        ["c.png"],
    )  # named sources win
    with pytest.raises(UserError, match="leaves 0 train and 5 test photos"):
        split_photos([sources.NamedImage(np.zeros((40, 40, 3), np.uint8), f"test/{n}.png") for n in "abcde"], [])


def test_skip_skips_and_counts_every_photo_prepare_cannot_use(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name in ("a", "b", "c"):
        _write_png(root / "cats" / f"{name}.png", rng, (40, 40))
    (root / "dogs").mkdir()  # an empty class
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(root / "cats" / "dot.png")  # too small
    Image.fromarray(rng.integers(0, 2**16, (40, 40), dtype=np.uint16)).save(
        root / "cats" / "deep.png"
    )  # 16-bit grey mode
    png = (root / "cats" / "a.png").read_bytes()
    (root / "cats" / "cut.png").write_bytes(png[: len(png) // 2])  # truncated
    (root / "cats" / "notes.txt").write_text("not an image")
    raw = tiny_raw(prepare={"photos": {"source": "folder", "path": str(root), "test_sources": ["cats/c.png"]}})
    bad = sources.BadImages("skip")
    sets = build_photo_sets(parse_params(raw).prepare, bad)
    assert sorted(Path(s).name for s in bad.skipped) == ["cut.png", "dot.png", "notes.txt"]
    assert sets.info["photo_train_sources"] == [
        "cats/a.png",
        "cats/b.png",
        "cats/deep.png",
    ]  # a 16-bit grey PNG converts
    err = capsys.readouterr().err
    assert (
        "1x1 px is smaller than prepare.photos.patch_size=16" in err
        and "class folder" in err
        and "dogs has no usable image" in err
    )
    with pytest.raises(UserError, match=r"bad image .*(cut|dot|notes)"):
        build_photo_sets(parse_params(raw).prepare, sources.BadImages("fail"))


def _reference_rgb(h=40, w=56):
    """A smooth colour picture whose rows and columns differ, so that a rotation shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], axis=2).astype(np.uint8)


def _decoder_files(root):
    """The file kinds users have, each with the uint8 RGB it must decode to (and a tolerance)."""
    root.mkdir(parents=True, exist_ok=True)
    ref = _reference_rgb()
    grey = ref[..., 0]
    cases = {}
    Image.fromarray(grey.astype(np.uint16) * 257).save(root / "grey16.png")  # PIL mode I;16
    cases["grey16.png"] = (np.repeat(grey[..., None], 3, 2), 0)
    Image.fromarray((grey.astype(np.int32) * 257), mode="I").save(
        root / "grey32.tif"
    )  # 16-bit data in a 32-bit container
    cases["grey32.tif"] = (np.repeat(grey[..., None], 3, 2), 0)
    Image.fromarray(grey.astype(np.float32) / 255, mode="F").save(root / "float.tif")
    cases["float.tif"] = (np.repeat(grey[..., None], 3, 2), 0)
    rgba = np.dstack([ref, np.where(np.arange(56) < 28, 255, 0)[None, :].repeat(40, 0).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "alpha.png")  # right half transparent: white, not its hidden colour
    cases["alpha.png"] = (np.where(rgba[..., 3:] == 255, ref, 255).astype(np.uint8), 0)
    pal = Image.fromarray(ref).quantize(16)
    pal.info["transparency"] = 0
    pal.save(root / "palette.png", transparency=0)
    pal_rgb = np.asarray(pal.convert("RGB"))
    cases["palette.png"] = (np.where((np.asarray(pal) == 0)[..., None], 255, pal_rgb).astype(np.uint8), 0)
    Image.fromarray(ref).convert("CMYK").save(root / "cmyk.tif")
    cases["cmyk.tif"] = (ref, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; show it rotated 90 degrees clockwise
    Image.fromarray(ref).save(root / "turned.jpg", exif=exif.tobytes(), quality=95)
    cases["turned.jpg"] = (np.rot90(ref, k=-1), 6)
    return cases


def test_the_decoder_reads_16_bit_float_alpha_palette_cmyk_and_exif_orientation(tmp_path):
    for name, (want, tol) in _decoder_files(tmp_path).items():
        got = sources.read_image_file(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        assert np.abs(got.astype(int) - want).mean() <= tol + 0.5, name


def test_prepare_reads_a_16_bit_photo_scaled_and_a_turned_jpeg_upright(tmp_path):
    """Through prepare: a 16-bit photo was clipped to white (mean 253 for a mid-grey picture)."""
    cases = _decoder_files(tmp_path / "photos")
    raw = tiny_raw(
        prepare={"photos": {"source": "folder", "path": str(tmp_path / "photos"), "test_sources": ["cmyk.tif"]}}
    )
    full = {
        r.source: r.image
        for r in build_photo_sets(parse_params(raw).prepare, sources.BadImages("fail")).sets["photos_full"]
    }
    assert set(full) == set(cases)
    for name, (want, tol) in cases.items():
        assert full[name].shape == want.shape and np.abs(full[name].astype(int) - want).mean() <= tol + 0.5, name
