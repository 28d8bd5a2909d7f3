#!/usr/bin/env bash
# One-shot GPU check for a machine without internet: build the CUDA backend, run the CUDA
# tests, CPU thread scaling, a profile of the node's host and device time, then the GPU
# benchmark, whose table prints last. Each part prints the seconds since the start.
#   bash benchmarks/gpu_check.sh [bench_gpu.py options]   (SPIKECORE_CUDA_ARCHS defaults to 90)
# GPU_CHECK_VARIANTS=1 also times the kernels' launch-shape variants (benchmarks/
# cuda_variants.py, about 30 s more); their results chose the defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
export SPIKECORE_REQUIRE_CUDA=1 SPIKECORE_CUDA_ARCHS=${SPIKECORE_CUDA_ARCHS:-90}
t0=$(date +%s)
part() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }
part "build (archs $SPIKECORE_CUDA_ARCHS)"
if ! $PY -m pip install -q --no-build-isolation --no-deps --no-index -e . ; then
    echo "pip could not build; falling back to setup.py build_ext --inplace"
    $PY setup.py -q build_ext --inplace -j "$(nproc)" || { echo "BUILD FAILED"; exit 1; }
fi
$PY -c "import spikecore; print('cuda_available:', spikecore.cuda_available(), spikecore.cuda_unavailable_reason())"
part "CUDA tests"
# on the GPU and on the host emulation of the same kernels (the summary line counts both)
$PY -m pytest -p no:cacheprovider --maxfail=10 --tb=line tests/test_cuda.py \
    tests/test_cuda_emulation.py tests/test_cuda_python_layer.py 2>&1 | tail -n 25
part "CPU core tests"
$PY -m pytest -p no:cacheprovider tests/test_backend_vs_reference.py tests/test_threads.py 2>&1 | tail -n 3
part "CPU thread scaling"
$PY benchmarks/cpu_threads.py
if [ "${GPU_CHECK_VARIANTS:-0}" = 1 ]; then
    part "kernel variants (launch shapes, each checked bit for bit against the default)"
    $PY benchmarks/cuda_variants.py --repeat 15
fi
part "node profile (host and device time of one call, T=8)"
$PY benchmarks/profile_node.py --steps 8 2>&1 | grep -v "_warn_once\|UserWarning"
part "GPU benchmark"
$PY benchmarks/bench_gpu.py "$@"
part "done"
