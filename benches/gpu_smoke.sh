#!/usr/bin/env bash
# What a user with one GPU runs first: train, W-OoD, cam and mine on the world at full size, with
# bf16 autocast, pinned memory and faiss-gpu when installed. Prints the img/s of each stage beside
# the img/s to expect on an A100 and an H100, computed from each stage's FLOPs (estimates until
# someone runs this on such a card; see benches/gpu_smoke.py for how they are computed).
#
#   bash benches/gpu_smoke.sh [WORK_DIR]                  # default WORK_DIR: gpu_smoke
#   BACKBONE_WEIGHTS=weights/resnet50.pth bash benches/gpu_smoke.sh   # ImageNet weights, lr 0.1
#   DEVICE=cpu SCALE=tiny bash benches/gpu_smoke.sh /tmp/s # a quick CPU check of this script
#
# Re-running keeps the world and the weights and measures every stage again.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-gpu_smoke}
DEVICE=${DEVICE:-cuda}
SCALE=${SCALE:-full}
WORKERS=${WORKERS:-8}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
hardood() { echo "\$ hardood $*" >&2; "$PY" -m app.cli "$@"; }

mkdir -p "$WORK"
"$PY" benches/gpu_smoke.py prepare --work "$WORK" --scale "$SCALE" \
    ${BACKBONE_WEIGHTS:+--backbone-weights "$BACKBONE_WEIGHTS"} >/dev/null
# shellcheck disable=SC1091
source "$WORK/smoke.env"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
rm -rf "$WORK/runs" "$WORK/cams" "$WORK/curation.db" "$WORK/curation.db"-* "$WORK/curation.embeddings"

common=(--preset voc12 --voc-root "$VOC_ROOT" --train-split train --val-split none
        --backbone-weights "$WEIGHTS" --lr "$LR" --epochs 1 --batch-size "$BATCH"
        --crop "$CROP" --resize-long $RESIZE_LONG --num-workers "$WORKERS" --log-every 4
        --device "$DEVICE" --amp)
hardood train "${common[@]}" --out-dir "$WORK/runs/baseline"
hardood train "${common[@]}" --out-dir "$WORK/runs/wood" \
    --init-checkpoint "$WORK/runs/baseline/model.pt" --ood-manifest "$OOD_LIST" \
    --ood-image-root "$POOL" --ood-batch-size "$OOD_BATCH" --num-centers "$CENTERS"
hardood cam --checkpoint "$WORK/runs/wood/model.pt" --voc-root "$VOC_ROOT" --split val \
    --out "$WORK/cams" --device "$DEVICE" --amp --num-workers "$WORKERS"
hardood mine --preset voc12 --db "$WORK/curation.db" --checkpoint "$WORK/runs/wood/model.pt" \
    --pool "$POOL" --image-size "$MINE_SIZE" --device "$DEVICE" --amp --workers "$WORKERS" \
    | tee "$WORK/mine.log"
"$PY" benches/gpu_smoke.py report --work "$WORK"
