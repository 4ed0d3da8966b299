"""Live tagging: latency from input to event line, and CPU use, per model (audioset_tag --stream, ONNX Runtime).

The benchmark plays a stream into `audioset_tag --stream - --onnx MODEL` in real time (16-bit WAV on stdin, 10-ms
chunks paced by the wall clock) and reads its JSON lines as they come. Latency is the wall time from writing the
sample where a sound starts (ends) to reading its start (end) line: decoding, waiting for the hop, the model and
the output together. So that events happen at known times with any model, each zoo model is exported with one
extra class, 'Tone', scored from the loudness of each frame (0.5 at -30 dBFS) and tied to the zoo model's outputs
so that the whole network still runs every hop; the stream holds two 2-s tones. CPU use is the streaming process's
user+system time (ffmpeg's is not counted) during the tones' part of the stream, per second of audio: 1.0 = one
core busy. Decision-level models place events by frame; clip-level ones report ends a window late (by design).
Writes benchmarks/results/stream-cpu.json. Run: python benchmarks/stream.py [--models ...] [--hop 0.5 --window 2]
"""
import argparse, datetime, json, os, platform, struct, subprocess, sys, tempfile, threading, time
from pathlib import Path
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F, onnxruntime as ort
import audioset_nb
from audioset_nb.fileio import atomic_write
from audioset_nb.models import build_model
from audioset_nb.export import export_onnx
from models_inference import calibrate_bn

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf('SC_CLK_TCK')

class Timed(nn.Module):
    "`zoo`'s whole computation, plus class 'Tone' scored from each frame's loudness, so events come at known times."
    def __init__(self, zoo, framewise):
        super().__init__()
        self.zoo, self.front, self.framewise = zoo, zoo.front, framewise
        zoo.fast_stft = False
    def forward(self, x):
        out, hop = self.zoo(x), self.front.hop_size
        e = F.avg_pool1d(F.pad(x[:, None]**2, (hop//2, hop//2)), hop, hop)[:, 0]
        tied = 1e-12*out['clipwise_output'].mean(1, keepdim=True)  # keeps the zoo network in the graph
        fw = torch.sigmoid(2*(10*torch.log10(e + 1e-10) + 30))[..., None] + tied[:, None]
        res = {'clipwise_output': fw.amax(1), 'embedding': out['embedding']}
        return {**res, 'framewise_output': fw} if self.framewise else res

def stream_audio(sr, seconds, tones):
    t = np.arange(int(seconds*sr))/sr
    x = 1e-3*np.random.default_rng(0).standard_normal(len(t))
    for a, b in tones: x += 0.5*np.sin(2*np.pi*440*t)*((t >= a) & (t < b))
    return (np.clip(x, -1, 1)*32767).astype('<i2')

def wav_header(sr):
    return (b'RIFF' + struct.pack('<I', 0xFFFFFFFF) + b'WAVEfmt ' + struct.pack('<IHHIIHH', 16, 1, 1, sr, 2*sr, 2, 16)
            + b'data' + struct.pack('<I', 0xFFFFFFFF))

def cpu_seconds(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12]))/TICK

def run(model_path, sr, args, tones, seconds, cpu_from, cpu_to):
    cmd = [sys.executable, '-c', 'from audioset_nb.stream import tag_cli; tag_cli()', '--stream', '-', '--onnx',
           str(model_path),
           '--labels', 'Tone', '--window_seconds', str(args.window), '--hop_seconds', str(args.hop),
           '--threads', str(args.threads)]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         text=False)
    audio, chunk, marks, cpu = stream_audio(sr, seconds, tones), sr//100, {}, {}
    time.sleep(args.startup)  # imports and model loading happen before the stream starts, as for a live source
    def feed():
        p.stdin.write(wav_header(sr))
        t0 = time.perf_counter()
        for k in range(0, len(audio), chunk):
            while (d := t0 + k/sr - time.perf_counter()) > 0: time.sleep(d)
            p.stdin.write(audio[k:k+chunk].tobytes())
            p.stdin.flush()
            marks[k] = time.perf_counter()
            if k == int(cpu_from*sr): cpu['from'] = (cpu_seconds(p.pid), time.perf_counter())
            if k == int(cpu_to*sr): cpu['to'] = (cpu_seconds(p.pid), time.perf_counter())
        p.stdin.close()
    th = threading.Thread(target=feed)
    th.start()
    lines = [(time.perf_counter(), json.loads(l)) for l in p.stdout]
    th.join()
    p.wait()
    if p.returncode: raise RuntimeError(p.stderr.read().decode())
    written = lambda t: marks[int(round(t*sr))//chunk*chunk]  # when the chunk holding time t was written
    truths = [s for a, b in tones for s in (a, b)]
    events = [{**e, 'latency_s': at - written(truth)} for (at, e), truth in zip(lines, truths)]
    use = (cpu['to'][0] - cpu['from'][0])/(cpu['to'][1] - cpu['from'][1])
    return events, use

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['Cnn14_DecisionLevelMax', 'Cnn14', 'Cnn6', 'MobileNetV1'])
    p.add_argument('--window', type=float, default=2.)
    p.add_argument('--hop', type=float, default=0.5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--seconds', type=float, default=13.)
    p.add_argument('--tones', type=float, nargs='+', default=[3., 5., 8., 10.])
    p.add_argument('--startup', type=float, default=8., help='seconds to let the process load before streaming')
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'stream-cpu.json'))
    a = p.parse_args()
    tones = list(zip(a.tones[0::2], a.tones[1::2]))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in a.models:
            torch.manual_seed(0)
            m = Timed(calibrate_bn(build_model(name, fast_stft=False)), framewise='DecisionLevel' in name)
            path = export_onnx(m, Path(d)/f'{name}.onnx', labels=['Tone'], model_type=name)
            events, cpu = run(path, m.front.sample_rate, a, tones, a.seconds, tones[0][0] - 1, tones[-1][1])
            assert [e['event'] for e in events] == ['start', 'end']*len(tones), events
            row = {'model': name, 'framewise': m.framewise, 'window_s': a.window, 'hop_s': a.hop,
                   'start_latency_s': [e['latency_s'] for e in events if e['event'] == 'start'],
                   'end_latency_s': [e['latency_s'] for e in events if e['event'] == 'end'],
                   'event_time_error_s': [round(e['time'] - t, 3) for e, t in zip(events, a.tones)],
                   'cpu_cores_busy': cpu, 'events': events}
            print(json.dumps({k: v for k, v in row.items() if k != 'events'}), flush=True)
            rows.append(row)
    info = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'device': f'CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, '
                      f'ONNX Runtime threads {a.threads}',
            'load_average_at_end': os.getloadavg(),
            'versions': {'torch': torch.__version__, 'onnxruntime': ort.__version__, 'numpy': np.__version__,
                         'audioset_nb': audioset_nb.__version__, 'python': platform.python_version()},
            'stream_seconds': a.seconds, 'tones_s': tones, 'results': rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(info, indent=1))
    print(f'wrote {out}')

if __name__ == '__main__': main()
