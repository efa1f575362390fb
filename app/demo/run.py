"""`hardood demo`: the whole story on the embedded world, the way a user lives it.

world -> baseline training -> mine -> simulated annotators -> export -> W-OoD training -> CAMs ->
evaluation of both -> re-mine with the W-OoD checkpoint -> report. Every step is keyed by a hash
of its inputs and settings (``steps.json`` in the workspace); a re-run skips the steps whose key is
unchanged, so a second ``make demo`` after an interruption resumes instead of starting over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from app.demo import report as demo_report
from app.demo.config import DemoConfig
from app.demo.simulated_annotators import SimulatedTeam, simulate_review
from curate import store
from curate.export.build import export_manifest
from curate.mine import mine
from curate.mine_config import PRESETS as MINE_PRESETS
from wood_train import config as cfg
from wood_train.cam.evaluate import EvalConfig, run_evaluation
from wood_train.cam.make import CamConfig, make_cams
from wood_train.train import train
from wood_train.train_config import PRESETS as TRAIN_PRESETS
from wood_train.world.config import WORLD_PRESETS
from wood_train.world.generate import generate_world
from wood_train.world.truth import read_pool_truth


@dataclass
class Workspace:
    """Paths of every artefact the demo writes."""

    root: Path
    manifest_dir: Path

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def db(self) -> Path:
        return self.root / "curation.db"

    def run(self, name: str) -> Path:
        return self.root / "runs" / name

    def cams(self, name: str) -> Path:
        return self.root / "cams" / name


class StepCache:
    """``steps.json``: step name -> key of the inputs it ran with (written after it succeeds)."""

    def __init__(self, path: Path):
        self.path = path
        self.keys = json.loads(path.read_text()) if path.is_file() else {}

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]

    def fresh(self, step: str, key: str) -> bool:
        return self.keys.get(step) == key

    def done(self, step: str, key: str) -> None:
        self.keys[step] = key
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.keys, indent=2))
        tmp.replace(self.path)


def _train_config(config: DemoConfig, ws: Workspace, name: str, **changes):
    base = cfg.replace(
        TRAIN_PRESETS["world"],
        voc_root=ws.world / "VOC2012",
        out_dir=ws.run(name),
        seed=config.seed,
    )
    if config.tiny:
        base = cfg.replace(
            base,
            batch_size=4,
            resize_long=(28, 40),
            crop=32,
            num_workers=0,
            ood_batch_size=4,
            lr=0.01,
        )
    return cfg.replace(base, **changes)


def run_demo(config: DemoConfig, log=print) -> Path:
    """Run (or resume) the whole demo; returns the path of ``report.md``."""
    started = time.time()
    ws = Workspace(Path(config.out), Path(config.manifest_dir))
    ws.root.mkdir(parents=True, exist_ok=True)
    cache = StepCache(ws.root / "steps.json")
    cfg.save_config(config, ws.root / "demo_config.yaml")

    def step(name: str, key: str, fn):
        if cache.fresh(name, key):
            log(f"[{name}] up to date, reused")
            return
        t0 = time.time()
        summary = fn()
        cache.done(name, key)
        log(f"[{name}] {summary} ({time.time() - t0:.0f} s)")

    world_config = WORLD_PRESETS["tiny" if config.tiny else config.world_preset]
    world = generate_world(world_config, ws.world)
    truth = read_pool_truth(world.root)
    log(
        f"[world] {world.root}: {len(truth)} pool images, classes in {world.voc_root / 'class_names.txt'}"
    )

    base_cfg = _train_config(
        config, ws, "baseline", epochs=1 if config.tiny else config.baseline_epochs
    )
    baseline = train(base_cfg)
    log(f"[baseline] {baseline.checkpoint} val {_fmt(baseline.val_metrics)}")

    mine_cfg = cfg.replace(
        MINE_PRESETS["world"], db=ws.db, checkpoint=baseline.checkpoint, pool=(str(world.pool_dir),),
        queue_size=config.queue_size, seed=config.seed,
    )  # fmt: skip
    if config.tiny:  # a one-epoch tiny model scores low: queue everything so the loop has data
        mine_cfg = cfg.replace(mine_cfg, min_hardness=0.0, clusters_per_class=2)
    step("mine", cache.key("mine", baseline.weights_sha256, cfg.to_dict(mine_cfg)),
         lambda: _mine_summary(mine(mine_cfg, log=lambda line: log(f"  {line}"))))  # fmt: skip

    team = SimulatedTeam(
        error_rate=config.error_rate,
        seconds_per_verdict=config.seconds_per_verdict,
        seed=config.seed,
    )

    def review_step():
        with store.connect(ws.db) as conn:
            return _review_summary(simulate_review(conn, truth, world.pool_dir, team))

    def export_step():
        with store.connect(ws.db) as conn:
            return _export_summary(export_manifest(conn, ws.manifest_dir, force=True))

    step(
        "review", cache.key("review", cache.keys.get("mine"), dataclasses.asdict(team)), review_step
    )
    step("export", cache.key("export", cache.keys.get("review"), str(ws.manifest_dir)), export_step)

    wood_cfg = _train_config(
        config, ws, "wood", epochs=1 if config.tiny else config.wood_epochs, init_checkpoint=baseline.checkpoint,
        ood_manifest=ws.manifest_dir, frozen_bn=True, num_centers=3 if config.tiny else config.num_centers,
        lr=config.wood_lr,
    )  # fmt: skip
    wood = train(wood_cfg)
    log(f"[wood] {wood.checkpoint} val {_fmt(wood.val_metrics)}")

    evaluations = {}
    for name, result in (("baseline", baseline), ("wood", wood)):
        cam_dir = ws.cams(name)
        key = cache.key("cam", name, result.weights_sha256, config.cam_scales, config.eval_split)
        if not cache.fresh(f"cam_{name}", key) and cam_dir.exists():
            shutil.rmtree(cam_dir)  # CAMs of other weights: start over
        make_cams(CamConfig(checkpoint=result.checkpoint, voc_root=world.voc_root, split=config.eval_split,
                            out_dir=cam_dir, scales=config.cam_scales, num_workers=0))  # fmt: skip
        cache.done(f"cam_{name}", key)
        evaluations[name] = run_evaluation(
            EvalConfig(cam_dir=cam_dir, voc_root=world.voc_root, split=config.eval_split)
        )
        e = evaluations[name]
        log(f"[evaluate {name}] CAM mIoU {e.miou:.3f} at t={e.best_threshold:.2f}, "
            f"spurious activation {e.spurious_activation_rate:.3f}")  # fmt: skip

    remine_cfg = cfg.replace(mine_cfg, checkpoint=wood.checkpoint)
    step("remine", cache.key("remine", wood.weights_sha256, cache.keys.get("review"), cfg.to_dict(remine_cfg)),
         lambda: _mine_summary(mine(remine_cfg, log=lambda line: log(f"  {line}"))))  # fmt: skip

    path = demo_report.write_report(
        ws.root,
        world,
        ws.db,
        ws.manifest_dir,
        baseline,
        wood,
        evaluations,
        config,
        time.time() - started,
    )
    log(f"[report] {path}")
    return path


def _fmt(metrics: dict) -> str:
    return ", ".join(
        f"{k} {v:.3f}"
        for k, v in metrics.items()
        if isinstance(v, float) and k != "selection_score"
    )


def _mine_summary(result) -> str:
    return f"queue of {len(result.queue)} images in {result.db}"


def _review_summary(verdicts) -> str:
    if verdicts.empty:
        return "no items left to review"
    wrong = int(((verdicts.verdict == "contains_foreground") != verdicts.truth_contains).sum())
    return (f"{len(verdicts)} simulated verdicts ({wrong} wrong on purpose), "
            f"{verdicts.seconds.sum() / 60:.1f} simulated minutes")  # fmt: skip


def _export_summary(result) -> str:
    return (
        f"{result.no_foreground} hard OoDs of {result.images} reviewed images -> {result.out_dir}"
    )
