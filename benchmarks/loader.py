"""Loader benchmark: clips/s out of a packed file through `make_loader`, beside reopen-per-item reading.

Writes a waveform HDF5 of N 10-second int16 rows (and its index) with `audioset_nb.pack`'s layout, then
times batches of 32 drawn by a RandomSampler:
  - `ours`: AudioSetDataset (one HDF5 handle per worker process) through make_loader with 0, 1 and 2 workers;
  - `reopen`: the reference's way, opening the HDF5 file again for every clip, with 0 and 2 workers;
  - `ours-flac`: the compressed (FLAC) store through the same dataset, 0 and 2 workers.
The file sits in the page cache (it was just written), so this measures the CPU cost of reading, not the disk.
Writes benchmarks/results/loader-cpu.json.

    python benchmarks/loader.py             # 1,000 clips, 40 batches per run (about 2 min on 2 cores)
"""
import argparse, datetime, io, json, os, platform, tempfile, time
from itertools import islice
from pathlib import Path
import h5py, numpy as np, psutil, soundfile as sf, torch
from audioset_nb.data import AudioSetDataset, RandomSampler, make_loader
from audioset_nb.pack import write_index
from audioset_nb.audio import to_float32

HERE = Path(__file__).resolve().parent
SR, T = 32000, 320000

class ReopenDataset(AudioSetDataset):
    "The reference's reading: open the waveform file for every item."
    def read(self, hdf5_path, i, target=None):
        with h5py.File(hdf5_path, 'r') as hf:
            return dict(audio_name=hf['audio_name'][i].decode(), waveform=to_float32(hf['waveform'][i]),
                        target=hf['target'][i].astype(np.float32))

def make_file(path:Path, n:int, flac:bool=False):
    "n rows of cheap noise-and-tone audio in the packed layout (int16 rows, or FLAC bytes)."
    g = np.random.default_rng(0)
    with h5py.File(path, 'w') as f:
        f.create_dataset('audio_name', data=np.array([f'Ybench{i:06d}.wav' for i in range(n)], dtype='S20'))
        w = (f.create_dataset('waveform_flac', (n,), h5py.vlen_dtype(np.uint8)) if flac else
             f.create_dataset('waveform', (n, T), np.int16, chunks=(1, T)))
        t = np.arange(T)/SR
        for i in range(n):
            x = (3000*np.sin(2*np.pi*(200 + i)*t) + g.normal(0, 500, T)).astype(np.int16)
            if flac:
                buf = io.BytesIO()
                sf.write(buf, x, SR, format='FLAC', subtype='PCM_16')
                w[i] = np.frombuffer(buf.getvalue(), np.uint8)
            else: w[i] = x
        tg = np.zeros((n, 527), bool)
        tg[np.arange(n), np.arange(n) % 527] = True
        f['target'] = tg
        f.attrs.create('sample_rate', SR, dtype=np.int32)

def clips_per_s(ds, workers:int, batches:int, bs:int=32)->float:
    dl = make_loader(ds, RandomSampler(len(ds), bs, seed=0), num_workers=workers, prefetch_factor=4)
    it = iter(dl)
    next(it)  # start-up (worker spawn, first open) not counted
    procs = [psutil.Process()] + psutil.Process().children()
    cpu = lambda: sum(sum(p.cpu_times()[:2]) for p in procs)
    t0, c0 = time.perf_counter(), cpu()
    for b in islice(it, batches): assert b['waveform'].shape == (bs, T)
    r = batches*bs/(time.perf_counter() - t0), 1000*(cpu() - c0)/(batches*bs)
    del it, dl
    return r

def main(n, batches):
    torch.set_num_threads(1)
    runs = []
    with tempfile.TemporaryDirectory(dir=os.environ.get('BENCH_TMP')) as d:
        d = Path(d)
        make_file(d/'w.h5', n)
        make_file(d/'f.h5', n, flac=True)
        ix = write_index(d/'w.h5', d/'i.h5')
        ixf = write_index(d/'f.h5', d/'if.h5')
        for name, ds, workers in [('ours', AudioSetDataset(ix), 0), ('ours', AudioSetDataset(ix), 1),
                                  ('ours', AudioSetDataset(ix), 2),
                                  ('reopen', ReopenDataset(ix), 0), ('reopen', ReopenDataset(ix), 2),
                                  ('ours-flac', AudioSetDataset(ixf), 0), ('ours-flac', AudioSetDataset(ixf), 2)]:
            r, ms = clips_per_s(ds, workers, batches)
            runs.append(dict(reader=name, workers=workers, clips_per_s=r, cpu_ms_per_clip=ms))
            print(f'{name:10} workers={workers}: {r:7.0f} clips/s {ms:6.2f} CPU ms/clip (all processes)', flush=True)
    base = runs[3]['clips_per_s']
    for r in runs: r['ratio_vs_reopen_0_workers'] = r['clips_per_s']/base
    import audioset_nb
    res = dict(benchmark='loader', device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               loadavg_at_end=os.getloadavg(),
               versions=dict(python=platform.python_version(), audioset_nb=audioset_nb.__version__,
                             torch=torch.__version__, h5py=h5py.__version__, numpy=np.__version__,
                             libsndfile=sf.__libsndfile_version__),
               clips_in_file=n, batch_size=32, batches_timed=batches,
               clip='10 s int16 rows at 32 kHz; file in page cache',
               runs=runs)
    (HERE/'results').mkdir(exist_ok=True)
    (HERE/'results'/'loader-cpu.json').write_text(json.dumps(res, indent=1))
    print(f"wrote {HERE/'results'/'loader-cpu.json'}")

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=1000)
    ap.add_argument('--batches', type=int, default=40)
    a = ap.parse_args()
    main(a.n, a.batches)
