from pathlib import Path

import pytest
import yaml

from pipeline.config import Params, load_params, parse_params
from pipeline.errors import UserError

from .conftest import tiny_raw

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_are_valid_and_complete():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # every section of the model is written out in params.yaml, so the file documents all keys
    assert set(raw) == set(Params.model_fields)
    assert params.distributed.num_workers == raw["distributed"]["num_workers"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"pretrain": {"widht": 8}}, "pretrain.widht: unknown key (allowed: "),
        (
            {"bogus": {}},
            "bogus: unknown key (allowed: ace, ace_finetune, augment, classify, colorize, cyclegan, distributed, munit, "
            "prepare, pretrain, simsiam, stylize, swav, sweep, tracking, translate)",
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
        parse_params(raw, "params.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("params.yaml: ")
    assert expected in msg


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(UserError, match=r"allowed: .*crop_size.*width"):
        parse_params({"pretrain": {"widht": 8}})


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
