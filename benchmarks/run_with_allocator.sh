#!/bin/sh
# Run a command under jemalloc when the library is installed, else plainly (with a note).
#
#   benchmarks/run_with_allocator.sh python benchmarks/bench_neuron.py --steps 64
#   benchmarks/run_with_allocator.sh spikecore train
#
# Why: glibc returns freed blocks over 32 MiB to the kernel, so every call that allocates large
# fresh tensors pays the page faults again (~12 ms per 64 MiB here). jemalloc with decay
# disabled keeps freed pages mapped (see benchmarks/RESULTS.md). Under jemalloc, PyTorch is also
# told to back tensors of 2 MiB and more with transparent huge pages (THP_MEM_ALLOC_ENABLE=1):
# fewer TLB misses when a kernel streams them. Only together with a retaining allocator: fresh
# huge pages from the kernel cost 6 ms per 64 MiB here on average, but now and then 24-370 ms
# while the kernel compacts memory; jemalloc pays that once.
# Environment: JEMALLOC_LIB overrides the library path; SPIKECORE_NO_JEMALLOC=1 runs plainly;
# an existing MALLOC_CONF or THP_MEM_ALLOC_ENABLE is kept.
if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
lib="${JEMALLOC_LIB:-}"
if [ -z "$lib" ]; then
    for candidate in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
                     /usr/lib/aarch64-linux-gnu/libjemalloc.so.2 \
                     /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 \
                     /usr/local/lib/libjemalloc.so.2; do
        if [ -f "$candidate" ]; then lib="$candidate"; break; fi
    done
fi
if [ "${SPIKECORE_NO_JEMALLOC:-0}" = "1" ]; then
    echo "run_with_allocator: SPIKECORE_NO_JEMALLOC=1, running with the default allocator" >&2
    exec "$@"
fi
if [ -n "$lib" ] && [ -f "$lib" ]; then
    export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
    export MALLOC_CONF="${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}"
    export THP_MEM_ALLOC_ENABLE="${THP_MEM_ALLOC_ENABLE:-1}"
    echo "run_with_allocator: jemalloc ($lib, MALLOC_CONF=$MALLOC_CONF)," \
         "THP_MEM_ALLOC_ENABLE=$THP_MEM_ALLOC_ENABLE" >&2
else
    echo "run_with_allocator: jemalloc not found (apt-get install libjemalloc2), running with" \
         "the default allocator" >&2
fi
exec "$@"
