/*
 * cuda_runtime.h (host emulation) -- lets a host C++ compiler build cuda/neuron_kernels.cu.
 *
 * Design
 * ------
 * The CUDA kernels of spikecore use no shared memory, no barriers and no warp intrinsics: each
 * thread walks its own neurons over time through a grid-stride loop. Running every (block,
 * thread) of a launch one after another on the host therefore computes what the GPU computes,
 * in the same float32 operations. This header and its two siblings (cuda_fp16.h, cuda_bf16.h)
 * stand in for the toolkit's headers so that g++ compiles the unchanged kernel file;
 * tests/cuda_emulation.py rewrites its three `kernel<<<grid, block, 0, stream>>>(args)` launches
 * as `sc_host_launch(kernel, grid, block, 0, stream)(args)`, builds the shipped Cython wrapper
 * against the result and controls the emulated runtime through ctypes. The tests then run the
 * CUDA backend's own code on machines without a GPU.
 *
 * The runtime part emulates a set of devices: the current device, the last error, and a record
 * of every launch (device, stream, grid, block), which the tests read through the `sc_host_*`
 * functions below, as they inject failures. Device arithmetic that the host cannot reproduce
 * (--prec-div=false divisions in the surrogate derivatives) is outside what this checks.
 */
#ifndef SC_HOST_CUDA_RUNTIME_H
#define SC_HOST_CUDA_RUNTIME_H

/* The system headers first, so that the keyword macros below cannot reach into them. */
#include <initializer_list>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned int x, y, z;
};
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

template <typename T>
inline T __ldg(const T *p) { return *p; }

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorIllegalAddress = 700,
    cudaErrorAssert = 710,
    cudaErrorHardwareStackError = 714,
    cudaErrorIllegalInstruction = 715,
    cudaErrorMisalignedAddress = 716,
    cudaErrorInvalidAddressSpace = 717,
    cudaErrorInvalidPc = 718,
    cudaErrorLaunchFailure = 719
} cudaError_t;
typedef struct sc_host_stream *cudaStream_t;

inline const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver:
        return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoKernelImageForDevice:
        return "no kernel image is available for execution on the device";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: break;
    }
    return "unrecognized error code";
}

/* --- the emulated runtime's state ---------------------------------------------------------- */
inline int sc_host_devices = 1;                       /* how many devices exist */
inline int sc_host_current = 0;                       /* the current device */
inline cudaError_t sc_host_last_error = cudaSuccess;  /* what cudaGetLastError returns */
inline cudaError_t sc_host_fail_next = cudaSuccess;   /* injected into the next launch */
inline cudaError_t sc_host_device_error = cudaSuccess;/* returned by every device query */
inline cudaError_t sc_host_device_error_after = cudaSuccess; /* ... from the next launch on */
inline long long sc_host_launch_count = 0;
inline int sc_host_launch_device = -1;
inline void *sc_host_launch_stream = nullptr;
inline unsigned int sc_host_launch_grid = 0, sc_host_launch_block = 0;

inline cudaError_t cudaGetDeviceCount(int *count) {
    *count = sc_host_device_error ? 0 : sc_host_devices;
    if (sc_host_device_error) return sc_host_device_error;
    return sc_host_devices > 0 ? cudaSuccess : cudaErrorNoDevice;
}
inline cudaError_t cudaGetDevice(int *device) {
    if (sc_host_device_error) return sc_host_device_error;
    *device = sc_host_current;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) {
    if (sc_host_device_error) return sc_host_device_error;
    if (device < 0 || device >= sc_host_devices) return cudaErrorInvalidDevice;
    sc_host_current = device;
    return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
    const cudaError_t e = sc_host_last_error;
    sc_host_last_error = cudaSuccess;
    return e;
}

/* `kernel<<<grid, block, shared, stream>>>(args)` becomes
 * `sc_host_launch(kernel, grid, block, shared, stream)(args)`: every thread of every block in
 * turn, with CUDA's limits on the launch shape checked first. */
template <typename Kernel>
struct sc_host_launcher {
    Kernel kernel;
    dim3 grid, block;
    size_t shared;
    cudaStream_t stream;

    template <typename... Args>
    void operator()(Args... args) const {
        const bool bad_shape = grid.x == 0 || grid.x > 0x7fffffffu || block.x == 0 ||
                               block.x > 1024 || grid.y != 1 || grid.z != 1 ||
                               block.y != 1 || block.z != 1 || shared != 0;
        if (bad_shape || sc_host_fail_next) {
            sc_host_last_error = bad_shape ? cudaErrorInvalidConfiguration : sc_host_fail_next;
            sc_host_fail_next = cudaSuccess;
            return;
        }
        ++sc_host_launch_count;
        if (sc_host_device_error_after) {
            sc_host_device_error = sc_host_device_error_after;
            sc_host_device_error_after = cudaSuccess;
        }
        sc_host_launch_device = sc_host_current;
        sc_host_launch_stream = (void *)stream;
        sc_host_launch_grid = grid.x;
        sc_host_launch_block = block.x;
        gridDim = grid;
        blockDim = block;
        for (unsigned int b = 0; b < grid.x; ++b)
            for (unsigned int t = 0; t < block.x; ++t) {
                blockIdx = uint3{b, 0, 0};
                threadIdx = uint3{t, 0, 0};
                kernel(args...);
            }
    }
};

template <typename Kernel>
sc_host_launcher<Kernel> sc_host_launch(Kernel kernel, dim3 grid, dim3 block, size_t shared,
                                        cudaStream_t stream) {
    return {kernel, grid, block, shared, stream};
}

/* --- controls for the tests (tests/cuda_emulation.py) -------------------------------------- */
extern "C" {
void sc_host_reset(int devices, int current) {
    sc_host_devices = devices;
    sc_host_current = current;
    sc_host_last_error = sc_host_fail_next = sc_host_device_error = cudaSuccess;
    sc_host_device_error_after = cudaSuccess;
    sc_host_launch_count = 0;
    sc_host_launch_device = -1;
    sc_host_launch_stream = nullptr;
    sc_host_launch_grid = sc_host_launch_block = 0;
}
void sc_host_fail_next_launch(int code) { sc_host_fail_next = (cudaError_t)code; }
void sc_host_fail_device_calls(int code) { sc_host_device_error = (cudaError_t)code; }
void sc_host_fail_device_calls_after_launch(int code) {
    sc_host_device_error_after = (cudaError_t)code;
}
int sc_host_current_device(void) { return sc_host_current; }
long long sc_host_last_launch(int *device, void **stream, unsigned int *grid,
                              unsigned int *block) {
    *device = sc_host_launch_device;
    *stream = sc_host_launch_stream;
    *grid = sc_host_launch_grid;
    *block = sc_host_launch_block;
    return sc_host_launch_count;
}
}

#endif /* SC_HOST_CUDA_RUNTIME_H */
