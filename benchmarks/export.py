"""CPU inference speed of exported models: ONNX Runtime against torch's fast path and the reference path.

reference: torchlibrosa conv-STFT, fp32, NCHW, `torch.no_grad`        (what the PANNs code runs)
fast:      `for_inference(model)` under `torch.inference_mode`         (torch's CPU fast path, audioset_tag's default)
onnx:      the `export_onnx` file in ONNX Runtime's CPU provider        (audioset_tag --onnx; conv-STFT inside)

Same weights in all three (random, BatchNorm statistics from test signals, as in models_inference.py), 10-s clips
with a -60 dB noise floor; outputs must agree to 1e-4 (probabilities absolute, embeddings relative to their largest
magnitude). ONNX Runtime and torch get the same number of threads. Variants are interleaved rep by rep.
Writes benchmarks/results/export-cpu.json. Run: python benchmarks/export.py [--models Cnn14 ...] [--reps 5]
"""
import argparse, datetime, json, os, platform, statistics, tempfile, time
from pathlib import Path
import numpy as np, torch, onnx, onnxruntime as ort
import audioset_nb
from audioset_nb.fileio import atomic_write
from audioset_nb.models import build_model
from audioset_nb.fastpath import for_inference
from audioset_nb.export import export_onnx
from models_inference import calibrate_bn, clips, max_diff

def bench(name, batches, reps, seconds, folder):
    torch.manual_seed(0)
    ref_model = calibrate_bn(build_model(name, fast_stft=False))
    path = export_onnx(ref_model, Path(folder)/f'{name}.onnx')
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
    fast = for_inference(build_model(name))
    fast.load_state_dict(ref_model.state_dict())
    names = [o.name for o in sess.get_outputs()]
    run = {'reference': lambda x: ref_model(x), 'fast': lambda x: fast(x),
           'onnx': lambda x: dict(zip(names, map(torch.from_numpy, sess.run(None, {'waveform': x.numpy()}))))}
    ctx = {'reference': torch.no_grad, 'fast': torch.inference_mode, 'onnx': torch.no_grad}
    rows = []
    for batch in batches:
        x, outs, times = clips(batch, seconds), {}, {v: [] for v in run}
        for v, f in run.items():
            with ctx[v](): outs[v] = f(x)  # warm-up; also the outputs compared
        for _ in range(reps):
            for v, f in run.items():
                with ctx[v]():
                    t0 = time.perf_counter()
                    f(x)
                    times[v].append(time.perf_counter() - t0)
        med = {v: statistics.median(t) for v, t in times.items()}
        row = {'model': name, 'batch': batch, 'onnx_bytes': path.stat().st_size,
               **{f'{v}_s': med[v] for v in run}, **{f'{v}_s_all': times[v] for v in run},
               **{f'{v}_clips_per_s': batch/med[v] for v in run},
               'onnx_vs_fast': med['fast']/med['onnx'], 'onnx_vs_reference': med['reference']/med['onnx'],
               'fast_vs_reference': med['reference']/med['fast'],
               'onnx_max_diff_vs_reference': max_diff(outs['onnx'], outs['reference']),
               'onnx_max_diff_vs_fast': max_diff(outs['onnx'], outs['fast'])}
        assert row['onnx_max_diff_vs_reference'] < 1e-4 and row['onnx_max_diff_vs_fast'] < 1e-4, row
        print(json.dumps({k: v for k, v in row.items() if not k.endswith('_all')}), flush=True)
        rows.append(row)
    return rows

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['Cnn14', 'Cnn6', 'MobileNetV1', 'Cnn14_DecisionLevelMax'])
    p.add_argument('--batches', nargs='+', type=int, default=[1, 8])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--seconds', type=float, default=10.)
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'export-cpu.json'))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d: rows = [r for n in a.models for r in bench(n, a.batches, a.reps, a.seconds,
                                                                                        d)]
    info = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'device': f'CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, '
                      f'{torch.get_num_threads()} torch/ONNX Runtime threads', 'load_average_at_end': os.getloadavg(),
            'versions': {'torch': torch.__version__, 'onnx': onnx.__version__, 'onnxruntime': ort.__version__,
                         'numpy': np.__version__, 'audioset_nb': audioset_nb.__version__,
                          'python': platform.python_version()},
            'clip_seconds': a.seconds, 'opset': 17, 'reps': a.reps,
            'timing': 'median of reps after one warm-up call; variants interleaved rep by rep', 'results': rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(info, indent=1))
    print(f'wrote {out}')

if __name__ == '__main__': main()
