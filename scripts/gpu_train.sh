#!/usr/bin/env bash
# One prepared device call for docs/specialists.md's GPU line: train the default polyp recipe on the
# GPU within about 7 minutes, predict the Kvasir-SEG test split, and bring back the training log, the
# output and the summary through $OUT. Not yet run on a GPU: no task of this project has been lent one.
#
# Before the call, here, in the repository root (both folders are git-ignored):
#   mkdir -p .data && cp -r ../shared/data/kvasir-seg/Kvasir-SEG .data/        # 55 MiB
#   mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       segmentation-models-pytorch pydantic pydantic-core annotated-types typing-inspection
#   (the device machine has torch, timm, torchvision, numpy, pandas, scipy, scikit-image, typer, tqdm)
# The call:  run(command="bash scripts/gpu_train.sh", carry=[".data", ".whl"], timeout_s=600)
# Locally (a smoke test on the CPU):  OUT=/tmp/gpu DEVICE=cpu MINUTES=0.3 bash scripts/gpu_train.sh
set -euo pipefail
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:src"
else
    export PYTHONPATH="src"
fi
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu}; DEVICE=${DEVICE:-cuda}; MINUTES=${MINUTES:-7}; DATA=${DATA:-.data/Kvasir-SEG}
mkdir -p "$OUT" /tmp/omniseg-gpu
# the default recipe with the batch a GPU wants: batch 32, lr scaled with it (lr_reference_batch 8)
python3 - "$OUT" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open("configs/polyp.yaml"))
cfg["train"]["batch_size"] = 32
for m in cfg["models"]:
    if m["name"] == "unet":
        m["options"]["checkpoint"] = "/tmp/omniseg-gpu/polyp-unet.pt"
cfg["models"] = [m for m in cfg["models"] if m["name"] == "unet"]
yaml.safe_dump(cfg, open("/tmp/omniseg-gpu/polyp.yaml", "w"))
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/device.txt" 2>/dev/null || echo "$DEVICE" > "$OUT/device.txt"
start=$(date +%s)
python3 -m omniseg.cli train --config /tmp/omniseg-gpu/polyp.yaml --data-root "$DATA" --device "$DEVICE" \
    --max-minutes "$MINUTES" --no-resume -q 2>&1 | tee "$OUT/train.txt"
echo "train wall seconds: $(( $(date +%s) - start ))" | tee -a "$OUT/train.txt"
cp /tmp/omniseg-gpu/polyp-unet.log.csv "$OUT/train_log.csv"
python3 -m omniseg.cli run --config /tmp/omniseg-gpu/polyp.yaml --data-root "$DATA" --split test \
    --store /tmp/omniseg-gpu/s.sqlite -q 2>&1 | tee -a "$OUT/train.txt"
python3 -m omniseg.cli report --store /tmp/omniseg-gpu/s.sqlite --out /tmp/omniseg-gpu/report --no-figures --no-html >/dev/null
cp /tmp/omniseg-gpu/report/summary.csv "$OUT/summary.csv"
python3 -c "import csv,sys; r=[x for x in csv.DictReader(open(sys.argv[1])) if x['subset']=='all'][0]; print('test Dice mean', r['dice_mean'], 'n', r['n'])" "$OUT/summary.csv" | tee -a "$OUT/train.txt"
