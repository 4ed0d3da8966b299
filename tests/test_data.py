"Datasets, samplers, mixup and loaders: reference-layout files, resampling, sampler statistics, resume, DDP shares."
import io, os, pickle
from itertools import islice
from pathlib import Path
import h5py, numpy as np, pytest, soundfile as sf, torch
from audioset_nb.data import (AudioSetDataset, AlternateSampler, BalancedSampler, EvalSampler, Mixup, RandomSampler,
                              WeightedSampler, clip_weights, collate, make_loader, make_sampler, read_index)

SR, T, C = 32000, 32000, 527   # one-second rows keep the fixtures small

def ref_waveforms(path, n=6, sr=SR, t=T, seed=0):
    "A waveform HDF5 written exactly as the reference's packing script does (plain h5py, contiguous)."
    g = np.random.default_rng(seed)
    wave = (g.uniform(-0.5, 0.5, (n, t))*32767).astype(np.int16)
    target = np.zeros((n, C), bool)
    target[np.arange(n), np.arange(n) % 5] = True
    with h5py.File(path, 'w') as hf:
        hf.create_dataset('audio_name', shape=(n,), dtype='S20')
        hf.create_dataset('waveform', shape=(n, t), dtype=np.int16)
        hf.create_dataset('target', shape=(n, C), dtype=bool)
        hf.attrs.create('sample_rate', data=sr, dtype=np.int32)
        for i in range(n):
            hf['audio_name'][i] = f'Yclip{i:07d}.wav'.encode()
            hf['waveform'][i] = wave[i]
            hf['target'][i] = target[i]
    return wave, target

def ref_index(path, waveform_paths):
    "An index HDF5 over several waveform files, in the reference layout."
    names, targets, paths, rows = [], [], [], []
    for p in waveform_paths:
        with h5py.File(p, 'r') as hf:
            n = len(hf['audio_name'])
            names += list(hf['audio_name'][:])
            targets.append(hf['target'][:])
            paths += [str(p).encode()]*n
            rows += list(range(n))
    with h5py.File(path, 'w') as hf:
        hf.create_dataset('audio_name', data=np.array(names), dtype='S20')
        hf.create_dataset('target', data=np.concatenate(targets), dtype=bool)
        hf.create_dataset('hdf5_path', data=paths, dtype='S200')
        hf.create_dataset('index_in_hdf5', data=np.array(rows), dtype=np.int32)

@pytest.fixture
def ref_files(tmp_path):
    a, b = tmp_path/'a.h5', tmp_path/'b.h5'
    wa, ta = ref_waveforms(a, 6, seed=0)
    wb, tb = ref_waveforms(b, 4, seed=1)
    ref_index(tmp_path/'index.h5', [a, b])
    return tmp_path, np.concatenate([wa, wb]), np.concatenate([ta, tb])

def test_reads_reference_layout(ref_files):
    d, wave, target = ref_files
    ds = AudioSetDataset(d/'index.h5')
    assert len(ds) == 10
    for i in range(10):
        item = ds[i]
        assert item['waveform'].dtype == np.float32 and item['target'].dtype == np.float32
        np.testing.assert_allclose(item['waveform'], wave[i]/32767., rtol=0, atol=1e-7)
        np.testing.assert_array_equal(item['target'], target[i])
    assert ds[7]['audio_name'] == 'Yclip0000001.wav'
    # the reference's meta dicts and (path, row) pairs address the same clip
    np.testing.assert_array_equal(ds[{'hdf5_path': str(d/'b.h5'), 'index_in_hdf5': 1}]['waveform'], ds[7]['waveform'])
    np.testing.assert_array_equal(ds[(str(d/'b.h5'), 1)]['waveform'], ds[7]['waveform'])
    # a waveform file is its own index
    np.testing.assert_array_equal(AudioSetDataset(d/'b.h5')[1]['waveform'], ds[7]['waveform'])

def test_reads_early_reference_float32_files(tmp_path):
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (2, T)).astype(np.float32)
    with h5py.File(tmp_path/'w.h5', 'w') as hf:          # the first published packing script stored float32 rows
        hf['audio_name'] = np.array([b'Ya.wav', b'Yb.wav'], dtype='S20')
        hf['waveform'] = x
        hf['target'] = np.zeros((2, C), bool)
    np.testing.assert_array_equal(AudioSetDataset(tmp_path/'w.h5')[1]['waveform'], x[1])

def test_relative_paths_resolve_beside_index(tmp_path, monkeypatch):
    (tmp_path/'w').mkdir()
    (tmp_path/'i').mkdir()
    wave, _ = ref_waveforms(tmp_path/'w'/'a.h5', 3)
    monkeypatch.chdir(tmp_path/'i')
    ref_index(tmp_path/'i'/'index.h5', [Path('../w/a.h5')])
    monkeypatch.chdir('/')
    np.testing.assert_allclose(AudioSetDataset(tmp_path/'i'/'index.h5')[2]['waveform'], wave[2]/32767., atol=1e-7)

def test_handles_stay_open_and_reopen_after_fork(ref_files):
    d, wave, _ = ref_files
    ds = AudioSetDataset(d/'index.h5')
    ds[0]
    s = ds.store(str(d/'a.h5'))
    ds[1]
    ds[2]
    assert ds.store(str(d/'a.h5')) is s and len(ds._stores) == 1      # one handle, reused
    ds._pid = -1                                                       # as a forked worker sees it
    assert ds.store(str(d/'a.h5')) is not s
    clone = pickle.loads(pickle.dumps(ds))                             # spawn: no handle crosses
    assert clone._stores == {}
    np.testing.assert_array_equal(clone[3]['waveform'], ds[3]['waveform'])

def test_workers_get_a_small_dataset(tmp_path):
    ref_waveforms(tmp_path/'a.h5', n=5000, t=10)
    ref_index(tmp_path/'i.h5', [tmp_path/'a.h5'])
    ds = AudioSetDataset(tmp_path/'i.h5')
    assert len(pickle.dumps(ds)) < 100_000          # not the 2.6 MB of targets, not 5000 path strings
    assert ds[4321]['audio_name'] == 'Yclip0004321.wav' and ds[4321]['target'][4321 % 5] == 1

def test_compressed_store_reads_like_int16(tmp_path):
    wave, target = ref_waveforms(tmp_path/'a.h5', 3)
    with h5py.File(tmp_path/'f.h5', 'w') as hf:
        hf.create_dataset('audio_name', data=np.array([f'Yclip{i:07d}.wav' for i in range(3)], dtype='S20'))
        rows = hf.create_dataset('waveform_flac', (3,), h5py.vlen_dtype(np.uint8))
        for i, x in enumerate(wave):
            buf = io.BytesIO()
            sf.write(buf, x, SR, format='FLAC', subtype='PCM_16')
            rows[i] = np.frombuffer(buf.getvalue(), np.uint8)
        hf['target'] = target
        hf.attrs['sample_rate'] = SR
    a, f = AudioSetDataset(tmp_path/'a.h5'), AudioSetDataset(tmp_path/'f.h5')
    for i in range(3): np.testing.assert_array_equal(f[i]['waveform'], a[i]['waveform'])

@pytest.mark.parametrize('sr', [16000, 8000])
def test_resampling_removes_what_would_alias(tmp_path, sr):
    t = np.arange(SR)/SR
    x = np.stack([0.5*np.sin(2*np.pi*300*t), 0.5*np.sin(2*np.pi*(sr/2 + 1500)*t)])   # in band, above new Nyquist
    with h5py.File(tmp_path/'w.h5', 'w') as hf:
        hf['audio_name'] = np.array([b'Ya.wav', b'Yb.wav'], dtype='S20')
        hf['waveform'] = (x*32767).astype(np.int16)
        hf['target'] = np.zeros((2, C), bool)
        hf.attrs['sample_rate'] = np.int32(SR)
    ds = AudioSetDataset(tmp_path/'w.h5', sample_rate=sr)
    low, high = ds[0]['waveform'], ds[1]['waveform']
    assert low.shape == high.shape == (sr,)
    rms = lambda v: np.sqrt(np.mean(v[sr//10:-sr//10]**2))
    assert abs(rms(low) - 0.5/np.sqrt(2)) < 0.01
    assert rms(high) < 0.01 < rms(x[1][::SR//sr])        # decimation would have kept it, folded

def test_bad_paths_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match='audioset_pack'): read_index(tmp_path/'nope.h5')
    (tmp_path/'x.txt').write_text('hello')
    with pytest.raises(ValueError, match='not an HDF5 file'): read_index(tmp_path/'x.txt')
    with h5py.File(tmp_path/'other.h5', 'w') as hf: hf['foo'] = [1]
    with pytest.raises(ValueError, match='neither an index'): read_index(tmp_path/'other.h5')
    ref_waveforms(tmp_path/'a.h5', 2)
    ref_index(tmp_path/'i.h5', [tmp_path/'a.h5'])
    (tmp_path/'a.h5').unlink()
    with pytest.raises(FileNotFoundError, match='hdf5_path'): AudioSetDataset(tmp_path/'i.h5')[0]

# ---- samplers ----

def skewed(counts=(2000, 800, 300, 100, 40, 12, 5, 1), empty=(3, 9)):
    "Single-label targets with very different class sizes, and some classes with no clips at all."
    cls = [k for k in range(len(counts) + len(empty)) if k not in empty]
    y = np.zeros((sum(counts), C), bool)
    y[np.arange(len(y)), np.repeat(cls, counts)] = True
    return y, cls

def test_balanced_is_uniform_over_classes_and_survives_empty_classes():
    y, cls = skewed()
    it = iter(BalancedSampler(y, batch_size=50, seed=3))
    drawn = np.concatenate([next(it) for _ in range(400)])     # 20,000 draws
    per_class = y[drawn].sum(0)
    assert set(np.flatnonzero(per_class)) == set(cls)           # empty classes never come up (and nothing crashed)
    share = per_class[cls]/len(drawn)
    np.testing.assert_allclose(share, 1/len(cls), rtol=0.03)
    # inside a class, clips are taken without replacement: every clip of class 2 used once per 300 draws of it
    k2 = drawn[y[drawn, cls[2]]]
    assert len(set(k2[:300])) == 300

def test_balanced_matches_reference_queue_semantics():
    y, cls = skewed()
    it = iter(BalancedSampler(y, batch_size=len(cls), seed=0))
    for _ in range(5):                                          # each round draws every non-empty class once
        assert sorted(y[next(it)].argmax(1)) == sorted(cls)

def test_weighted_frequencies_match_weights():
    y, cls = skewed()
    w = clip_weights(y)
    counts_per_class = y.sum(0)
    np.testing.assert_allclose(w, (y*(1000/(counts_per_class + 100))).sum(1))
    s = WeightedSampler(y, batch_size=100, seed=1)
    it = iter(s)
    draws = np.concatenate([next(it) for _ in range(10*len(y)//100)])   # about ten epochs
    freq = np.bincount(draws, minlength=len(y))/len(draws)
    by_class = np.array([freq[y[:, k]].sum() for k in cls])
    expect = np.array([w[y[:, k]].sum() for k in cls])/w.sum()
    np.testing.assert_allclose(by_class, expect, rtol=0.03)

def test_weighted_epoch_is_without_replacement():
    y, _ = skewed()
    s = WeightedSampler(y, batch_size=1, seed=5)
    urn = s._urn()
    counts = np.bincount(urn, minlength=len(y))
    assert (counts >= np.floor(s.expected)).all() and (counts <= np.ceil(s.expected)).all()
    assert abs(len(urn) - len(y)) < 4*np.sqrt(len(y))

def samplers(y, batch_size, **kw):
    return [RandomSampler(len(y), batch_size, **kw), BalancedSampler(y, batch_size, **kw),
            AlternateSampler(y, batch_size, **kw), WeightedSampler(y, batch_size, **kw)]

@pytest.mark.parametrize('kind', range(4))
@pytest.mark.parametrize('world_size', [1, 3])
def test_state_round_trip_continues_identically(tmp_path, kind, world_size):
    y, _ = skewed()
    rank = world_size - 1
    s = samplers(y, 16, seed=11, rank=rank, world_size=world_size)[kind]
    it = iter(s)
    seen = [next(it) for _ in range(300)]                   # crosses epochs of small classes and of the random order
    state = s.state_dict(batches=250)                       # the loop had consumed 250; the loader ran ahead
    torch.save({'sampler': state}, tmp_path/'ck.pth')
    state = torch.load(tmp_path/'ck.pth', weights_only=True)['sampler']
    t = samplers(y, 16, seed=11, rank=rank, world_size=world_size)[kind]
    t.load_state_dict(state)
    assert list(islice(iter(t), 50)) == seen[250:]
    u = samplers(y, 16, seed=11, rank=rank, world_size=world_size)[kind]
    u.load_state_dict(s.state_dict())                       # default: the sampler's own position
    assert next(iter(u)) == next(it)

def test_state_of_another_sampler_is_refused():
    y, _ = skewed()
    a, b = RandomSampler(len(y), 4, seed=1), RandomSampler(len(y), 4, seed=2)
    with pytest.raises(ValueError, match='seed'): b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match='BalancedSampler'):
        BalancedSampler(y, 4, seed=1).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match='No state kept'): a.state_dict(batches=5)

@pytest.mark.parametrize('kind', range(4))
def test_distributed_shares_are_disjoint_and_cover_the_stream(kind):
    y, _ = skewed()
    ws, b, steps = 4, 8, 60
    whole = list(islice(iter(samplers(y, b*ws, seed=5)[kind]), steps))
    shares = [list(islice(iter(samplers(y, b, seed=5, rank=r, world_size=ws)[kind]), steps)) for r in range(ws)]
    again = list(islice(iter(samplers(y, b, seed=5, rank=2, world_size=ws)[kind]), steps))
    assert again == shares[2]                                              # deterministic given seed and rank
    for step in range(steps):
        assert sum((shares[r][step] for r in range(ws)), []) == whole[step]    # the ranks' slices make the global batch
    # random: within an epoch no clip on two ranks
    if kind == 0:
        n_epoch = len(y)//(b*ws)
        sets = [set(sum(shares[r][:n_epoch], [])) for r in range(ws)]
        assert all(not (sets[i] & sets[j]) for i in range(ws) for j in range(i + 1, ws))

def test_bad_sampler_arguments():
    y, _ = skewed()
    with pytest.raises(ValueError, match='rank'): RandomSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match='No clip has a label'): BalancedSampler(np.zeros((5, C), bool), 2)
    with pytest.raises(ValueError, match='No clip has a label'): WeightedSampler(np.zeros((5, C), bool), 2)

def test_eval_sampler_covers_every_row_once_across_ranks():
    rows = sorted(sum((sum(EvalSampler(103, 8, r, 3), []) for r in range(3)), []))
    assert rows == list(range(103))
    assert len(EvalSampler(103, 8)) == 13

def test_make_sampler_kinds(ref_files):
    d, _, _ = ref_files
    ix = read_index(d/'index.h5')
    assert isinstance(make_sampler('alternate', ix, 4), AlternateSampler)
    assert isinstance(make_sampler('weighted', ix, 4), WeightedSampler)
    with pytest.raises(ValueError, match='--balanced'): make_sampler('uniform', ix, 4)

# ---- mixup ----

def test_mixup_lambdas(tmp_path):
    m = Mixup(alpha=1.0, seed=0)
    lam = np.concatenate([m(64) for _ in range(200)])
    assert lam.dtype == np.float32
    np.testing.assert_allclose(lam[0::2] + lam[1::2], 1, atol=1e-6)
    assert abs(lam[0::2].mean() - 0.5) < 0.01 and abs(lam[0::2].var() - 1/12) < 0.005   # Beta(1, 1) is uniform
    lam2 = np.concatenate([Mixup(alpha=0.2, seed=0)(64) for _ in range(50)])
    # Beta(.2,.2) piles up near 0 and 1
    assert lam2[0::2].var() > 0.15
    torch.save(m.state_dict(), tmp_path/'m.pth')
    nxt = m(8)
    m2 = Mixup(alpha=1.0, seed=99)
    m2.load_state_dict(torch.load(tmp_path/'m.pth', weights_only=True))
    np.testing.assert_array_equal(m2(8), nxt)
    with pytest.raises(ValueError, match='even'): m(5)
    with pytest.raises(ValueError, match='positive'): Mixup(0)

# ---- loaders ----

def test_collate_and_loader_with_workers_match_in_process(ref_files):
    d, wave, target = ref_files
    ds = AudioSetDataset(d/'index.h5')
    ds[0]                                                    # the parent has an open handle before workers fork
    b = collate([ds[0], ds[3]])
    assert b['waveform'].shape == (2, T) and b['target'].shape == (2, C) and b['audio_name'][1] == 'Yclip0000003.wav'
    want = list(islice(iter(BalancedSampler(target, 4, seed=2)), 6))
    for workers in (0, 2):
        dl = make_loader(ds, BalancedSampler(target, 4, seed=2), num_workers=workers)
        got = list(islice(iter(dl), 6))
        for batch, rows in zip(got, want):
            np.testing.assert_allclose(batch['waveform'].numpy(), wave[rows]/32767., atol=1e-7)
            np.testing.assert_array_equal(batch['target'].numpy(), target[rows])
        del dl
    dl = make_loader(ds, EvalSampler(len(ds), 4), num_workers=1)
    assert dl.persistent_workers and dl.prefetch_factor == 4 and dl.pin_memory == torch.cuda.is_available()
    assert sum(len(b['audio_name']) for b in dl) == 10

def test_resume_through_a_prefetching_loader(ref_files):
    d, _, target = ref_files
    ds = AudioSetDataset(d/'index.h5')
    s = BalancedSampler(target, 2, seed=4)
    it = iter(make_loader(ds, s, num_workers=2, prefetch_factor=2))
    seen = [next(it)['audio_name'] for _ in range(6)]
    assert s.batches > 5                                    # the loader asked for batches ahead of the loop
    t = BalancedSampler(target, 2, seed=4)
    t.load_state_dict(s.state_dict(batches=5))
    assert next(iter(make_loader(ds, t, num_workers=0)))['audio_name'] == seen[5]
