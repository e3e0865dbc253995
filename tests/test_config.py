import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pipeline.config import Params, load_params, parse_params
from pipeline.errors import UserError

from .conftest import deep_update, tiny_raw

ROOT = Path(__file__).resolve().parents[1]


def _missing_keys(model: type[BaseModel], raw: dict, where: str = "") -> list[str]:
    """Every field of ``model`` (recursing into sub-models) that ``raw`` does not write out."""
    missing = []
    for name, field in model.model_fields.items():
        if name not in raw:
            missing.append(f"{where}{name}")
            continue
        sub = [
            a
            for a in (field.annotation, *typing.get_args(field.annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if sub and isinstance(raw[name], dict):
            missing += _missing_keys(sub[0], raw[name], f"{where}{name}.")
    return missing


def test_repo_params_are_valid_and_complete():
    """params.yaml writes out every key of every section and sub-section (extra keys are refused by
    the models), so the file documents all of them and no value comes from a default in the code."""
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert _missing_keys(Params, raw) == []
    assert params.distributed.num_workers == raw["distributed"]["num_workers"]
    without = yaml.safe_load((ROOT / "params.yaml").read_text())
    del without["prepare"]["photos"]["max_side"], without["translate"]["lr"]
    assert _missing_keys(Params, without) == ["prepare.photos.max_side", "translate.lr"]  # the check sees nested keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"pretrain": {"widht": 8}}, "pretrain.widht: unknown key (allowed: "),
        (
            {"bogus": {}},
            "bogus: unknown key (allowed: ace, ace_finetune, augment, classify, colorize, cyclegan, distributed, munit, "
            "prepare, pretrain, simgan, simsiam, stylize, swav, sweep, tracking, translate)",
        ),
        ({"pretrain": {"width": "wide"}}, "pretrain.width: Input should be a valid integer"),
        ({"pretrain": {"width": 0}}, "pretrain.width: Input should be greater than or equal to 4 (got 0)"),
        ({"simsiam": {"lr": -1.0}}, "simsiam.lr: Input should be greater than 0"),
        ({"prepare": {"on_bad_image": "ignore"}}, "prepare.on_bad_image: Input should be 'skip' or 'fail'"),
        (
            {"prepare": {"digits_lt": {"transform": "blur"}}},
            "prepare.digits_lt.transform: Input should be 'rot', 'bg' or 'dil'",
        ),
        ({"pretrain": {"scale": [0.9, 0.1]}}, "pretrain: scale must be [low, high]"),
        ({"prepare": {"photos": {"source": "folder"}}}, "prepare.photos: source 'folder' needs 'path'"),
        ({"distributed": {"use_gpu": "yes"}}, "distributed.use_gpu: Input should be a valid boolean"),
    ],
)
def test_bad_params_give_one_line_naming_the_key(raw, expected):
    with pytest.raises(UserError) as err:
        parse_params(deep_update(tiny_raw(), raw), "params.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("params.yaml: ")
    assert expected in msg


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(UserError, match=r"allowed: .*crop_size.*width"):
        parse_params(tiny_raw(pretrain={"widht": 8}))


def test_a_key_missing_from_the_params_is_one_line_naming_it():
    """params.yaml is the only home of the values: the code has no default to fall back on."""
    raw = tiny_raw()
    del raw["translate"]["lr"]
    with pytest.raises(UserError, match=r"^params.yaml: translate.lr: Field required$"):
        parse_params(raw, "params.yaml")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)


def test_translation_and_git_params_are_checked():
    with pytest.raises(
        UserError,
        match=r"classify: Value error, decay_epochs must be increasing and below epochs|classify: decay_epochs",
    ):
        parse_params(tiny_raw(classify={"decay_epochs": [50]}))
    with pytest.raises(UserError, match=r"translate: freeze_encoder_epochs \(9\) must be <= epochs"):
        parse_params(tiny_raw(translate={"freeze_encoder_epochs": 9}))
    with pytest.raises(
        UserError, match=r"prepare.digits_lt.transform: Input should be 'rot', 'bg' or 'dil' \(got 'blur'\)"
    ):
        parse_params(tiny_raw(prepare={"digits_lt": {"transform": "blur"}}))
    with pytest.raises(UserError, match=r"distributed.num_workers: Input should be greater than 0"):
        parse_params(tiny_raw(distributed={"num_workers": 0}))
    with pytest.raises(
        UserError, match=r"pretrain: .*extra_seeds must be distinct and differ from seed \(0\), got \[1, 0\]"
    ):
        parse_params(tiny_raw(pretrain={"extra_seeds": [1, 0]}))
    with pytest.raises(UserError, match=r"extra_seeds must be distinct .* got \[2, 2\]"):
        parse_params(tiny_raw(pretrain={"extra_seeds": [2, 2]}))


def test_params_written_by_dvc_with_a_small_float_read_back_as_that_float(tmp_path):
    """`dvc exp run -S swav.weight_decay=0.000001` makes DVC (ruamel) write ``1e-06``, which
    PyYAML's YAML 1.1 rules read as a string."""
    import ruamel.yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["swav"]["weight_decay"] = 0.000001
    raw["pretrain"]["scale"] = [1e-2, 1.0]
    path = tmp_path / "params.yaml"
    with path.open("w") as fh:
        ruamel.yaml.YAML().dump(raw, fh)
    assert "weight_decay: 1e-06" in path.read_text()
    params = load_params(path)
    assert params.swav.weight_decay == 1e-6 and params.pretrain.scale == [0.01, 1.0]
    assert load_params(path, ["swav.lr=5e-2"]).swav.lr == 0.05
