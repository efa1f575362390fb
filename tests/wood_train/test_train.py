"""Training: exact resume, reuse keyed on config and inputs, W-OoD logs and records its OoD set,
a diverged run stops, mistakes are named before any work, DDP ranks agree."""

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml

from wood_train import config as cfg
from wood_train import train as train_module
from wood_train.cli import add_train
from wood_train.data.voc import load_image_labels, read_class_names, read_split
from wood_train.errors import ConfigError, DivergedError, OutputExistsError
from wood_train.manifest.contract import CSV_NAME, META_NAME, ManifestError
from wood_train.manifest.write import write_manifest
from wood_train.model.cam_net import build_cam_net
from wood_train.model.checkpoint import load_cam_net, read_checkpoint, save_checkpoint
from wood_train.train import train, train_step
from wood_train.train_config import PRESETS
from wood_train.wood.losses import distance_targets

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


def quiet(_line):
    pass


def _weights(path):
    return read_checkpoint(path)["state_dict"]


def _interrupt_at(monkeypatch, at_step):
    real = train_module.poly_lr

    def poly_lr(base, step, max_step, power):
        if step == at_step:
            raise KeyboardInterrupt("simulated kill")
        return real(base, step, max_step, power)

    monkeypatch.setattr(train_module, "poly_lr", poly_lr)


@pytest.fixture(scope="module")
def baseline(tiny_world, tmp_path_factory):
    """A one-epoch baseline that the W-OoD tests start from."""
    out = tmp_path_factory.mktemp("baseline") / "run"
    return train(tiny_config(tiny_world, out, epochs=1, val_split=None), log=quiet)


def test_resumed_run_equals_uninterrupted_run(tiny_world, tmp_path, monkeypatch):
    straight = train(tiny_config(tiny_world, tmp_path / "straight"), log=quiet)
    config = tiny_config(tiny_world, tmp_path / "resumed")
    _interrupt_at(monkeypatch, 7)  # mid-epoch 2, after the step-6 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(config, log=quiet)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 6
    monkeypatch.undo()
    said = []
    resumed = train(config, log=said.append)
    assert said == [f"train: resumed from {tmp_path / 'resumed' / 'last.pt'} at step 6 of 12"]
    assert (resumed.status, resumed.resumed_from_step, straight.status) == ("resumed", 6, "trained")
    a, b = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.weights_sha256 == resumed.weights_sha256
    log = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    assert list(log.step) == list(range(1, len(log) + 1))  # no step logged twice after resume
    assert {"loss", "bce", "lr", "images_per_s"} <= set(log.columns)
    # epochs count from 1 in every file
    assert sorted(set(log.epoch)) == [1, 2]
    for run in ("straight", "resumed"):
        epochs = [json.loads(line) for line in (tmp_path / run / "epochs.jsonl").open()]
        assert [e["epoch"] for e in epochs] == [1, 2]
    assert (tmp_path / "straight" / "epochs.jsonl").read_text() == (
        tmp_path / "resumed" / "epochs.jsonl"
    ).read_text()


def test_finished_run_is_reused_and_records_selection(tiny_world, tmp_path, capsys):
    ids = (tiny_world.voc_root / "ImageSets/Segmentation/train.txt").read_text()
    id_list = tmp_path / "train_ids.txt"
    id_list.write_text(ids)
    config = tiny_config(tiny_world, tmp_path / "run", epochs=1, train_split=str(id_list))
    first = train(config, log=quiet)
    assert set(first.val_metrics) >= {"val_map", "val_cam_miou"}
    mtime = first.checkpoint.stat().st_mtime_ns
    again = train(config, log=quiet)
    assert again.status == "reused" and again.checkpoint.stat().st_mtime_ns == mtime
    assert again.weights_sha256 == first.weights_sha256
    model, meta = load_cam_net(first.checkpoint)
    assert meta["class_names"] == read_class_names(tiny_world.voc_root) and model.num_classes == 4
    saved = cfg.load_yaml(type(config), tmp_path / "run" / "config.yaml")
    assert saved == cfg.replace(config, masks="SegmentationClass")  # "auto", as resolved
    # one epoch numbering: the console, summary.json, epochs.jsonl and the checkpoint agree
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "epochs.jsonl").open()]
    assert first.selected_epoch == summary["selected_epoch"] == meta["epoch"] == epochs[0] == 1
    parser = argparse.ArgumentParser()
    add_train(parser)
    args = parser.parse_args(["--config", str(tmp_path / "run" / "config.yaml")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith(
        f"train: reused {first.checkpoint}, a finished run of this config and these inputs "
        "(epoch 1 of 1 selected; val_map "
    )
    # only last.pt carries what a resume needs
    assert "optimizer" in read_checkpoint(tmp_path / "run" / "last.pt")
    for name in ("model.pt", "best.pt"):
        assert "optimizer" not in read_checkpoint(tmp_path / "run" / name)
    with pytest.raises(OutputExistsError, match=r"another config or other inputs \(lr\)"):
        train(cfg.replace(config, lr=0.5), log=quiet)
    # the same list file, one image fewer: other inputs, not a reuse of the old model
    id_list.write_text("".join(line + "\n" for line in ids.split()[:-1]))
    with pytest.raises(OutputExistsError, match=r"other inputs \(the ID training set\)"):
        train(config, log=quiet)


def _hard_oods(world):
    truth = pd.read_csv(world.truth_csv)
    return list(truth[truth.kind == "hard_ood"].file)


def _ood_list(world, path):
    hard = _hard_oods(world)
    path.write_text("".join(f"{f}\n" for f in hard))
    return path, len(hard)


def _wood(baseline, world, ood_manifest, **changes):
    wood = dict(
        init_checkpoint=baseline.checkpoint, ood_manifest=ood_manifest, frozen_bn=True,
        ood_batch_size=4, num_centers=3, feature_batch_size=8, val_split=None,
    )  # fmt: skip
    if Path(ood_manifest).suffix == ".txt":
        wood["ood_image_root"] = world.pool_dir
    return {**wood, **changes}


def test_wood_training_logs_every_statistic_and_resumes_exactly(
    tiny_world, baseline, tmp_path, monkeypatch
):
    ood_list, n_ood = _ood_list(tiny_world, tmp_path / "ood_list.txt")
    wood = _wood(baseline, tiny_world, ood_list)
    straight = train(tiny_config(tiny_world, tmp_path / "wood", **wood), log=quiet)
    log = pd.read_csv(tmp_path / "wood" / "train_log.csv")
    columns = ["bce", "l_dist", "l_ood", "pull", "push", "tau", "pushed_fraction"]
    assert log[columns].notna().all().all()
    assert (log.tau > 0).all() and (log.pull > 0).all() and (log.push > 0).all()
    # q = 0.2 of the 4 x 3 (sample, centre) pairs: 2 of 12 are pushed, ties aside
    assert log.pushed_fraction.between(1 / 12, 3 / 12).all()
    assert (log.l_dist - (log.pull - log.push)).abs().max() < 1e-4
    assert (tmp_path / "wood" / "ood_features.npy").is_file()
    state = read_checkpoint(straight.checkpoint)["wood"]
    assert state["centers"].shape == (3, 512) and state["prototypes"].shape == (4, 512)
    config = tiny_config(tiny_world, tmp_path / "wood_resumed", **wood)
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(config, log=quiet)
    monkeypatch.undo()
    assert straight.weights_sha256 == train(config, log=quiet).weights_sha256
    record = straight.ood_set
    assert record["num_images"] == n_ood and record["label_policy"] == "plain list (no votes)"


def _manifest(world, baseline, out):
    rows = [
        {
            "path": name, "sha256": hashlib.sha256((world.pool_dir / name).read_bytes()).hexdigest(),
            "verdict": "no_foreground", "top_class": "train", "top_score": 0.9,
            "votes_no_foreground": 2, "votes_contains_foreground": 0, "annotators": "ana;ben",
        }
        for name in _hard_oods(world)
    ]  # fmt: skip
    meta = {
        "image_root": str(world.pool_dir), "classes": read_class_names(world.voc_root),
        "scoring_checkpoint_sha256": baseline.weights_sha256, "label_policy": "majority",
        "mining": {"pool": "tiny world", "kept": len(rows)},
    }  # fmt: skip
    return write_manifest(out, pd.DataFrame(rows), meta, force=True)


def test_wood_run_records_its_manifest_and_revalidates_it_every_run(tiny_world, baseline, tmp_path):
    manifest = _manifest(tiny_world, baseline, tmp_path / "manifest")
    init = tmp_path / "init.pt"
    init.write_bytes(baseline.checkpoint.read_bytes())
    wood = _wood(baseline, tiny_world, manifest, init_checkpoint=init)
    config = tiny_config(tiny_world, tmp_path / "wood", epochs=1, **wood)
    result = train(config, log=quiet)
    record = result.ood_set
    assert record["num_images"] == len(_hard_oods(tiny_world))
    assert record["label_policy"] == "majority" and record["source"] == str(manifest)
    assert record["provenance"]["scoring_checkpoint_sha256"] == baseline.weights_sha256
    assert record["provenance"]["mining"] == {"pool": "tiny world", "kept": record["num_images"]}
    saved = [
        yaml.safe_load((tmp_path / "wood" / "config.yaml").read_text())["ood_set"],
        json.loads((tmp_path / "wood" / "summary.json").read_text())["ood_set"],
        read_checkpoint(result.checkpoint)["ood_set"],
    ]
    assert saved == [record, record, record]
    good_meta, good_csv = (manifest / META_NAME).read_text(), (manifest / CSV_NAME).read_text()
    meta = json.loads(good_meta)
    # broken after the run: the same command validates again and refuses, no silent reuse
    (manifest / META_NAME).write_text(json.dumps({**meta, "schema_version": 99}))
    (manifest / CSV_NAME).write_text(good_csv + "garbage\n")
    with pytest.raises(ManifestError, match="unknown schema_version 99"):
        train(config, log=quiet)
    # a valid change (one row fewer) is other inputs: the finished model is not reused
    (manifest / META_NAME).write_text(good_meta)
    (manifest / CSV_NAME).write_text("".join(good_csv.splitlines(keepends=True)[:-1]))
    with pytest.raises(OutputExistsError, match=r"other inputs \(the OoD set\)"):
        train(config, log=quiet)
    # and so is a changed init checkpoint behind the same path
    (manifest / CSV_NAME).write_text(good_csv)
    assert train(config, log=quiet).status == "reused"
    model, _ = load_cam_net(init)
    with torch.no_grad():
        model.classifier.weight.mul_(2)
    save_checkpoint(init, model, read_class_names(tiny_world.voc_root), {})
    with pytest.raises(OutputExistsError, match=r"other inputs \(the init checkpoint\)"):
        train(config, log=quiet)


def test_too_many_centres_are_named_before_any_feature_is_extracted(tiny_world, baseline, tmp_path):
    ood_list, n_ood = _ood_list(tiny_world, tmp_path / "ood_list.txt")
    config = tiny_config(
        tiny_world, tmp_path / "run", **_wood(baseline, tiny_world, ood_list, num_centers=50)
    )
    with pytest.raises(ConfigError) as info:
        train(config, log=quiet)
    assert (
        f"{n_ood} OoD images are fewer than --num-centers 50 (K-means centres); "
        f"pass --num-centers {n_ood} or less"
    ) in str(info.value)
    assert not (tmp_path / "run").exists()  # no feature file, no config, nothing


def test_ood_list_mistakes_name_the_flag_or_the_line(tiny_world, baseline, tmp_path):
    ood_list, _ = _ood_list(tiny_world, tmp_path / "ood_list.txt")
    no_root = tiny_config(
        tiny_world, tmp_path / "run", **_wood(baseline, tiny_world, ood_list, ood_image_root=None)
    )
    with pytest.raises(ManifestError, match="pass --ood-image-root FOLDER"):
        train(no_root, log=quiet)
    # a hard OoD that is a training image behind a symlink
    folder = tmp_path / "ood"
    folder.mkdir()
    names = _hard_oods(tiny_world)[:3]
    for name in names:
        (folder / name).symlink_to(tiny_world.pool_dir / name)
    training_image = sorted((tiny_world.voc_root / "JPEGImages").iterdir())[0]
    (folder / "looks_new.jpg").symlink_to(training_image)
    listing = tmp_path / "with_training_image.txt"
    listing.write_text("".join(f"{n}\n" for n in [*names, "looks_new.jpg"]))
    config = tiny_config(
        tiny_world, tmp_path / "run",
        **_wood(baseline, tiny_world, listing, ood_image_root=folder, num_centers=2),
    )  # fmt: skip
    with pytest.raises(ManifestError, match=f"line 4 .*: the same image as training image {training_image}"):  # fmt: skip
        train(config, log=quiet)
    bad = tmp_path / "missing.txt"
    bad.write_text("missing_file.jpg\n")
    config = tiny_config(tiny_world, tmp_path / "run", **_wood(baseline, tiny_world, bad))
    with pytest.raises(ValueError, match="line 1 \\(missing_file.jpg\\): file not found"):
        train(config, log=quiet)
    assert not (tmp_path / "run").exists()


def test_mistakes_in_the_data_flags_are_refused_before_training(tiny_world, tmp_path):
    reference = cfg.replace(PRESETS["voc12"], voc_root=tiny_world.voc_root, out_dir=tmp_path / "r")
    with pytest.raises(ConfigError, match="Pass --backbone-weights PATH .* or --no-frozen-bn"):
        train(reference, log=quiet)
    with pytest.raises(ConfigError) as info:
        train(tiny_config(tiny_world, tmp_path / "r", train_split="train_aug"), log=quiet)
    assert "train_aug.txt not found: pass --train-split with one of the splits" in str(info.value)
    assert "(train, val)" in str(info.value)
    with pytest.raises(FileNotFoundError, match=f"did you mean --voc-root {tiny_world.voc_root}"):
        train(tiny_config(tiny_world, tmp_path / "r", voc_root=tiny_world.root), log=quiet)
    assert not (tmp_path / "r").exists()


# ---- a diverged run stops and says so ------------------------------------------------------


def test_diverged_run_stops_names_the_step_and_saves_nothing(tiny_world, tmp_path):
    config = tiny_config(tiny_world, tmp_path / "run", lr=1e30, checkpoint_every=1)
    with pytest.raises(DivergedError) as info:
        train(config, log=quiet)
    message = str(info.value)
    assert message.startswith("training diverged at step 2: BCE is NaN or inf; usual causes: ")
    assert "--lr 1e+30" in message and "--backbone-weights" in message
    saved = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert "model.pt" not in saved and "best.pt" not in saved
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1  # the last finite state
    load_cam_net(tmp_path / "run" / "last.pt")  # and it loads: its weights are finite


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_cam_net("resnet18", num_classes=3, output_stride=16, frozen_bn=True).train()


@pytest.mark.parametrize(
    "nan_in, term", [("x", "BCE"), ("prototypes", "L_dist"), ("x_ood", "L_ood")]
)
def test_train_step_names_the_first_term_that_is_not_finite(small_model, nan_in, term):
    model = small_model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, x_ood = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    prototypes, centers = torch.rand(3, 512), torch.rand(2, 512)
    {"x": x, "x_ood": x_ood, "prototypes": prototypes}[nan_in][0].fill_(float("nan"))
    wood = SimpleNamespace(targets=distance_targets(prototypes, centers), ignore=[])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = cfg.replace(PRESETS["world"], quantile=0.5)
    with pytest.raises(DivergedError, match=f"^training diverged at step 7: {term} is NaN or inf"):
        train_step(model, model, optimizer, x, labels, x_ood, wood, config, step=7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no step taken


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_end_with_identical_weights(tiny_world, tmp_path):
    weights = tmp_path / "resnet18_random.pth"  # frozen BN needs a backbone checkpoint
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HARDOOD_QUIET": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", str(worker), str(tiny_world.voc_root), str(tmp_path),
        str(weights),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = load_cam_net(tmp_path / "run" / "model.pt")[0].state_dict()
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)  # rank 0 wrote what both ranks hold


def test_mahalanobis_precision_pools_id_and_ood_residuals_as_the_reference(
    tiny_world, baseline, tmp_path
):
    from wood_train.manifest.ood_list import load_ood_set
    from wood_train.wood.objective import prepare_wood
    from wood_train.wood.ood_centers import shared_precision

    ood_list, _ = _ood_list(tiny_world, tmp_path / "ood_list.txt")
    config = tiny_config(
        tiny_world, tmp_path / "run",
        **_wood(baseline, tiny_world, ood_list, distance="mahalanobis"),
    )  # fmt: skip
    names = read_class_names(tiny_world.voc_root)
    model, _ = load_cam_net(baseline.checkpoint, frozen_bn=True)
    ood = load_ood_set(ood_list, tiny_world.pool_dir, names)
    wood = prepare_wood(config, model, names, ood, torch.device("cpu"))
    z_id = np.load(tmp_path / "run" / "id_features.npy")
    z_ood = np.load(tmp_path / "run" / "ood_features.npy")
    ids = read_split(tiny_world.voc_root, "train")
    labels = load_image_labels(tiny_world.voc_root, ids, len(names))
    prototypes, centers = wood.prototypes.numpy(), wood.centers.numpy()
    pooled = shared_precision(z_id, labels, prototypes, ood_features=z_ood, ood_centers=centers)
    id_only = shared_precision(z_id, labels, prototypes)
    np.testing.assert_allclose(wood.precision.numpy(), pooled, rtol=1e-5, atol=1e-6)
    assert not np.allclose(pooled, id_only, rtol=1e-3)
    assert wood.targets.metric == "mahalanobis"
