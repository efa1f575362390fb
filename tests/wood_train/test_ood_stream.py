"""The W-OoD objective's OoD batch stream: one loader per run, seeded rounds, exact resume."""

from types import SimpleNamespace

import torch

from wood_train import config as cfg
from wood_train.train_config import PRESETS
from wood_train.wood import objective as objective_module
from wood_train.wood.objective import WoodObjective

CLASSES = ["a", "b"]
N_OOD, BATCH = 10, 4  # 2 full batches a round; the ragged tail is dropped


def _objective(world, workers: int) -> WoodObjective:
    config = cfg.replace(
        PRESETS["world"], resize_long=(28, 40), crop=32, ood_batch_size=BATCH, num_workers=workers
    )
    paths = sorted(world.pool_dir.glob("*.jpg"))[:N_OOD]
    ood = SimpleNamespace(paths=paths)
    return WoodObjective(config, CLASSES, ood, torch.device("cpu"))


def _draw(objective: WoodObjective, n: int) -> list[torch.Tensor]:
    return [objective.next_batch(torch.device("cpu")) for _ in range(n)]


def test_the_stream_builds_one_loader_for_the_whole_run(tiny_world, monkeypatch):
    built = []
    real = torch.utils.data.DataLoader

    class CountingLoader(real):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", CountingLoader)
    monkeypatch.setattr(objective_module.torch.utils.data, "DataLoader", CountingLoader)
    batches = _draw(_objective(tiny_world, workers=0), 7)  # 3.5 rounds
    assert len(batches) == 7 and all(b.shape == (BATCH, 3, 32, 32) for b in batches)
    assert len(built) == 1


def test_rounds_draw_new_augmentations_and_workers_see_them(tiny_world):
    in_process = _draw(_objective(tiny_world, workers=0), 6)
    with_workers = _draw(_objective(tiny_world, workers=2), 6)
    for a, b in zip(in_process, with_workers):
        assert torch.equal(a, b)  # each sample carries its round's epoch into the worker
    # a new round reshuffles and re-augments: no batch of round 1 repeats one of round 0
    assert not any(torch.equal(a, b) for a in in_process[:2] for b in in_process[2:4])


def test_a_resumed_stream_continues_where_the_saved_one_stopped(tiny_world):
    straight = _draw(_objective(tiny_world, workers=0), 7)
    first = _objective(tiny_world, workers=0)
    _draw(first, 3)
    resumed = _objective(tiny_world, workers=0)
    resumed.batches_drawn = first.state()["batches_drawn"]
    for a, b in zip(_draw(resumed, 4), straight[3:]):
        assert torch.equal(a, b)
