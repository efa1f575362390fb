"""Does the world's pool behave like a real pool? Every property of the world-v2 issue, one seed.

Generates the default world with ``--seed N`` (reused when present), trains a baseline with the
``world`` training preset (fixed epochs, the last one kept: nothing is selected on ``val``, the
split reported here) or takes ``--checkpoint``, then prints each property beside its target:

- the cue problem stays: held-out classification mAP, and the spurious-activation rate of the
  CAMs on ``val`` (scales 1, 0.5, 1.5, 2 with flips, as in the demo);
- the ranking is informative: AUROC of the hardness score (top-class probability) for hard vs
  easy OoDs, the median easy-OoD top-class probability, the largest share of easy OoDs whose top
  class is one class (no class may act as a default answer);
- the pool mix: hard OoDs, contamination, easy OoDs, near-duplicates.

    python benches/world_properties.py --seed 1
    python benches/world_properties.py --seed 2 --checkpoint runs/baseline/model.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wood_train import config as cfg  # noqa: E402
from wood_train.cam.config import CamConfig  # noqa: E402
from wood_train.cam.evaluate import evaluate_cams  # noqa: E402
from wood_train.cam.make import make_cams  # noqa: E402
from wood_train.cam.metrics import multilabel_average_precision  # noqa: E402
from wood_train.data.imageio import read_image  # noqa: E402
from wood_train.data.transforms import normalize_image  # noqa: E402
from wood_train.data.voc import image_path, load_image_labels, read_split  # noqa: E402
from wood_train.model.checkpoint import load_cam_net  # noqa: E402
from wood_train.progress import progress  # noqa: E402
from wood_train.train import train  # noqa: E402
from wood_train.train_config import PRESETS  # noqa: E402
from wood_train.world.config import WORLD_PRESETS  # noqa: E402
from wood_train.world.generate import generate_world, world_hash  # noqa: E402
from wood_train.world.properties import TARGETS, meets, pool_mix, ranking_properties  # noqa: E402
from wood_train.world.truth import read_pool_truth  # noqa: E402

DEMO_SCALES = (1.0, 0.5, 1.5, 2.0)


@torch.inference_mode()
def class_probabilities(model, paths: list[Path], batch_size: int = 64) -> np.ndarray:
    """Sigmoid class probabilities of images of one size, at their own size."""
    model.eval()
    out = []
    for start in progress(range(0, len(paths), batch_size), desc="score", unit="batch"):
        batch = [normalize_image(read_image(p)) for p in paths[start : start + batch_size]]
        out.append(torch.sigmoid(model(torch.stack(batch))).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def measure(world, checkpoint: Path, work: Path) -> dict:
    """Every property of one world under one baseline checkpoint."""
    model, meta = load_cam_net(checkpoint)
    class_names = list(meta["class_names"])
    val_ids = read_split(world.voc_root, "val")
    val_probs = class_probabilities(model, [image_path(world.voc_root, i) for i in val_ids])
    val_labels = load_image_labels(world.voc_root, val_ids, len(class_names))
    val_map, _ = multilabel_average_precision(val_probs, val_labels)
    cam_dir = work / f"cams-{meta['weights_sha256'][:12]}"
    make_cams(CamConfig(checkpoint=checkpoint, voc_root=world.voc_root, split="val",
                        out_dir=cam_dir, scales=DEMO_SCALES, num_workers=0))  # fmt: skip
    cams = evaluate_cams(cam_dir, world.voc_root, "val")
    truth = read_pool_truth(world.root)
    originals = truth[truth["duplicate_of"] == ""]
    pool_probs = class_probabilities(model, [world.pool_dir / f for f in originals["file"]])
    ranking = ranking_properties(pool_probs, originals["kind"].to_numpy(), class_names)
    easy = pool_probs[originals["kind"].to_numpy() == "easy_ood"]
    votes = np.bincount(easy.argmax(axis=1), minlength=len(class_names)) / max(1, len(easy))
    return {
        "val_map": float(val_map),
        "val_cam_miou": cams.miou,
        "val_spurious": cams.spurious_activation_rate,
        **ranking,
        **pool_mix(truth),
        "easy_votes": dict(zip(class_names, votes.round(3).tolist())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--preset", default="default", choices=sorted(WORLD_PRESETS))
    parser.add_argument("--workspace", type=Path, default=Path("benches/_world_properties"))
    parser.add_argument("--checkpoint", type=Path, help="baseline to measure (default: train one)")
    parser.add_argument("--train-seed", type=int, default=0, help="seed of the baseline training")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    started = time.time()
    world_config = cfg.replace(WORLD_PRESETS[args.preset], seed=args.seed)
    # one folder per world (config and generator version): a changed world never meets stale runs
    work = args.workspace / f"{args.preset}-seed{args.seed}-{world_hash(world_config)}"
    world = generate_world(world_config, work / "world")
    checkpoint = args.checkpoint
    if checkpoint is None:
        config = cfg.replace(PRESETS["world"], voc_root=world.voc_root, val_split=None,
                             out_dir=work / f"baseline-train{args.train_seed}", seed=args.train_seed)  # fmt: skip
        checkpoint = train(config).checkpoint
        print(f"baseline: {checkpoint} ({time.time() - started:.0f} s so far)")
    result = measure(world, Path(checkpoint), work)
    print(f"\nworld {args.preset}, seed {args.seed}; baseline {checkpoint}\n")
    print("| property | value | target | met |")
    print("|---|---|---|---|")
    for name, (op, bound) in TARGETS.items():
        value = result[name]
        target = f"{bound[0]}-{bound[1]}" if op == "between" else f"{op} {bound}"
        print(f"| {name} | {value:.3f} | {target} | {'yes' if meets(name, value) else 'NO'} |")
    print(f"| easy_share (the rest) | {result['easy_share']:.3f} | | |")
    print(f"| duplicate_share | {result['duplicate_share']:.3f} | | |")
    print(f"\nval CAM mIoU {result['val_cam_miou']:.3f}; median top-class probability: hard OoDs "
          f"{result['hard_median_top_prob']:.3f}, contaminated {result['contaminated_median_top_prob']:.3f}; "
          f"easy-OoD top-class votes {result['easy_votes']}")  # fmt: skip
    print(f"total {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, **result}, indent=2))
    return 0 if all(meets(n, result[n]) for n in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
