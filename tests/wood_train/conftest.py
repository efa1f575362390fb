import pytest

from wood_train.world.config import WORLD_PRESETS
from wood_train.world.generate import generate_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny spurious-cue world, generated once per test session."""
    return generate_world(WORLD_PRESETS["tiny"], tmp_path_factory.mktemp("world") / "world")


@pytest.fixture
def voc_devkit(tmp_path):
    """A tiny VOCdevkit/VOC2012 as downloaded, plus IRN's train_aug.txt (see voc_devkit.py)."""
    from tests.wood_train.voc_devkit import write_voc_devkit

    return write_voc_devkit(tmp_path / "data")
