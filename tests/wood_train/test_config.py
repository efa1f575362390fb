"""Configs: every preset survives a YAML round trip, and every field is settable from the CLI."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from wood_train import config as cfg
from wood_train.train_config import PRESETS, TrainConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_yaml(tmp_path, name):
    preset = PRESETS[name]
    path = cfg.save_config(preset, tmp_path / "config.yaml")
    assert cfg.load_yaml(TrainConfig, path) == preset
    assert cfg.config_hash(cfg.load_yaml(TrainConfig, path)) == cfg.config_hash(preset)


def test_every_field_is_a_cli_option_with_the_right_type():
    parser = argparse.ArgumentParser()
    cfg.add_config_args(parser, TrainConfig)
    args = parser.parse_args(
        ["--voc-root", "data/VOC2012", "--resize-long", "10", "20", "--no-frozen-bn",
         "--backbone-weights", "none", "--lr", "0.5", "--ignore-classes", "bottle", "chair"]
    )  # fmt: skip
    overrides = cfg.overrides_from_args(args, TrainConfig)
    config = cfg.replace(PRESETS["voc12"], **overrides)
    assert config.voc_root == Path("data/VOC2012")
    assert config.resize_long == (10, 20) and config.frozen_bn is False
    assert config.backbone_weights is None and config.lr == 0.5
    assert config.ignore_classes == ("bottle", "chair")
    assert set(overrides) == {
        "voc_root",
        "resize_long",
        "frozen_bn",
        "backbone_weights",
        "lr",
        "ignore_classes",
    }
    options = {a.dest for a in parser._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= options


def test_unknown_fields_are_named():
    with pytest.raises(ValueError, match="no_such_field"):
        cfg.replace(PRESETS["world"], no_such_field=1)
    with pytest.raises(ValueError, match="bogus"):
        cfg.from_dict(TrainConfig, {"bogus": 1})


def test_bad_boolean_is_rejected():
    parser = argparse.ArgumentParser()
    cfg.add_config_args(parser, TrainConfig)
    with pytest.raises(SystemExit):
        parser.parse_args(["--hflip", "maybe"])
