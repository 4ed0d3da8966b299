"""Clips per second of the downloader with 1, 4 and 8 workers, against the loopback mirror adding 200 ms to every
HTTP request (a stand-in for a distant server), beside a one-at-a-time baseline (a plain loop over `download_clip`)
in the same run. Writes benchmarks/results/download-cpu.json.

    python benchmarks/download.py [--clips 24] [--delay 0.2]
"""
import argparse, datetime, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import yt_dlp
from audioset_nb.audio import ffmpeg_cmd, ffmpeg_exe
from audioset_nb.download import Segment, download_clip, download_clips, summarize
from audioset_nb.mirror import Mirror

SOURCES = [('webm', ['-c:a', 'libopus'], 48000, 2), ('m4a', ['-c:a', 'aac'], 44100, 2),
           ('mp3', ['-c:a', 'libmp3lame'], 44100, 1), ('ogg', ['-c:a', 'libvorbis'], 22050, 1)]

def make_sources(root:Path, n:int):
    "`n` 14-s source videos (hard links to four encodings of one chirp), and their [2, 12] s segments."
    segs = []
    for k, (ext, args, sr, ch) in enumerate(SOURCES):
        t = np.arange(14*sr)/sr
        pcm = (np.tile(0.4*np.sin(2*np.pi*(200*t + 30*t**2))[:, None], (1, ch))*32767).astype('<i2')
        cmd = ffmpeg_cmd('-y', '-f', 's16le', '-ar', sr, '-ac', ch, '-i', 'pipe:0', *args, root/f'base{k}.{ext}')
        subprocess.run(cmd, input=pcm.tobytes(), check=True)
    for i in range(n):
        k = i % len(SOURCES)
        ytid = f'bench{i:06d}'
        os.link(root/f'base{k}.{SOURCES[k][0]}', root/f'{ytid}.{SOURCES[k][0]}')
        segs.append(Segment(ytid, 2., 12., ('/m/01v_m0',)))
    return segs

def timed(mirror, fn):
    n0, t0 = len(mirror.requests), time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - t0, len(mirror.requests) - n0

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--clips', type=int, default=24)
    ap.add_argument('--delay', type=float, default=0.2)
    ap.add_argument('--out', default=str(Path(__file__).parent/'results'/'download-cpu.json'))
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='bench-download-'))
    try:
        src = work/'sources'
        src.mkdir()
        segs = make_sources(src, a.clips)
        results = []
        with Mirror(src, delay=a.delay) as m:
            kw = dict(url_template=m.url_template, timeout=60, retries=0)
            download_clip(segs[0], work/'warmup', **kw)   # loads yt-dlp's extractors once, outside the timings
            def baseline():
                out = work/'baseline'
                out.mkdir()
                return [download_clip(s, out, **kw) for s in segs]
            def parallel(w): return lambda: download_clips(segs, work/f'w{w}', num_workers=w, progress=False, **kw)
            runs = [('baseline (plain loop)', baseline)] + [(f'{w} workers', parallel(w)) for w in (1, 4, 8)]
            for name, fn in runs:
                rows, secs, reqs = timed(m, fn)
                results.append(dict(run=name, clips=len(rows), seconds=round(secs, 3),
                                    clips_per_s=round(len(rows)/secs, 3), requests=reqs, statuses=summarize(rows)))
                print(f'{name:22} {len(rows)/secs:6.2f} clips/s  ({secs:.1f} s, {reqs} requests, {summarize(rows)})',
                      flush=True)
        base = results[0]['clips_per_s']
        for r in results: r['speedup_vs_baseline'] = round(r['clips_per_s']/base, 2)
        ff = subprocess.run([ffmpeg_exe(), '-version'], capture_output=True, text=True).stdout.split('\n')[0]
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
        report = dict(benchmark='download', date=now,
                      device=dict(kind='cpu', machine=platform.machine(), processor=platform.processor(),
                                  cpu_count=os.cpu_count(), platform=platform.platform()),
                      versions=dict(python=platform.python_version(), yt_dlp=yt_dlp.version.__version__,
                                    numpy=np.__version__, ffmpeg=ff),
                      setup=dict(clips=a.clips, delay_per_request_s=a.delay, segment_s=10, source_s=14,
                                 containers=[s[0] for s in SOURCES], mirror='audioset_nb.mirror.Mirror on 127.0.0.1'),
                      results=results)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1) + '\n')
        print('\n| run | clips/s | x baseline |\n|---|---|---|')
        for r in results: print(f"| {r['run']} | {r['clips_per_s']:.2f} | {r['speedup_vs_baseline']:.2f} |")
    finally: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
