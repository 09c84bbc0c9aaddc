#!/usr/bin/env bash
# The accelerator rows of docs/benchmarks.md: every benchmark, then navigation at the paper's settings as an 8-seed sweep.
# The flagship at the paper's scale has a script of its own, to run first: benchmarks/flagship_gpu.sh.
#   bash benchmarks/gpu_suite.sh OUT_DIR
# Each stage runs under its own time limit and copies its JSON to OUT_DIR as soon as it ends, so a stage that runs
# out of time loses only itself. OUT_DIR/log.txt holds the tables; OUT_DIR/runs.tar.gz the sweep's run directory.
set -u
out=${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
log="$out/log.txt"
stage() {  # stage SECONDS NAME COMMAND...
  local seconds=$1 name=$2
  shift 2
  echo "=== $name ($(date +%T), limit ${seconds}s)" | tee -a "$log"
  timeout "$seconds" "$@" 2>&1 | grep -v -e "UserWarning" | tee -a "$log"
  local status=${PIPESTATUS[0]}
  echo "=== $name: exit $status ($(date +%T))" | tee -a "$log"
  return "$status"
}
python -c "import jax, sys; print(sys.version.split()[0], 'jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$log"
# A stage's JSON is copied only when the stage finished: benchmarks/results/ also holds the committed CPU files.
stage 150 maml_vs_torch python -m benchmarks.maml_vs_torch --reference-repeats 1 &&
  cp benchmarks/results/maml_vs_torch.json "$out/"
stage 60 sweep_scaling_sinusoid python -m benchmarks.sweep_scaling --workloads sinusoid --sizes 1 2 4 8 16 &&
  cp benchmarks/results/sweep_scaling.json "$out/sweep_scaling_sinusoid.json"
stage 190 sweep_scaling_navigation python -m benchmarks.sweep_scaling --workloads navigation --sizes 1 2 4 8 16 &&
  cp benchmarks/results/sweep_scaling.json "$out/sweep_scaling_navigation.json"
stage 170 navigation_paper_8_seeds python -m experiments.sweep --num-seeds 8 --sweep-inner-lr 0.1 \
  --iterations 100 --tasks-per-batch 20 --trajectories-per-task 20 --eval-tasks 40 \
  --out-dir runs/sweep_gpu &&
  tar czf "$out/runs.tar.gz" runs/sweep_gpu
stage 90 models python -m benchmarks.models && cp benchmarks/results/models.json "$out/"
