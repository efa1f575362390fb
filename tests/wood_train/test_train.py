"""Training: an interrupted run resumes to the same weights; W-OoD runs; DDP ranks agree."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from wood_train import config as cfg
from wood_train import train as train_module
from wood_train.data.voc import read_class_names
from wood_train.errors import OutputExistsError
from wood_train.model.checkpoint import load_cam_net, read_checkpoint
from wood_train.train import train
from wood_train.train_config import PRESETS

REPO = Path(__file__).resolve().parents[2]


def tiny_config(world, out_dir, **changes):
    base = cfg.replace(
        PRESETS["world"],
        voc_root=world.voc_root,
        out_dir=out_dir,
        epochs=2,
        batch_size=4,
        resize_long=(28, 40),
        crop=32,
        num_workers=0,
        checkpoint_every=2,
        log_every=1,
        lr=0.01,
    )
    return cfg.replace(base, **changes)


def _weights(path):
    return read_checkpoint(path)["state_dict"]


def _interrupt_at(monkeypatch, at_step):
    real = train_module.poly_lr

    def poly_lr(base, step, max_step, power):
        if step == at_step:
            raise KeyboardInterrupt("simulated kill")
        return real(base, step, max_step, power)

    monkeypatch.setattr(train_module, "poly_lr", poly_lr)


def test_resumed_run_equals_uninterrupted_run(tiny_world, tmp_path, monkeypatch):
    straight = train(tiny_config(tiny_world, tmp_path / "straight"))
    config = tiny_config(tiny_world, tmp_path / "resumed")
    _interrupt_at(monkeypatch, 7)  # mid-epoch 2, after the step-6 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(config)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 6
    monkeypatch.undo()
    resumed = train(config)
    a, b = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.weights_sha256 == resumed.weights_sha256
    log = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    assert list(log.step) == list(range(1, len(log) + 1))  # no step logged twice after resume
    assert {"loss", "bce", "lr", "images_per_s"} <= set(log.columns)


def test_finished_run_is_reused_and_records_selection(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "run", epochs=1)
    first = train(config)
    assert set(first.val_metrics) >= {"val_map", "val_cam_miou"}
    mtime = first.checkpoint.stat().st_mtime_ns
    again = train(config)
    assert (
        again.checkpoint.stat().st_mtime_ns == mtime
        and again.weights_sha256 == first.weights_sha256
    )
    model, meta = load_cam_net(first.checkpoint)
    assert meta["class_names"] == read_class_names(tiny_world.voc_root) and model.num_classes == 4
    saved = cfg.load_yaml(type(config), tmp_path / "run" / "config.yaml")
    assert saved == cfg.replace(config, masks="SegmentationClass")  # "auto", as resolved
    with pytest.raises(OutputExistsError, match="another config"):
        train(cfg.replace(config, lr=0.5, epochs=2))


def _ood_list(world, path):
    truth = pd.read_csv(world.truth_csv)
    hard = truth[truth.kind == "hard_ood"].file
    path.write_text("".join(f"{f}\n" for f in hard))
    return path, len(hard)


def test_wood_training_logs_every_term_and_resumes_exactly(tiny_world, tmp_path, monkeypatch):
    ood_list, n_ood = _ood_list(tiny_world, tmp_path / "ood_list.txt")
    base = train(tiny_config(tiny_world, tmp_path / "base", epochs=1, val_split=None))
    wood = dict(
        init_checkpoint=base.checkpoint, ood_manifest=ood_list, ood_image_root=tiny_world.pool_dir,
        frozen_bn=True, ood_batch_size=4, num_centers=3, feature_batch_size=8, val_split=None,
    )  # fmt: skip
    straight = train(tiny_config(tiny_world, tmp_path / "wood", **wood))
    log = pd.read_csv(tmp_path / "wood" / "train_log.csv")
    assert {"bce", "l_dist", "l_ood"} <= set(log.columns) and log.l_ood.notna().all()
    assert (tmp_path / "wood" / "ood_features.npy").is_file()
    state = read_checkpoint(straight.checkpoint)["wood"]
    assert state["centers"].shape == (3, 512) and state["prototypes"].shape == (4, 512)
    config = tiny_config(tiny_world, tmp_path / "wood_resumed", **wood)
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    assert straight.weights_sha256 == train(config).weights_sha256


def test_bad_ood_list_stops_before_training(tiny_world, tmp_path):
    bad = tmp_path / "ood_list.txt"
    bad.write_text("missing_file.jpg\n")
    config = tiny_config(
        tiny_world, tmp_path / "run", ood_manifest=bad, ood_image_root=tiny_world.pool_dir
    )
    with pytest.raises(ValueError, match="missing_file.jpg"):
        train(config)
    assert not (tmp_path / "run" / "last.pt").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_end_with_identical_weights(tiny_world, tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HARDOOD_QUIET": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", str(worker), str(tiny_world.voc_root), str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = load_cam_net(tmp_path / "run" / "model.pt")[0].state_dict()
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)  # rank 0 wrote what both ranks hold
