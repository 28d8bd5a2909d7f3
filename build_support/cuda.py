"""CUDA toolkit discovery and nvcc integration for setup.py (filled in by the CUDA backend)."""


def extensions(include_dir):
    return []


def prepare_compiler(compiler, extensions):
    return None
