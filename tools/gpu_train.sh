#!/usr/bin/env bash
# Train the embedded model's networks on a lent GPU with the project's own trainers (issue 15), in one call of
# the device tool, all runs side by side on the one GPU.
#
# Prepare here (the data in ../shared does not travel; .gpu/ is ignored, so it must be carried):
#   mkdir -p .gpu && cp -r ../shared/data/diffinfinite-samples/patches .gpu/patches
#   echo /.gpu/ >> .git/info/exclude && cp tools/gpu_train.sh .gpu/run.sh
# The working tree that travels is capped at 64 MiB: the patches are 44.6 MB, so move the large tracked files
# the run does not need (tests/fixtures/golden, docs/images, resources/models/embedded/training) out of the
# tree for the call and back afterwards. Then, with the device tool:
#   run(command="BUDGET=520 bash .gpu/run.sh >/dev/null 2>&1; tail -c 4000 $OUT/log.txt", carry=[".gpu"],
#       timeout_s=585)
# Phase 1 runs CAL steps of every run side by side (it also exercises the sampling path on the GPU) and
# times a step; phase 2 trains each run for the time left, its step count sized from phase 1, its learning
# rate decaying to the end. EMA weights come back under $OUT (image models as fp16: 16 MiB per file), with
# the logs. Test it on the CPU first: DATA=<a few patches, the held-out ones included> IB=4 AB=2 DEV=cpu
# BUDGET=150 CAL=6 OUT=/tmp/out bash tools/gpu_train.sh
#
# On 2026-12-04 (H200, torch 2.11) four runs side by side took 0.055-0.095 s per step: the small networks
# leave the GPU mostly idle (launch-bound), so a larger batch costs little more per step.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-520}          # seconds for the whole script
DEV=${DEV:-cuda}
T0=$(date +%s)
D=${DATA:-.gpu/patches}; H=resources/models/embedded/holdout.json; AE=resources/models/embedded/autoencoder.safetensors
R=/tmp/gpuruns; mkdir -p $R $OUT
LOG=$OUT/log.txt
exec > >(tee -a $LOG) 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.is_available())"
T="python3 -m napari_diffinfinite.training train"
# name | arguments (steps, save/sample cadence added per phase)
# Image models only, with the MSE noise loss (the trainer's default since 2026-12-05; the runs of 2026-12-04 used
# L1), sized for the CPU's 2 s tile budget: dim 16 is the shipped network (0.66 s a tile), dim 24 about 2.2x
# its cost, dim 32 with mults 1,2,4,4 about 1.8x (GPU A of 2026-12-04). E adds the v-prediction weighting.
declare -A RUNS=(
 [imgA]="image --data $D --holdout-file $H --autoencoder $AE --dim 32 --dim-mults 1,2,4,4 --block-per-layer 1 --groups 8 --crop-latents 48 --batch ${IB:-64} --per-label --lr 1e-3 --ema-decay 0.9995 --device $DEV --threads 3"
 [imgC]="image --data $D --holdout-file $H --autoencoder $AE --dim 16 --dim-mults 1,2,4 --block-per-layer 1 --groups 4 --crop-latents 48 --batch ${IB:-64} --per-label --lr 1e-3 --ema-decay 0.9995 --device $DEV --threads 3"
 [imgD]="image --data $D --holdout-file $H --autoencoder $AE --dim 24 --dim-mults 1,2,4 --block-per-layer 1 --groups 4 --crop-latents 48 --batch ${IB:-64} --per-label --lr 1e-3 --ema-decay 0.9995 --device $DEV --threads 3"
 [imgE]="image --data $D --holdout-file $H --autoencoder $AE --dim 32 --dim-mults 1,2,4,4 --block-per-layer 1 --groups 8 --crop-latents 48 --batch ${IB:-64} --per-label --lr 1e-3 --ema-decay 0.9995 --v-weighting 100 --device $DEV --threads 3"
)
CAL=${CAL:-40}
echo "== phase 1: calibration, $CAL steps each, side by side"
for n in "${!RUNS[@]}"; do
  $T ${RUNS[$n]} --out $R/cal-$n --steps $CAL --save-every 20 --sample-every 20 > $R/cal-$n.out 2>&1 &
  PIDS="${PIDS:-} $!"
done
wait $PIDS; PIDS=""
declare -A STEPT
for n in "${!RUNS[@]}"; do
  tail -c 600 $R/cal-$n.out | tr '\r' '\n' | tail -3
  STEPT[$n]=$(python3 - $R/cal-$n/log.csv $CAL <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
n = int(sys.argv[2]); half = n // 2
print((float(rows[n - 1]["elapsed_s"]) - float(rows[half - 1]["elapsed_s"])) / (n - half) if len(rows) >= n else 0)
PY
)
  echo "$n: ${STEPT[$n]} s/step side by side"
done
NOW=$(( $(date +%s) - T0 )); LEFT=$(( BUDGET - NOW - 45 ))
echo "== phase 2: $LEFT s of training"
for n in "${!RUNS[@]}"; do
  st=${STEPT[$n]}
  if [ "$(python3 -c "print(int(float('$st') > 0))")" != 1 ]; then echo "skip $n (calibration failed)"; continue; fi
  steps=$(python3 -c "print(max(100, int($LEFT * 0.93 / float('$st'))))")
  every=$(( steps / 4 ))
  echo "$n: $steps steps: $T ${RUNS[$n]} --out RUN --steps $steps --save-every $every --sample-every $every"
  timeout -s TERM $(( LEFT + 25 )) $T ${RUNS[$n]} --out $R/$n --steps $steps --save-every $every --sample-every $every > $R/$n.out 2>&1 &
  PIDS="$PIDS $!"
done
wait $PIDS
echo "== packaging at $(( $(date +%s) - T0 )) s"
python3 - $R $OUT <<'PY'
import json, sys, tarfile, pathlib
from safetensors.torch import load_file, save_file
from safetensors import safe_open
R, OUT = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with tarfile.open(OUT / "logs.tar.gz", "w:gz") as tar:
    for run in sorted(R.iterdir()):
        if run.is_dir() and not run.name.startswith("cal-"):
            for f in run.iterdir():
                if f.suffix in (".csv", ".json"):  # not the sample grids: $OUT files are capped at 16 MiB
                    tar.add(f, arcname=f"{run.name}/{f.name}")
        elif run.suffix == ".out" and not run.name.startswith("cal-"):
            tar.add(run, arcname=run.name)
for run in sorted(R.iterdir()):
    ema = run / "ema.safetensors"
    if run.name.startswith("cal-") or not ema.exists():
        continue
    with safe_open(str(ema), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(ema))
    if run.name.startswith("img"):  # fp16 for the transfer (16 MiB per file); widened again on arrival
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        meta["transfer"] = "fp16"
    save_file(tensors, str(OUT / f"{run.name}-ema.safetensors"), metadata=meta)
    print(run.name, (OUT / f"{run.name}-ema.safetensors").stat().st_size, "bytes")
PY
ls -la $OUT; echo "done at $(( $(date +%s) - T0 )) s"
