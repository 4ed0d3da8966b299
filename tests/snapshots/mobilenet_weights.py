"""The weights of the mn fixture: drawn from a seed, by the script that made the reference outputs (in its own
environment) and by tests/test_mobilenet.py alike. torch and numpy only, so both can import it."""
import numpy as np, torch

def seeded_weights(shapes, seed):
    "A state dict for `shapes` (name -> shape, in order) drawn from `seed`: non-trivial BatchNorm statistics too."
    g, sd = torch.Generator().manual_seed(seed), {}
    for k, s in shapes.items():
        r = lambda: torch.randn(s, generator=g)
        if k.endswith('num_batches_tracked'): sd[k] = torch.tensor(0)
        elif k.endswith('running_var'): sd[k] = torch.rand(s, generator=g) + 0.5
        elif k.endswith('running_mean'): sd[k] = r()*0.1
        elif k.endswith('bias'): sd[k] = r()*0.1
        elif len(s) == 1: sd[k] = torch.rand(s, generator=g)*0.5 + 0.5  # BatchNorm scale
        else: sd[k] = r()/np.prod(s[1:])**0.5
    return sd
