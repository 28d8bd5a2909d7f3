"""A short example: one layer of LIF neurons, trained by surrogate-gradient BPTT to fire at a
target rate, on the CPU backend."""
import torch

import spikecore

torch.manual_seed(0)
T, batch, features = 16, 64, 128
layer = torch.nn.Linear(features, features)
lif = spikecore.MultiStepLIFNode(tau=2.0, surrogate_function="ATan")
opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
x = torch.rand(T, batch, features)
target_rate = 0.25

print(f"spikecore {spikecore.__version__}: CPU backend built={spikecore.cpu_available()}, "
      f"OpenMP={spikecore.openmp_enabled()}, threads={torch.get_num_threads()}")
for step in range(60):
    lif.reset()
    spikes = lif(layer(x))                     # [T, batch, features]
    rate = spikes.mean()
    loss = (spikes.mean(0) - target_rate).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 10 == 0 or step == 59:
        print(f"step {step:2d}  firing rate {rate.item():.3f}  loss {loss.item():.5f}")
