#!/usr/bin/env bash
# The flagship at the paper's scale on one accelerator: HalfCheetah-Vel at MAML-RL's batch (`--preset paper`: 40 tasks
# x 20 trajectories x horizon 200, mjx backend, 40 held-out goals), MAML and the pretrained baseline on the same env
# steps, random init, and an oracle trained on each held-out goal, so the page's gap closure compares with Finn et
# al.'s 0.88.
#   bash benchmarks/flagship_gpu.sh OUT_DIR
# Resumable: run the same command again (on the machine that holds runs/flagship_gpu) and it goes on where it stopped.
# Each slice stops itself with SIGINT after FLAGSHIP_SLICE_S seconds, which finishes the chunk in flight, saves MAML's
# checkpoint and exits 0; the next slice resumes it. The pretrained baseline, the oracle and the evaluation run in the
# slice that finishes MAML. A finished run's files land in OUT_DIR (results.md, results.json, config.json,
# provenance.json, metrics.jsonl: record the page with `python -m experiments.results_pages --record`), and a second
# call with them there does nothing. OUT_DIR/log.txt holds every slice's output.
#
# Knobs (environment): FLAGSHIP_ITERATIONS (meta-iterations per method; default 100, 32M env steps, sized as a guess
# for ten minutes of one H100: no GPU run has measured it yet), FLAGSHIP_ORACLE_ITERATIONS (default the preset's 200),
# FLAGSHIP_SLICE_S (default 540), FLAGSHIP_SLICES (default 1), FLAGSHIP_PRESET (default paper; smoke: a CPU dry run).
set -u
out=${1:?usage: bash benchmarks/flagship_gpu.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.6
log="$out/log.txt"
if [ -f "$out/results.json" ]; then echo "flagship: finished already, $out/results.md" | tee -a "$log"; exit 0; fi
preset=${FLAGSHIP_PRESET:-paper}
runs_dir=runs/flagship_gpu_$preset
python -c "import jax, sys; print(sys.version.split()[0], 'jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$log"
for slice in $(seq "${FLAGSHIP_SLICES:-1}"); do
  run=$(ls -d "$runs_dir"/*/ 2>/dev/null | tail -1)
  if [ -n "$run" ]; then
    flags=(--resume "$run")
  else
    flags=(--preset "$preset" --out-dir "$runs_dir" --adaptation-mode standard --oracle)
    [ "$preset" = paper ] && flags+=(--iterations "${FLAGSHIP_ITERATIONS:-100}")
    [ -n "${FLAGSHIP_ORACLE_ITERATIONS:-}" ] && flags+=(--oracle-iterations "$FLAGSHIP_ORACLE_ITERATIONS")
  fi
  echo "=== flagship slice $slice ($(date +%T)): python -m experiments.halfcheetah_vel ${flags[*]}" | tee -a "$log"
  timeout -s INT "${FLAGSHIP_SLICE_S:-540}" python -m experiments.halfcheetah_vel "${flags[@]}" 2>&1 |
    grep --line-buffered -v -e "UserWarning" | tee -a "$log"
  echo "=== flagship slice $slice: exit ${PIPESTATUS[0]} ($(date +%T))" | tee -a "$log"
  run=$(ls -d "$runs_dir"/*/ 2>/dev/null | tail -1)
  if [ -n "$run" ] && [ -f "$run/provenance.json" ]; then
    cp "$run"/{results.md,results.json,config.json,provenance.json,metrics.jsonl} "$out/"
    echo "flagship: finished, $out/results.md" | tee -a "$log"
    exit 0
  fi
done
echo "flagship: not finished after ${FLAGSHIP_SLICES:-1} slice(s); run the same command again to go on" | tee -a "$log"
exit 1
