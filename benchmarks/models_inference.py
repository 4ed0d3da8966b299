"""CPU inference speed of the PANNs models on 10-s clips: the reference path against ours.

reference: torchlibrosa conv-STFT, fp32, NCHW, `torch.no_grad`          (what the PANNs code runs)
eager:     `torch.stft`, channels-last, `torch.inference_mode`          (`for_inference(model)`)
compiled:  eager + `torch.compile` with frozen weights                  (`for_inference(model, compile=True)`)

Same weights in all three (random, with BatchNorm statistics gathered on test signals so that activations are
well scaled); outputs must agree with the reference to 1e-4 (clipwise probabilities absolute, embeddings relative
to their largest magnitude) on the test clips (which have a -60 dB noise floor); the difference on a clip with
digital silence is recorded too. Writes raw numbers to benchmarks/results/models_inference-cpu.json.
Run: python benchmarks/models_inference.py [--no-compile] [--reps 3]
"""
import argparse, copy, datetime, json, os, platform, statistics, time
from pathlib import Path
import numpy as np, torch
import audioset_nb
from audioset_nb.fileio import atomic_write
from audioset_nb.models import build_model, demo_signal
from audioset_nb.fastpath import FusedConvBlock, for_inference

def clips(batch, seconds=10., sr=32000, noise_floor=1e-3):
    "A batch of different 10-s test signals, with a -60 dB noise floor as in any recording (0: digital silence)."
    rng = np.random.default_rng(batch)
    noise = lambda: noise_floor*rng.standard_normal(int(seconds*sr)).astype(np.float32)
    return torch.from_numpy(np.stack([demo_signal(seconds, sr, seed=i) + noise() for i in range(batch)]))

def calibrate_bn(model, seconds=10.):
    "Give BatchNorm running statistics from real-like input, so that an untrained model's activations are well scaled."
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad(): model.train()(torch.from_numpy(np.stack([demo_signal(seconds,
                                                                               seed=100+i) for i in range(4)])))
    return model.eval()

def max_diff(out, ref):
    "Largest difference: absolute for probabilities, relative to the largest magnitude for other outputs."
    scale = lambda k: 1 if k.endswith('_output') else ref[k].abs().max().item()
    return max((out[k] - ref[k]).abs().max().item()/scale(k) for k in ref)

def prepared_bytes(model):
    "Bytes of weights that the fused conv blocks prepared, beyond the model's own parameters and buffers."
    own = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen, total = set(), 0
    blocks = [m for m in model.modules() if isinstance(m, FusedConvBlock)]
    for t in (t for b in blocks for w in b.prepared.values() for t in w):
        if isinstance(t, torch.Tensor) and (p := t.untyped_storage().data_ptr()) not in own | seen:
            seen.add(p)
            total += t.untyped_storage().nbytes()
    return total

def bench(name, batch, reps, compile):
    "Time the variants of `name` on `batch` clips, interleaving them rep by rep so that machine load hits all alike."
    torch.manual_seed(0)
    ref_model = calibrate_bn(build_model(name, fast_stft=False))
    x = clips(batch)
    models = {'reference': ref_model, 'eager': for_inference(copy.deepcopy(ref_model))}
    if compile: models['compiled'] = for_inference(copy.deepcopy(ref_model), compile=True)
    ctx = {'reference': torch.no_grad}
    row, outs, times = {'model': name, 'batch': batch}, {}, {v: [] for v in models}
    for v, m in models.items():
        with ctx.get(v, torch.inference_mode)():
            t0 = time.perf_counter()
            outs[v] = m(x)
            row[f'{v}_first_call_s'] = time.perf_counter() - t0
    for _ in range(reps):
        for v, m in models.items():
            with ctx.get(v, torch.inference_mode)():
                t0 = time.perf_counter()
                m(x)
                times[v].append(time.perf_counter() - t0)
    ref = outs['reference']
    row['model_bytes'] = sum(t.nbytes for t in list(ref_model.parameters()) + list(ref_model.buffers()))
    row['eager_prepared_weight_bytes'] = prepared_bytes(models['eager'])
    row['reference_output_range'] = [ref['clipwise_output'].min().item(), ref['clipwise_output'].max().item()]
    for v in models:
        t = statistics.median(times[v])
        row.update({f'{v}_s': t, f'{v}_s_all': times[v], f'{v}_clips_per_s': batch/t,
                    f'{v}_speedup': statistics.median(times['reference'])/t})
        if v != 'reference':
            row[f'{v}_max_diff'] = max_diff(outs[v], ref)
            assert row[f'{v}_max_diff'] < 1e-4, f'{name} {v} differs from the reference by {row[f"{v}_max_diff"]}'
    silent = clips(1, noise_floor=0)  # near digital silence the two STFTs' float32 rounding differs most
    with torch.no_grad(): a = ref_model(silent)
    with torch.inference_mode(): b = models['eager'](silent)
    row['eager_max_diff_digital_silence'] = max_diff(b, a)
    print(json.dumps({k: v for k, v in row.items() if not k.endswith('_all')}), flush=True)
    return row

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['Cnn14', 'Cnn6', 'MobileNetV1'])
    p.add_argument('--batches', nargs='+', type=int, default=[1, 8])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--no-compile', action='store_true')
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'models_inference-cpu.json'))
    a = p.parse_args()
    rows = [bench(n, b, a.reps, not a.no_compile) for n in a.models for b in a.batches]
    info = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'device': f'CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, '
                      f'{torch.get_num_threads()} torch threads', 'load_average_at_end': os.getloadavg(),
            'versions': {'torch': torch.__version__, 'numpy': np.__version__, 'audioset_nb': audioset_nb.__version__,
                         'python': platform.python_version()},
            'clip_seconds': 10, 'sample_rate': 32000, 'reps': a.reps, 
             'timing': 'median of reps after one warm-up call; variants interleaved rep by rep',
            'results': rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(info, indent=1))
    print(f'wrote {out}')

if __name__ == '__main__': main()
