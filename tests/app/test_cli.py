"""The ``hardood`` command: lazy subcommands, one error line for user errors, configs that round-trip."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from app.annotate.launch import AnnotateConfig
from app.cli import COMMANDS, build_parser, main, parse_args
from app.demo.config import DemoConfig
from app.demo.simulated_annotators import SimulatedTeam
from curate.mine_config import PRESETS as MINE_PRESETS
from curate.mine_config import MineConfig
from wood_train import config as cfg
from wood_train.cam.config import CamConfig, EvalConfig
from wood_train.errors import ConfigError
from wood_train.train_config import PRESETS as TRAIN_PRESETS
from wood_train.train_config import TrainConfig
from wood_train.world.config import WORLD_PRESETS, WorldConfig

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pandas", "faiss", "streamlit", "open_clip")

CONFIGS = {
    **{f"train/{k}": (TrainConfig, v) for k, v in TRAIN_PRESETS.items()},
    **{f"mine/{k}": (MineConfig, v) for k, v in MINE_PRESETS.items()},
    **{f"world/{k}": (WorldConfig, v) for k, v in WORLD_PRESETS.items()},
    "cam": (CamConfig, CamConfig(checkpoint=Path("m.pt"), scales=(1.0, 0.5))),
    "evaluate": (EvalConfig, EvalConfig(thresholds=(0.3, 0.7))),
    "annotate": (AnnotateConfig, AnnotateConfig(db=Path("c.db"), password_env="PW")),
    "demo": (DemoConfig, DemoConfig(tiny=True)),
    "simulated-team": (SimulatedTeam, SimulatedTeam(annotators=("a", "b", "c"), limit=5)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_config_round_trips_through_yaml(tmp_path, name):
    cls, config = CONFIGS[name]
    path = cfg.save_config(config, tmp_path / "config.yaml")
    assert cfg.load_yaml(cls, path) == config
    assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), "every field has help"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_heavy_library(command):
    """`hardood --help` and `hardood CMD --help` build parsers from configs only."""
    code = (
        "import sys; from app.cli import build_parser; "
        f"build_parser({command!r}).format_help(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


@pytest.mark.parametrize(
    "command,cls", [("train", TrainConfig), ("mine", MineConfig), ("cam", CamConfig),
                    ("evaluate", EvalConfig), ("world", WorldConfig), ("annotate", AnnotateConfig),
                    ("demo", DemoConfig)],
)  # fmt: skip
def test_every_config_field_is_an_option_of_its_command(command, cls):
    help_text = build_parser(command)._subparsers._group_actions[0].choices[command].format_help()
    for field in dataclasses.fields(cls):
        assert cfg.flag_name(cls, field.name) in help_text, field.name


def test_booleans_are_switches_and_presets_apply():
    args = parse_args(["mine", "--preset", "world", "--no-amp", "--expand-from-verdicts"])
    config = cfg.config_from_args(args, MineConfig, MINE_PRESETS)
    assert config.amp is False and config.expand_from_verdicts is True
    assert config.image_size == MINE_PRESETS["world"].image_size
    with pytest.raises(SystemExit):
        parse_args(["mine", "--amp", "false"])


def test_user_errors_print_one_line_and_exit_2(tmp_path, capsys):
    assert main(["evaluate", "--cam-dir", str(tmp_path / "none"), "--voc-root", "x"]) == 2
    err = capsys.readouterr().err
    assert err == f"hardood evaluate: error: CAM folder not found: {tmp_path / 'none'}\n"


def test_bugs_keep_their_traceback(monkeypatch):
    """Only HardoodErrors are the user's; anything else propagates with its traceback."""
    import wood_train.cli

    def broken(args):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(wood_train.cli, "run_evaluate", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["evaluate", "--cam-dir", "x"])
    with pytest.raises(ConfigError, match="no field"):
        cfg.replace(EvalConfig(), bogus=1)
