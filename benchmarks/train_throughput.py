"""Training throughput: examples/s and the fraction of time waiting for data, per model, batch size and speed-up.

Each speed-up of the training loop is switched off on its own (fp32 instead of bf16, NCHW instead of channels_last,
the torchlibrosa conv-STFT instead of `torch.stft`, a host sync every step, compile on) beside the reference-style
configuration (fp32, conv-STFT, NCHW, loss read every step) and ours, in the same run on the same data. The loop is
`audioset_nb.train.fit` itself, fed by the real loader (`AudioSetDataset` over a synthetic HDF5, `RandomSampler`).

    python benchmarks/train_throughput.py                # CPU: 1-s clips, small batches, Cnn6 and MobileNetV1
    python benchmarks/train_throughput.py --cuda         # GPU: 10-s clips, Cnn14/Cnn6/MobileNetV1 at batch 32/64/128
"""
import argparse, datetime, json, os, platform, tempfile
from pathlib import Path
import h5py, numpy as np, torch
import audioset_nb
from audioset_nb.data import AudioSetDataset, RandomSampler, make_loader
from audioset_nb.fileio import default_workers
from audioset_nb.models import build_model
from audioset_nb.train import Dist, clip_bce, fit

OURS = dict(bf16=True, channels_last=True, fast_stft=True, sync=False, compile=False)
REFERENCE = dict(bf16=False, channels_last=False, fast_stft=False, sync=True, compile=False)
ABLATIONS = {'ours': {}, 'fp32': dict(bf16=False), 'nchw': dict(channels_last=False),
             'conv_stft': dict(fast_stft=False),
             'sync_every_step': dict(sync=True), 'compile': dict(compile=True)}

def synthetic_hdf5(path:Path, n:int, samples:int, sr:int)->Path:
    "A waveform HDF5 in the reference layout holding `n` clips of noise with random labels."
    rng = np.random.default_rng(0)
    with h5py.File(path, 'w') as f:
        f.create_dataset('audio_name', data=np.array([f'Y{i:011d}.wav'.encode() for i in range(n)], dtype='S20'))
        f.create_dataset('waveform', data=(rng.standard_normal((n, samples))*3000).astype(np.int16))
        f.create_dataset('target', data=rng.random((n, 527)) < 0.01)
        f.attrs['sample_rate'] = sr
    return path

def run_one(model_type, batch, v, ds, dev, steps, workers, sr):
    "examples/s and data-wait fraction of `steps` timed iterations after as many warm-up iterations."
    torch.manual_seed(0)
    model = build_model(model_type, sample_rate=sr, fast_stft=v['fast_stft']).to(dev)
    if v['channels_last']: model = model.to(memory_format=torch.channels_last)
    if v['compile']: model = torch.compile(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    dl = make_loader(ds, RandomSampler(len(ds), batch, seed=0), workers, pin_memory=dev.type == 'cuda')
    dl.generator = torch.Generator().manual_seed(0)
    recs = []
    fit(model, opt, dl, clip_bce, lambda m: {}, lambda it, keep: None, recs.append, iterations=2*steps,
        eval_every=10**9, save_every=10**9, log_every=1 if v['sync'] else steps, dst=Dist(device=dev), amp=v['bf16'],
        progress=False)
    timed = [r for r in recs if steps < r['iteration'] <= 2*steps and 'loss' in r]
    secs = [r['iteration'] - p['iteration'] for p, r in zip([dict(iteration=steps)] + timed, timed)]
    dts = [n*batch/r['examples_per_s'] for n, r in zip(secs, timed)]
    return dict(examples_per_s=sum(n*batch for n in secs)/sum(dts),
                data_wait=sum(d*r['data_wait'] for d, r in zip(dts, timed))/sum(dts))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cuda', action='store_true')
    p.add_argument('--models', nargs='+')
    p.add_argument('--batches', nargs='+', type=int)
    p.add_argument('--seconds', type=float)
    p.add_argument('--steps', type=int)
    p.add_argument('--variants', nargs='+', help=f'reference and any of {", ".join(ABLATIONS)}')
    p.add_argument('--repeat', type=int, help='runs of each variant, interleaved; the median is reported')
    p.add_argument('--workers', type=int, default=None)
    p.add_argument('--out', default=None)
    a = p.parse_args()
    gpu = a.cuda and torch.cuda.is_available()
    dev = torch.device('cuda' if gpu else 'cpu')
    models = a.models or (['Cnn14', 'Cnn6', 'MobileNetV1'] if gpu else ['Cnn6', 'MobileNetV1'])
    batches = a.batches or ([32, 64, 128] if gpu else [8, 16])
    seconds, steps = a.seconds or (10. if gpu else 1.), a.steps or (20 if gpu else 4)
    repeat = a.repeat or (1 if gpu else 3)
    # bf16 autocast and compile are GPU speed-ups: on CPU the bf16 switch does nothing and compiling takes minutes
    variants = a.variants or (['reference', *ABLATIONS] if gpu else ['reference', 'ours', 'conv_stft', 'nchw',
                                                                     'sync_every_step'])
    workers = default_workers('loading') if a.workers is None else a.workers
    if gpu: torch.backends.cudnn.benchmark = True
    sr = 32000
    out = dict(device=torch.cuda.get_device_name() if gpu else platform.processor() or platform.machine(),
               cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
               audioset_nb=audioset_nb.__version__,
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               seconds=seconds, sample_rate=sr, steps=steps, repeat=repeat, loader_workers=workers,
               note=None if gpu else 'CPU run: 1-s clips; bf16 autocast and channels_last act only on CUDA in the loop '
                                     '(channels_last is still applied to the weights here), compile left out', runs=[])
    with tempfile.TemporaryDirectory() as d:
        ds = AudioSetDataset(synthetic_hdf5(Path(d)/'bench.h5', max(batches)*4, int(seconds*sr), sr), sr)
        for m in models:
            for b in batches:
                got = {name: [] for name in variants}
                for _ in range(repeat):  # interleaved, so a burst of load elsewhere hits every variant alike
                    for name in variants:
                        v = REFERENCE if name == 'reference' else {**OURS, **ABLATIONS[name]}
                        got[name].append(run_one(m, b, v, ds, dev, steps, workers, sr))
                ref = float(np.median([r['examples_per_s'] for r in got['reference']])) if 'reference' in got else None
                for name, rs in got.items():
                    eps, wait = (float(np.median([r[k] for r in rs])) for k in ('examples_per_s', 'data_wait'))
                    r = dict(model=m, batch=b, variant=name, switches=REFERENCE if name == 'reference' else {**OURS,
                            **ABLATIONS[name]},
                             examples_per_s=eps, data_wait=wait, all_examples_per_s=[r['examples_per_s'] for r in rs],
                             vs_reference=eps/ref if ref else None)
                    out['runs'].append(r)
                    vs = f"  x{r['vs_reference']:.2f}" if ref else ''
                    print(f"{m:12s} batch {b:4d} {name:16s} {eps:8.1f} ex/s  wait {wait:.3f}" + vs, flush=True)
    path = Path(a.out or Path(__file__).parent/'results'/f'train_throughput-{"gpu" if gpu else "cpu"}.json')
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(out, indent=1) + '\n')
    tmp.replace(path)
    print(f'wrote {path}')

if __name__ == '__main__': main()
