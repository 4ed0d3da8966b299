"""Fine-tuning recipes on a real-looking set: held-out test accuracy (mean ± std over 3 seeds) per recipe, and the
baseline.

Two sets. `--set scenes` (the default): `audioset_nb.scenes.make_scene_set`, four coarse classes (speech, music,
animal calls, other everyday sounds) with wide variation inside each class (talkers, instruments and registers,
species, backgrounds at -5..20 dB SNR, a random microphone EQ and channel per recording, levels), 1-30 s, mixed
formats and rates; the test files come from other seeds and other backgrounds and channels (`TEST_CONDITIONS`).
Cnn6_mini from scratch on the 8-kHz front end, 3-s crops. Writes results/finetune_recipes_scenes-cpu.json.

`--set old`: the first set, synthesised here: four event classes (speech-like formant bursts, music notes and chords,
animal-like frequency-swept calls, impulsive knocks) mixed into backgrounds (coloured noise, hum, rain-like crackle) at
SNRs from -5 to 20 dB, 1-30 s long, written as wav/flac/mp3/ogg at 8-48 kHz, mono and stereo. The test split comes from
other generator seeds and other backgrounds than training and validation. Each recipe is one `finetune` call (Cnn6_mini
from scratch, 16-kHz front end); final.pth is scored on the test split, and the log-mel statistics + logistic regression
baseline on the same split.

    python benchmarks/finetune_recipes.py              # the scenes set (results written after each recipe)
    python benchmarks/finetune_recipes.py --set old    # the first set: results/finetune_recipes-cpu.json
"""
import argparse, datetime, json, os, platform, shutil, tempfile, time
from pathlib import Path
import numpy as np, torch
import audioset_nb
from audioset_nb.audio import write_audio
from audioset_nb.config import FrontEnd
from audioset_nb.finetune import FinetuneConfig, finetune, finetune_dir
from audioset_nb.scenes import make_scene_set, TEST_CONDITIONS

CLASSES = ('speech', 'music', 'call', 'knock')
FORMATS = [('wav', 16000, 1), ('flac', 44100, 2), ('mp3', 22050, 1), ('ogg', 48000, 2), ('wav', 8000, 1),
           ('mp3', 32000, 2)]

def _speech(rng, n, sr):
    "Voiced syllables: a pulse train at a gliding f0 through two moving formant resonances, 3-6 syllables a second."
    t = np.arange(n)/sr
    f0 = rng.uniform(90, 240)*(1 + 0.15*np.sin(2*np.pi*rng.uniform(0.5, 2)*t))
    src = np.sign(np.sin(2*np.pi*np.cumsum(f0)/sr))*0.5
    spec = np.fft.rfft(src)
    f = np.fft.rfftfreq(n, 1/sr)
    out = np.zeros(n)
    for F in (rng.uniform(300, 900), rng.uniform(1000, 2500)):
        out += np.fft.irfft(spec/(1 + ((f - F)/120)**2), n)
    syll = np.clip(np.sin(2*np.pi*rng.uniform(3, 6)*t + rng.uniform(0, 6)), 0, None)**2
    return out*syll

def _music(rng, n, sr):
    "Notes and chords of a scale with harmonic partials and decaying envelopes."
    out, pos = np.zeros(n), 0
    while pos < n:
        d = int(rng.uniform(0.15, 0.6)*sr)
        t = np.arange(min(d, n - pos))/sr
        for k in rng.choice([0, 2, 4, 5, 7, 9, 11], rng.integers(1, 4), replace=False):
            f = 220*2**((k + 12*rng.integers(0, 2))/12)
            out[pos:pos+len(t)] += sum(np.sin(2*np.pi*h*f*t)/h**1.5 for h in range(1, 6))*np.exp(-t*rng.uniform(2, 6))
        pos += d
    return out

def _call(rng, n, sr):
    "Animal-like calls: repeated up/down frequency sweeps between 1.5 and 6 kHz."
    out, pos = np.zeros(n), int(rng.uniform(0, 0.2)*sr)
    f0, f1 = rng.uniform(1500, 3000), rng.uniform(3000, min(6000, 0.45*sr))
    while pos < n:
        t = np.arange(min(int(rng.uniform(0.05, 0.25)*sr), n - pos))/sr
        f = f0 + (f1 - f0)*(t/max(t[-1], 1e-3) if rng.random() < 0.5 else 1 - t/max(t[-1], 1e-3))
        out[pos:pos+len(t)] += np.sin(2*np.pi*np.cumsum(f)/sr)*np.hanning(len(t))
        pos += len(t) + int(rng.uniform(0.05, 0.5)*sr)
    return out

def _knock(rng, n, sr):
    "Impulsive knocks: short low resonances and clicks at irregular times."
    out, t = np.zeros(n), np.arange(int(0.1*sr))/sr
    for s in rng.integers(0, max(1, n - len(t)), max(1, int(n/sr*rng.uniform(1, 4)))):
        out[s:s+len(t)] += np.sin(2*np.pi*rng.uniform(100, 500)*t)*np.exp(-t*rng.uniform(30,
                90)) + 0.3*(t < 0.002)*rng.standard_normal(len(t))
    return out

SOUNDS = dict(speech=_speech, music=_music, call=_call, knock=_knock)

def _background(rng, n, sr, kinds):
    k = rng.choice(kinds)
    w = rng.standard_normal(n)
    if k == 'brown':
        x = np.cumsum(w)
        x -= np.convolve(x, np.ones(400)/400, 'same')
    elif k == 'pink': x = np.fft.irfft(np.fft.rfft(w)/np.sqrt(np.arange(1, n//2 + 2)), n)
    elif k == 'hum':
        t = np.arange(n)/sr
        x = sum(np.sin(2*np.pi*50*h*t)/h for h in range(1, 8)) + 0.3*w
    elif k == 'crackle':
        x = w*(rng.random(n) < 0.01)*5 + 0.2*np.fft.irfft(np.fft.rfft(w)/np.sqrt(np.arange(1, n//2 + 2)), n)
    else: x = w  # white
    return x/np.sqrt(np.mean(x**2) + 1e-12)

def make_set(root:Path, per_class:int, seed:int, backgrounds:tuple)->Path:
    "Write `root/<class>/<i>.<ext>`: events mixed into backgrounds at -5..20 dB SNR, 1-30 s, in mixed formats."
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        for i in range(per_class):
            ext, sr, ch = FORMATS[rng.integers(len(FORMATS))]
            n = int(rng.uniform(1, 30)*sr)
            ev = np.zeros(n)
            m = int(n*rng.uniform(0.3, 0.9))
            s = rng.integers(0, n - m + 1)
            ev[s:s+m] = SOUNDS[c](rng, m, sr)
            ev /= np.sqrt(np.mean(ev[s:s+m]**2) + 1e-12)
            x = ev*10**(rng.uniform(-5, 20)/20) + _background(rng, n, sr, backgrounds)
            x = (0.25*x/np.abs(x).max()).astype(np.float32)
            write_audio(root/c/f'{i:03d}.{ext}', np.stack([x]*ch), sr)
    return root

OLD = dict(warmup_epochs=0, schedule='constant', keep='last', ema=0.0)
RECIPES = {'old (constant lr, last epoch)': OLD,
           'warm-up + cosine, best': dict(ema=0.0),
           'warm-up + cosine, best, EMA 0.99': dict(ema=0.99),
           'warm-up + cosine, best, mixup': dict(ema=0.0, augmentation='mixup')}
NO_AUG = dict(gain_db=0.0, eq_db=0.0, augmentation='none', ema=0.0)
SCENE_RECIPES = {'warm-up + cosine, best (no augmentation)': NO_AUG,
                 '+ random gain and EQ': {**NO_AUG, 'gain_db': 12.0, 'eq_db': 9.0},
                 '+ random gain and EQ + mixup': {**NO_AUG, 'gain_db': 12.0, 'eq_db': 9.0, 'augmentation': 'mixup'},
                 '+ mixup': {**NO_AUG, 'augmentation': 'mixup'}}
SETS = dict(old=dict(recipes=RECIPES, front=FrontEnd(16000, 512, 160, 64, 50, 8000), out='finetune_recipes-cpu.json'),
            scenes=dict(recipes=SCENE_RECIPES, front=FrontEnd(8000, 256, 80, 64, 50, 4000),
                        out='finetune_recipes_scenes-cpu.json'))

def summarise(runs:list)->dict:
    tests = [r['test'] for r in runs]
    return dict(runs=runs, test_mean=float(np.mean(tests)), test_std=float(np.std(tests)),
                baseline_test=float(np.mean([r['baseline_test'] for r in runs])))

def write(rows:dict, a, **extra):
    out = dict(device=platform.processor() or platform.machine(), cores=len(os.sched_getaffinity(0)),
               load_avg=os.getloadavg(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               python=platform.python_version(), torch=torch.__version__, audioset_nb=audioset_nb.__version__,
               set=a.set, per_class=a.per_class, test_per_class=a.test_per_class,
               epochs=a.epochs, recipes=rows, **extra)
    path = Path(a.out or Path(__file__).parent/'results'/SETS[a.set]['out'])
    tmpf = path.with_suffix('.tmp')
    tmpf.write_text(json.dumps(out, indent=1) + '\n')
    tmpf.replace(path)

def from_log(log:Path, a):
    "The JSON of an interrupted run, from the per-run lines it printed (`<recipe> {run dict}`)."
    import ast
    rows = {}
    for line in log.read_text().splitlines():
        name = next((n for n in SETS[a.set]['recipes'] if line.startswith(n + ' {')), None)
        if name: rows.setdefault(name, []).append(ast.literal_eval(line[len(name) + 1:]))
    write({k: summarise(v) for k, v in rows.items()}, a, from_log=True,
          note='stopped before every recipe had run: recipes missing here were not measured')

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--set', choices=list(SETS), default='scenes')
    p.add_argument('--per_class', type=int, default=None, help='training files per class (default: 80 scenes, 24 old)')
    p.add_argument('--test_per_class', type=int, default=None,
                   help='test files per class (default: 30 scenes, half of per_class old)')
    p.add_argument('--epochs', type=int, default=None, help='default: 12 scenes, 10 old')
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--recipes', nargs='+', default=None)
    p.add_argument('--out', default=None)
    p.add_argument('--data_dir', help='where the set is written (train/, test/), or read from if it is there already')
    p.add_argument('--from_log', help="write the JSON from a log of this script's per-run lines (a stopped run)")
    a = p.parse_args()
    S, scenes = SETS[a.set], a.set == 'scenes'
    a.per_class = a.per_class or (80 if scenes else 24)
    a.test_per_class = a.test_per_class or (30 if scenes else a.per_class//2)
    a.epochs, a.recipes = a.epochs or (12 if scenes else 10), a.recipes or list(S['recipes'])
    if a.from_log: return from_log(Path(a.from_log), a)
    tmp = Path(tempfile.mkdtemp(prefix='bench_recipes_'))
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    try:
        t, base = time.perf_counter(), Path(a.data_dir) if a.data_dir else tmp
        if (base/'train').is_dir() and (base/'test').is_dir(): train, test = base/'train', base/'test'
        elif scenes:
            train = make_scene_set(base/'train', a.per_class, seed=100)
            test = make_scene_set(base/'test', a.test_per_class, seed=200, conditions=TEST_CONDITIONS)
        else:
            train = make_set(base/'train', a.per_class, 100, ('brown', 'pink', 'hum'))
            test = make_set(base/'test', a.test_per_class, 200, ('white', 'crackle', 'pink'))
        print(f'set written in {time.perf_counter() - t:.0f} s', flush=True)
        rows, decoded = {}, None
        for name in a.recipes:
            runs = []
            for seed in a.seeds:
                t = time.perf_counter()
                cfg = FinetuneConfig(str(train), workspace=str(tmp/f'ws_{len(rows)}_{seed}'), model_type='Cnn6_mini',
                                     clip_seconds=3.0,
                                     front=S['front'], epochs=a.epochs, batch_size=16, seed=seed,
                                     test_data=str(test), progress=False, max_memory_mb=0, **S['recipes'][name])
                if decoded:  # the files the first run decoded, reused
                    finetune_dir(cfg).mkdir(parents=True)
                    for f in decoded.glob('*decoded_*.h5'): shutil.copy(f, finetune_dir(cfg)/f.name)
                r = finetune(cfg)[0]
                decoded = decoded or finetune_dir(cfg)
                runs.append(dict(seed=seed, valid=r['scores'].accuracy, test=r['test'].accuracy,
                                 baseline_test=r['baseline_test'].accuracy,
                                 baseline_valid=r['baseline'].accuracy, best_iteration=r['best_iteration'],
                                 seconds=time.perf_counter() - t))
                print(name, runs[-1], flush=True)
            rows[name] = summarise(runs)
            write(rows, a)  # after each recipe: an interrupted run keeps what it measured
        for k, v in rows.items():
            print(f"{k}: test {v['test_mean']:.3f} ± {v['test_std']:.3f}, baseline {v['baseline_test']:.3f}")
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
