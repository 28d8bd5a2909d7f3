#!/usr/bin/env bash
# The CPU kernels under AddressSanitizer and UBSan: a copy of the working tree is built with
# -fsanitize=address,undefined and the kernel tests run against it, so an out-of-bounds read or
# write, a misaligned access or other undefined behaviour in pyx/ stops the run with a report.
# The test suite runs it (tests/test_sanitize_cpu.py), as it runs the CUDA kernels' counterpart,
# tests/native/check_cuda_bounds.cpp. About three minutes on two cores.
#   bash tests/native/sanitize_cpu.sh                 (or: make sanitize)
#   bash tests/native/sanitize_cpu.sh tests/test_plif.py -k soft      (other pytest arguments)
# PYTHON picks the interpreter (default python3: run it inside the project's venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the tracked and the new (not ignored) files, as they are in the working tree
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$work"
cd "$work"
sanitize="-fsanitize=address,undefined"
CPPFLAGS="$sanitize -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
    LDFLAGS="$sanitize" SPIKECORE_NO_CUDA=1 "$PY" setup.py -q build_ext --inplace
# the sanitizers' runtimes first, and libstdc++ before torch loads it, or ASan cannot
# intercept C++ throws
LD_PRELOAD=$(for lib in libasan.so libubsan.so libstdc++.so.6; do g++ -print-file-name=$lib; done)
export LD_PRELOAD=$(echo $LD_PRELOAD)
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1
if [ $# -eq 0 ]; then
    set -- tests/test_backend_vs_reference.py tests/test_inputs.py tests/test_streaming.py \
        tests/test_saved_h.py tests/test_recompute.py tests/test_threads.py tests/test_plif.py \
        tests/test_absent_state.py tests/test_properties.py tests/test_plan.py tests/test_nodes.py \
        tests/test_half_kernels.py
fi
# -s: pytest must not capture stderr, where the report goes before the process stops
PYTHONPATH="$work" "$PY" -m pytest -s -p no:cacheprovider -p no:warnings "$@"
