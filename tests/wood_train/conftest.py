import pytest

from wood_train.world.config import WORLD_PRESETS
from wood_train.world.generate import generate_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny spurious-cue world, generated once per test session."""
    return generate_world(WORLD_PRESETS["tiny"], tmp_path_factory.mktemp("world") / "world")
