"""CPU tagging at each precision: Cnn14 on 10-s clips, the fp32 fast path against bf16, ONNX Runtime fp32 and int8.

reference: the PANNs code's model: conv-STFT, fp32, NCHW, `torch.no_grad`
fp32:      the fast path (`for_inference`): the baseline of every ratio
bf16:      the fast path under CPU bf16 autocast, the front end in fp32 (`--precision bf16`)
ort_fp32:  `export_onnx`'s file in ONNX Runtime
ort_int8:  that file statically quantized (`quantize_int8`, as `audioset_export --precision int8` does), calibrated on
           real recordings held apart from those it is scored on

Same weights in all (random, BatchNorm statistics from real recordings so that activations are well scaled); the
variants run interleaved rep by rep, so that machine load hits all alike; the load average is recorded, and a ratio
taken at a load above 3 is not a speed claim. GFLOP/s: `count_flops` (conv-STFT included) per clip over the time.
Agreement with fp32 (load plays no part in it): on real recordings (each file's first 10 s, repeated to 10 s if
shorter), top-1 agreement, top-5 overlap and the largest probability difference. The weights are random, so the
classes' scores lie closer together than a trained model's: the agreement is a pessimistic measure of the rounding.
Writes raw numbers to benchmarks/results/precision-cpu.json.
Run: python benchmarks/precision.py [--reps 5] [--recordings /work/cache-real/root] [--eval_clips 64]
--agreement CKPT --workspace W: no speed; a trained checkpoint's fp32 fast path against bf16, ORT fp32 and the int8
variants in INT8 (calibrated on W's packed balanced_train), on W's packed eval clips (top-1, top-5, eval mAP) and on
real recordings at the checkpoint's rate; writes --out.
"""
import argparse, copy, datetime, json, os, platform, statistics, subprocess, tempfile, time
from pathlib import Path
import numpy as np, torch
import onnxruntime as ort
import audioset_nb
from audioset_nb.audio import load_audio, resample
from audioset_nb.export import calibrated, export_onnx, quantize_int8
from audioset_nb.fastpath import for_inference, fp32_front
from audioset_nb.fileio import atomic_write
from audioset_nb.models import build_model, count_flops, demo_signal
from audioset_nb.tagging import audio_files

SR, N = 32000, 320000

def recordings(root, n, skip=0, sr=SR):
    "`n` real recordings under `root` (a manifest's test split if it has one), each its first 10 s, repeated if short."
    root = Path(root)
    if (root/'manifest.csv').is_file():
        import csv
        rows = list(csv.DictReader(open(root/'manifest.csv')))
        paths = [root/r['path'] for r in rows if r['split'] == 'test'] + [root/r['path'] for r in rows
                                                                         if r['split'] != 'test']
    else: paths = audio_files(root)
    out = []
    for p in paths[skip:]:
        try: x = load_audio(p, sr, duration=10.)
        except ValueError: continue
        if len(x) < sr//2 or np.abs(x).max() < 1e-3: continue  # under half a second, or silent
        out.append(np.resize(x, 10*sr).astype(np.float32))
        if len(out) == n: break
    return np.stack(out)

def synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([demo_signal(10., SR, seed=seed + i) + 1e-3*rng.standard_normal(N).astype(np.float32)
                     for i in range(n)])

def cpu_info():
    flags = open('/proc/cpuinfo').read().split('flags')[1].split('\n')[0].split()
    mhz = [float(l.split(':')[1]) for l in open('/proc/cpuinfo') if l.startswith('cpu MHz')]
    name = next((l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '')
    return dict(name=name, cores=os.cpu_count(), mhz=max(mhz) if mhz else None,
                isa=sorted(f for f in flags if f.startswith(('avx512', 'amx', 'avx_vnni'))))

def peaks(info):
    "Peak GFLOP/s of the cores, by instruction set, from the reported clock: an upper bound, not a measurement."
    ghz, c = (info['mhz'] or 0)/1e3, info['cores']
    return {'fp32_avx512_fma': c*ghz*2*16*2,   # 2 FMA units x 16 lanes x 2 ops
            'int8_avx512_vnni': c*ghz*2*64*2,  # 2 units x 64 uint8*int8 products (VPDPBUSD) x 2 ops
            'bf16_avx512': c*ghz*2*32*2}       # VDPBF16PS: 32 bf16 products per unit (AMX tiles go higher)

class Variants:
    "Each precision's runner on the same weights: `run[name](x) -> clipwise (B, 527)`."
    def __init__(self, model, calibration, folder):
        self.model = model
        fast = for_inference(copy.deepcopy(model))
        bf = fp32_front(for_inference(copy.deepcopy(model)))
        export_onnx(model, folder/'fp32.onnx', labels=[str(i) for i in range(527)], model_type='Cnn14')
        t0 = time.perf_counter()
        quantize_int8(folder/'fp32.onnx', folder/'int8.onnx', list(calibration))
        self.quantize_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count()
        sess = {k: ort.InferenceSession(str(folder/f'{k}.onnx'), opts, providers=['CPUExecutionProvider'])
                for k in ('fp32', 'int8')}
        ref = copy.deepcopy(model)
        ref.fast_stft = False
        def torch_run(m, bf16=False, grad=torch.inference_mode):
            def run(x):
                with grad(), torch.autocast('cpu', torch.bfloat16, enabled=bf16):
                    return m(torch.from_numpy(x))['clipwise_output'].float().numpy()
            return run
        ort_run = lambda s: lambda x: s.run(['clipwise_output'], {'waveform': x})[0]
        self.run = {'reference': torch_run(ref.eval(), grad=torch.no_grad), 'fp32': torch_run(fast),
                    'bf16': torch_run(bf, bf16=True), 'ort_fp32': ort_run(sess['fp32']),
                    'ort_int8': ort_run(sess['int8'])}

def agreement(run, x, batch=8):
    "Each variant against fp32 on the clips `x`: top-1 agreement, mean top-5 overlap, largest difference."
    out = {k: np.concatenate([f(x[i:i + batch]) for i in range(0, len(x), batch)]) for k, f in run.items()}
    base, top5 = out['fp32'], lambda p: np.argsort(-p, 1)[:, :5]
    res = {}
    for k, p in out.items():
        overlap = [len(set(a) & set(b))/5 for a, b in zip(top5(p), top5(base))]
        res[k] = dict(top1_agreement=float((p.argmax(1) == base.argmax(1)).mean()),
                      top5_overlap=float(np.mean(overlap)), max_prob_difference=float(np.abs(p - base).max()))
    margin = np.sort(base, 1)
    res['fp32_top1_margin_median'] = float(np.median(margin[:, -1] - margin[:, -2]))
    return res

def speed(run, x, batch, reps, flops):
    "Median seconds per clip at `batch` for each variant, interleaved rep by rep, after one warm-up call."
    xb = np.ascontiguousarray(x[:batch])
    for f in run.values(): f(xb)
    times, loads = {k: [] for k in run}, []
    for _ in range(reps):
        loads.append(os.getloadavg()[0])
        for k, f in run.items():
            t0 = time.perf_counter()
            f(xb)
            times[k].append((time.perf_counter() - t0)/batch)
    per_clip = {k: statistics.median(v) for k, v in times.items()}
    return dict(batch=batch, load_average_1min=loads, s_per_clip=per_clip, s_per_clip_all=times,
                ratio_to_fp32={k: per_clip['fp32']/v for k, v in per_clip.items()},
                gflops={k: flops/v/1e9 for k, v in per_clip.items()},
                speed_claim=max(loads) <= 3)

def packed(path, sr, n=0):
    "Rows of a packed waveform .h5 (all, or `n` spread evenly) resampled to `sr`, and their targets."
    import h5py
    with h5py.File(path, 'r') as f:
        rows = np.arange(len(f['waveform'])) if not n else np.unique(
            np.linspace(0, len(f['waveform']) - 1, n).round().astype(int))
        src = int(f.attrs['sample_rate'])
        x = np.stack([resample(f['waveform'][i].astype(np.float32)/32767., src, sr) for i in rows])
        return x, f['target'][:][rows]

def compare(out, base='fp32'):
    "Each variant's clipwise scores `out[k]` (clips, classes) against `out[base]`: top-1, top-5, largest difference."
    top5 = lambda p: np.argsort(-p, 1)[:, :5]
    res = {}
    for k, p in out.items():
        overlap = [len(set(a) & set(b))/5 for a, b in zip(top5(p), top5(out[base]))]
        res[k] = dict(top1_agreement=float((p.argmax(1) == out[base].argmax(1)).mean()),
                      top1_disagreements=int((p.argmax(1) != out[base].argmax(1)).sum()),
                      top5_overlap=float(np.mean(overlap)), max_prob_difference=float(np.abs(p - out[base]).max()))
    margin = np.sort(out[base], 1)
    res['fp32_top1_margin_median'] = float(np.median(margin[:, -1] - margin[:, -2]))
    res['fp32_top1_margin_min'] = float((margin[:, -1] - margin[:, -2]).min())
    return res

INT8 = {'ort_int8': {}, 'ort_int8_quantized_head': {'head': False}}  # `quantize_int8`'s keyword arguments

def trained(a):
    "Agreement and eval mAP of each precision for a trained checkpoint (`--agreement`), calibrated on a packed set."
    from audioset_nb.inference import load_tagger
    from audioset_nb.train import score
    fp32 = load_tagger(a.agreement)
    sr = fp32.sample_rate
    bf = load_tagger(a.agreement, precision='bf16').model
    ws = Path(a.workspace)/'hdf5s'/'waveforms'
    t0 = time.process_time()
    cal = list(packed(ws/'balanced_train.h5', sr, a.calibration_clips)[0])  # calibration: never the eval set
    ev, target = packed(ws/'eval.h5', sr, a.mini_eval_clips)
    real = recordings(a.recordings, a.real_clips, sr=sr)
    print(f'{len(cal)} calibration clips, {len(ev)} eval clips, {len(real)} recordings at {sr} Hz', flush=True)
    def torch_run(m, bf16=False):
        def run(x):
            with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16, enabled=bf16):
                return m(torch.from_numpy(x))['clipwise_output'].float().numpy()
        return run
    run = {'fp32': torch_run(fp32.model), 'bf16': torch_run(bf, bf16=True)}
    with tempfile.TemporaryDirectory() as d:
        export_onnx(fp32.model, Path(d)/'fp32.onnx', list(fp32.labels), fp32.model_type)
        paths, quantize_s = {'ort_fp32': Path(d)/'fp32.onnx'}, {}
        for k, kw in INT8.items():
            t = time.perf_counter()
            paths[k] = quantize_int8(Path(d)/'fp32.onnx', Path(d)/f'{k}.onnx', cal, **kw)
            quantize_s[k] = time.perf_counter() - t
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count()
        for k, p in paths.items():
            s = ort.InferenceSession(str(p), opts, providers=['CPUExecutionProvider'])
            run[k] = lambda x, s=s: s.run(['clipwise_output'], {'waveform': x})[0]
        outs = {}
        for name, x in (('eval', ev), ('recordings', real)):
            outs[name] = {k: np.concatenate([f(x[i:i + 8]) for i in range(0, len(x), 8)]) for k, f in run.items()}
    res = {name: compare(o) for name, o in outs.items()}
    used = target.any(0)  # the mini AudioSet's classes: the others have no positives
    res['eval_mAP'] = {k: score(target[:, used], p[:, used]).mAP for k, p in outs['eval'].items()}
    res['eval_mAP_minus_fp32'] = {k: v - res['eval_mAP']['fp32'] for k, v in res['eval_mAP'].items()}
    for k in ('eval', 'recordings', 'eval_mAP_minus_fp32'): print(k, json.dumps(res[k]), flush=True)
    return dict(res, calibration_clips=len(cal), eval_clips=len(ev), recording_clips=len(real), sample_rate=sr,
                int8_variants=INT8, int8_quantize_s=quantize_s, cpu_s=time.process_time() - t0,
                load_average_at_end=os.getloadavg()[0])

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--recordings', default='/work/cache-real/root', help='real recordings: folder or manifest root')
    p.add_argument('--eval_clips', type=int, default=64)
    p.add_argument('--calibration_clips', type=int, default=16)
    p.add_argument('--batches', nargs='+', type=int, default=[1, 8])
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'precision-cpu.json'))
    p.add_argument('--agreement', help='a trained checkpoint: measure agreement and eval mAP only, not speed')
    p.add_argument('--workspace', help='with --agreement: its hdf5s/waveforms/{balanced_train,eval}.h5')
    p.add_argument('--real_clips', type=int, default=200, help='with --agreement: recordings to compare on')
    p.add_argument('--mini_eval_clips', type=int, default=0, help='with --agreement: eval clips (0: all)')
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    if a.agreement: return agreement_json(a, trained(a))
    real = Path(a.recordings).exists()
    x = recordings(a.recordings, a.eval_clips + a.calibration_clips) if real else synthetic(a.eval_clips + 16)
    held, cal = x[:a.eval_clips], x[a.eval_clips:]
    torch.manual_seed(0)
    model = calibrated(build_model('Cnn14', fast_stft=False), torch.from_numpy(cal[:8]))  # BatchNorm statistics
    flops = count_flops(model)
    with tempfile.TemporaryDirectory() as d:
        v = Variants(model, cal, Path(d))
        agree = agreement(v.run, held)
        print(json.dumps(agree), flush=True)
        rows = [speed(v.run, held, b, a.reps, flops) for b in a.batches]
        for r in rows:
            keys = ('batch', 'load_average_1min', 's_per_clip', 'ratio_to_fp32')
            print(json.dumps({k: r[k] for k in keys}), flush=True)
    info = cpu_info()
    result = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'device': f"CPU: {info['name']}, {info['cores']} cores, {info['mhz']} MHz; torch and ONNX Runtime on "
                        f"{os.cpu_count()} threads", 'cpu': info, 'peak_gflops_estimate': peaks(info),
              'load_average_at_start_and_end': [rows[0]['load_average_1min'][0], os.getloadavg()[0]],
              'versions': {'torch': torch.__version__, 'onnxruntime': ort.__version__, 'numpy': np.__version__,
                           'audioset_nb': audioset_nb.__version__, 'python': platform.python_version(),
                           'git': subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                                 text=True, cwd=Path(__file__).parent).stdout.strip()},
              'model': 'Cnn14 (random weights, BatchNorm statistics from 8 calibration recordings)',
              'gflop_per_clip': flops/1e9, 'clip_seconds': 10, 'sample_rate': SR,
              'recordings': str(a.recordings) if real else 'synthetic (demo_signal)',
              'eval_clips': len(held), 'calibration_clips': len(cal), 'int8_quantize_s': v.quantize_s,
              'agreement_with_fp32': agree, 'speed': rows, 'reps': a.reps,
              'timing': 'median per clip of reps after one warm-up call; variants interleaved rep by rep'}
    atomic_write(Path(a.out), json.dumps(result, indent=1))
    print(f'wrote {a.out}')

def agreement_json(a, res):
    info = cpu_info()
    result = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'device': f"CPU: {info['name']}, {info['cores']} cores", 'checkpoint': str(a.agreement),
              'versions': {'torch': torch.__version__, 'onnxruntime': ort.__version__, 'numpy': np.__version__,
                           'audioset_nb': audioset_nb.__version__, 'python': platform.python_version()},
              'recordings': str(a.recordings), **res}
    atomic_write(Path(a.out), json.dumps(result, indent=1))
    print(f'wrote {a.out}')

if __name__ == '__main__': main()
