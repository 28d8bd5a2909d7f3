"""Shared test helpers: parameter grids, input makers and tolerances."""
import itertools
import zlib

import torch
from hypothesis import strategies as st

from spikecore import surrogate
from spikecore.config import NeuronConfig

# (neuron, detach_input): the three charges.
CHARGES = [("IF", False), ("LIF", False), ("LIF", True)]
RESETS = [0.0, None, -0.3]          # hard to 0, soft, hard to a negative V_r
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def make_cfg(neuron="LIF", detach_input=False, v_reset=0.0, surrogate_index=0,
             detach_reset=False, v_threshold=1.0, tau=2.0, alpha=2.0):
    return NeuronConfig.build(neuron, v_threshold, v_reset,
                              1.0 / tau if neuron == "LIF" else None, detach_input, alpha,
                              surrogate_index, detach_reset)


#: the grid's threshold, time constant and surrogate sharpness: values at which distinct
#: formulas differ (at θ = 1, τ = 2, α = 2, the defaults, H - S·θ equals H - S, dH/dX equals
#: dH/dV for LIF, and α/2 = 1 hides a lost factor α in several surrogates)
GRID_PARAMS = dict(v_threshold=0.8, tau=3.0, alpha=3.0)


def all_configs():
    """Every neuron x reset x detach_reset x surrogate combination, at :data:`GRID_PARAMS`."""
    for (neuron, di), v_reset, dr, sg in itertools.product(
            CHARGES, RESETS, (False, True), range(len(surrogate.SURROGATES))):
        yield make_cfg(neuron, di, v_reset, sg, dr, **GRID_PARAMS)


def cfg_id(cfg):
    reset = "soft" if cfg.v_reset is None else f"hard{cfg.v_reset:g}"
    di = "-detin" if cfg.detach_input else ""
    dr = "-detrst" if cfg.detach_reset else ""
    return f"{cfg.neuron}{di}-{reset}{dr}-{surrogate.NAMES[cfg.surrogate]}"


def cfg_seed(cfg, modulus=1000):
    """A seed for a configuration that is the same in every process (unlike ``hash(str)``)."""
    return zlib.crc32(cfg_id(cfg).encode()) % modulus


def make_inputs(cfg, steps, shape, dtype, seed=0, near_threshold=True):
    """Random inputs and initial potential; a quarter of the first-step inputs put H within
    1e-6 of the threshold (some exactly on it, which must fire)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((steps,) + tuple(shape), generator=g, dtype=torch.float64) * 1.6 - 0.2)
    v0 = torch.rand(tuple(shape), generator=g, dtype=torch.float64) * 0.8 - 0.2
    if near_threshold and steps > 0 and x[0].numel() > 0:
        x = x.to(dtype)
        v0 = v0.to(dtype)
        flat_x, flat_v = x[0].reshape(-1), v0.reshape(-1)
        idx = torch.arange(0, flat_x.numel(), 4)
        offsets = torch.tensor([0.0, 1e-6, -1e-6], dtype=torch.float64)
        for j, i in enumerate(idx.tolist()):
            d = float(offsets[j % 3])
            if cfg.neuron == "IF":   # H = V + X: aim X so that H lands on/near the threshold
                flat_x[i] = (cfg.v_threshold - flat_v[i].double() + d).to(dtype)
                continue
            # LIF with V = θ: H = θ + (X - (θ - V_r))/τ, or θ + X - (θ - V_r)/τ (detach_input)
            flat_v[i] = torch.tensor(cfg.v_threshold, dtype=dtype)
            leak = cfg.v_threshold - cfg.v_rest
            aim = leak * cfg.reciprocal_tau + d if cfg.detach_input else leak + d
            flat_x[i] = torch.tensor(aim, dtype=dtype)
        return x, v0
    return x.to(dtype), v0.to(dtype)


def grad_tol(dtype):
    return {torch.float64: dict(rtol=1e-10, atol=1e-12),
            torch.float32: dict(rtol=1e-4, atol=1e-5),
            torch.float16: dict(rtol=1e-2, atol=1e-2),
            torch.bfloat16: dict(rtol=4e-2, atol=4e-2)}[dtype]


@st.composite
def random_configs(draw):
    """A hypothesis strategy: any neuron, threshold, reset, time constant, surrogate and
    detach options."""
    neuron = draw(st.sampled_from(["IF", "LIF"]))
    return NeuronConfig.build(
        neuron,
        v_threshold=draw(st.floats(-1.0, 2.0)),
        v_reset=draw(st.one_of(st.none(), st.floats(-1.0, 0.5))),
        reciprocal_tau=draw(st.floats(0.01, 1.0)) if neuron == "LIF" else None,
        detach_input=draw(st.booleans()) if neuron == "LIF" else False,
        alpha=draw(st.floats(0.1, 8.0)),
        surrogate=draw(st.integers(0, 6)),
        detach_reset=draw(st.booleans()),
    )
