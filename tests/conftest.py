import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

try:   # property tests: the same examples on every run unless asked to explore
    from hypothesis import settings as _hypothesis_settings
except ImportError:   # the property tests then fail to import, naming hypothesis
    pass
else:
    # "repeatable" (the default, CI): examples derived from each test, so a failure is
    # reproducible and a green run stays green; HYPOTHESIS_PROFILE=explore draws new ones.
    _hypothesis_settings.register_profile("repeatable", derandomize=True)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def _cuda_host_build(tmp_path_factory):
    """cuda/neuron_kernels.cu compiled for the host (tests/cuda_emulation.py), once a session."""
    import importlib.util
    import cuda_emulation
    if cuda_emulation.compiler() is None or importlib.util.find_spec("Cython") is None:
        pytest.skip("the host emulation of the CUDA kernels needs a C++ compiler (g++) and "
                    "Cython (pip install -e '.[test]')")
    return cuda_emulation.EmulatedKernels(
        *cuda_emulation.build(str(tmp_path_factory.mktemp("cuda_host"))))


@pytest.fixture
def cuda_host(_cuda_host_build, monkeypatch):
    """The CUDA backend on CPU tensors, its kernels run on the host: registered for this test as
    backend ``'cuda-host-emulation'``, with a fresh emulated runtime (two devices, device 0
    current). The fixture's value is the emulated kernel module."""
    import cuda_emulation
    from spikecore import backends
    backend = cuda_emulation.EmulatedCUDABackend(_cuda_host_build)
    monkeypatch.setitem(backends._REGISTRY, backend.name, backend)
    _cuda_host_build.reset()
    return _cuda_host_build
