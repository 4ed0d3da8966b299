"Packing: every kind of input, format compatibility with the reference, kill-and-resume, indexes, the CLI."
import io, logging, os, signal, subprocess, sys, textwrap
from functools import partial
from pathlib import Path
import h5py, numpy as np, pytest, soundfile as sf
from audioset_nb.download import Segment, clip_name, load_labels, write_segments
from audioset_nb.data import AudioSetDataset
from audioset_nb.pack import combine_indexes, pack_waveforms, train_index_order, write_index
from conftest import ROOT, cli, ffmpeg, one_sentence, tone

SR = 32000
def write_clip(path, x, sr, fmt=None, subtype='PCM_16'):
    "Write `x` to `path`; fmt 'mp3'/'ogg' go through ffmpeg, whatever the file is named (as a download might be)."
    if fmt in ('mp3', 'ogg'):
        src = path.with_name(path.stem + '.src.wav')
        sf.write(src, x, sr)
        ffmpeg('-i', src, '-f', fmt, path)
        src.unlink()
    else: sf.write(path, x, sr, format=fmt or 'WAV', subtype=subtype)

def peak_hz(row, sr=SR, seconds=1.0):
    x = row[:int(sr*seconds)].astype(np.float64)
    return np.fft.rfftfreq(len(x), 1/sr)[np.abs(np.fft.rfft(x)).argmax()]

# name, frequency, samples written, rate, channels, format, subtype
KINDS = [('plain32k', 300, 10, 32000, 1, None, 'PCM_16'), ('st44k24b', 500, 10, 44100, 2, None, 'PCM_24'),
         ('float48k', 700, 10, 48000, 1, None, 'FLOAT'), ('flacclip', 900, 10, 16000, 1, 'FLAC', 'PCM_16'),
         ('mp3clip', 1100, 10, 44100, 2, 'mp3', None), ('oggclip', 1300, 10, 22050, 1, 'ogg', None),
         ('tooshort', 1500, 2.5, 32000, 1, None, 'PCM_16'), ('toolong', 1700, 13, 32000, 1, None, 'PCM_16')]
BAD = ['missingclip', 'emptyclip__', 'garbageclip', 'truncwav___']

def ytid(name): return f'{name:_<11}'[:11]

@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    "One clip of every kind a user's folder may hold, plus clips that are missing, empty, garbage or cut short."
    d = tmp_path_factory.mktemp('clips')
    audios = d/'audios'
    audios.mkdir()
    labels = load_labels()
    segs = []
    for k, (name, f, secs, sr, ch, fmt, sub) in enumerate(KINDS):
        write_clip(audios/clip_name(ytid(name)), tone(f, secs, sr, ch), sr, fmt, sub)
        segs.append(Segment(ytid(name), 0., 10., (labels.mid(['Speech', 'Music', 'Dog', 'Cat'][k % 4]),)))
    (audios/clip_name(ytid('emptyclip__'))).touch()
    (audios/clip_name(ytid('garbageclip'))).write_bytes(os.urandom(5000))
    full = audios/clip_name(ytid('plain32k'))
    (audios/clip_name(ytid('truncwav___'))).write_bytes(full.read_bytes()[:30])
    for b in BAD: segs.insert(2*BAD.index(b) + 1, Segment(ytid(b), 0., 10., (labels.mid('Rain'),)))
    write_segments(d/'segs.csv', segs)
    return d, audios, segs

def test_every_input_kind_becomes_a_row_and_bad_ones_are_left_out(clips, tmp_path, caplog):
    d, audios, segs = clips
    with caplog.at_level(logging.WARNING):
        r = pack_waveforms(d/'segs.csv', audios, tmp_path/'w.h5', num_workers=2, progress=False)
    assert r.rows == len(KINDS)
    assert sorted(n for n, _ in r.skipped) == sorted(clip_name(ytid(b)) for b in BAD)
    assert all(why for _, why in r.skipped)
    for b in BAD: assert clip_name(ytid(b)) in caplog.text
    with h5py.File(tmp_path/'w.h5', 'r') as f:
        names = [n.decode() for n in f['audio_name']]
        assert names == [clip_name(ytid(k[0])) for k in KINDS]           # CSV order, bad ones have no row at all
        wave, target = f['waveform'][:], f['target'][:]
    assert wave.shape == (len(KINDS), 320000) and wave.dtype == np.int16
    assert target.sum(1).tolist() == [1]*len(KINDS)                       # no all-false (silent) rows
    for row, (name, freq, secs, *_) in zip(wave, KINDS):
        assert abs(peak_hz(row) - freq) <= 1, name                        # decoded, resampled to 32 kHz, mixed to mono
        rms = np.sqrt(np.mean((row[SR:2*SR]/32767)**2))
        assert abs(rms - 0.5/np.sqrt(2)) < 0.02, name                     # stereo averaged, not summed; float scaled
    assert np.abs(wave[6][int(2.5*SR) + 50:]).max() == 0                  # too short: zero-padded
    assert np.abs(wave[7][-SR:]).min() < np.abs(wave[7][-SR:]).max()      # too long: cut, still tone to the end

def test_resampling_to_32k_is_anti_aliased(tmp_path):
    audios = tmp_path/'a'
    audios.mkdir()
    write_clip(audios/clip_name('alias______'), tone(20000, 10, 48000), 48000)   # above 32 kHz's Nyquist
    write_segments(tmp_path/'s.csv', [Segment('alias______', 0., 10., (load_labels().mids[0],))])
    pack_waveforms(tmp_path/'s.csv', audios, tmp_path/'w.h5', num_workers=1, progress=False)
    with h5py.File(tmp_path/'w.h5', 'r') as f: row = f['waveform'][0]/32767
    assert np.sqrt(np.mean(row[SR:-SR]**2)) < 0.01        # gone, not folded down to 12 kHz

def test_ours_reads_like_the_reference_layout(clips, tmp_path, monkeypatch):
    d, audios, segs = clips
    r = pack_waveforms(d/'segs.csv', audios, tmp_path/'hdf5s'/'waveforms'/'balanced_train.h5', num_workers=1,
                       progress=False)
    write_index(r.path, tmp_path/'hdf5s'/'indexes'/'balanced_train.h5')
    monkeypatch.chdir('/')                                  # the reference opens hdf5_path as written
    with h5py.File(tmp_path/'hdf5s'/'indexes'/'balanced_train.h5', 'r') as ix:
        assert ix['audio_name'].dtype == 'S20' and ix['hdf5_path'].dtype == 'S200'
        assert ix['index_in_hdf5'].dtype == np.int32 and ix['target'].dtype == bool
        hdf5_path, i = ix['hdf5_path'][3].decode(), ix['index_in_hdf5'][3]
        name_in_index = ix['audio_name'][3].decode()
    with h5py.File(hdf5_path, 'r') as hf:                   # exactly what the reference's AudioSetDataset does
        assert hf['audio_name'].dtype == 'S20' and hf['waveform'].dtype == np.int16 and hf['target'].dtype == bool
        assert int(hf.attrs['sample_rate']) == SR and hf.attrs['sample_rate'].dtype == np.int32
        audio_name = hf['audio_name'][i].decode()
        waveform = (hf['waveform'][i]/32767.).astype(np.float32)
        target = hf['target'][i].astype(np.float32)
    assert audio_name == name_in_index == clip_name(ytid(KINDS[3][0]))
    assert abs(peak_hz(waveform) - KINDS[3][1]) <= 1 and target.sum() == 1
    np.testing.assert_array_equal(AudioSetDataset(tmp_path/'hdf5s'/'indexes'/'balanced_train.h5')[3]['waveform'],
                                  waveform)

def test_compressed_store_is_lossless_and_smaller(clips, tmp_path):
    d, audios, _ = clips
    a = pack_waveforms(d/'segs.csv', audios, tmp_path/'a.h5', num_workers=1, progress=False)
    f = pack_waveforms(d/'segs.csv', audios, tmp_path/'f.h5', num_workers=2, codec='flac', progress=False)
    assert f.rows == a.rows and f.skipped == a.skipped
    da, df = AudioSetDataset(a.path), AudioSetDataset(f.path)
    for i in range(a.rows): np.testing.assert_array_equal(df[i]['waveform'], da[i]['waveform'])
    assert f.path.stat().st_size < a.path.stat().st_size/2
    with pytest.raises(ValueError, match='codec'): pack_waveforms(d/'segs.csv', audios, tmp_path/'x.h5', codec='opus')

def test_thousands_left_out_are_recorded(clips, tmp_path):
    d, audios, segs = clips
    many = segs[:1] + [Segment(f'gone{i:07d}', 0., 10., segs[0].labels) for i in range(1500)]
    write_segments(tmp_path/'s.csv', many)
    r = pack_waveforms(tmp_path/'s.csv', audios, tmp_path/'w.h5', num_workers=1, progress=False)
    assert r.rows == 1 and len(r.skipped) == 1500
    with h5py.File(r.path, 'r') as f:
        assert f['skipped'].shape == (1500, 2) and f['skipped'][1499, 0].decode() == 'Ygone0001499.wav'

def test_nothing_readable_writes_nothing(tmp_path):
    (tmp_path/'a').mkdir()
    write_segments(tmp_path/'s.csv', [Segment('nothere____', 0., 10., (load_labels().mids[0],))])
    with pytest.raises(ValueError, match='None of the 1 clips'):
        pack_waveforms(tmp_path/'s.csv', tmp_path/'a', tmp_path/'w.h5', num_workers=1, progress=False)
    # the lock file stays
    assert list(tmp_path.glob('*.h5')) == [] and list(tmp_path.glob('.*')) == [tmp_path/'.w.h5.lock']
    with pytest.raises(FileNotFoundError, match='--audios_dir'):
        pack_waveforms(tmp_path/'s.csv', tmp_path/'nodir', tmp_path/'w.h5', progress=False)

# ---- kill and resume ----

KILLER = textwrap.dedent('''
    import os, signal, sys
    import audioset_nb.pack as p
    where, after = sys.argv[1], int(sys.argv[2])
    calls = [0]
    def killing(orig):
        def f(*a, **k):
            calls[0] += 1
            if where == 'before' and calls[0] > after: os.kill(os.getpid(), signal.SIGKILL)
            out = orig(*a, **k)
            if where == 'after' and calls[0] >= after: os.kill(os.getpid(), signal.SIGKILL)
            return out
        return f
    p._append = killing(p._append)     # 'after': killed between writing rows and recording them
    p.pack_waveforms(sys.argv[3], sys.argv[4], sys.argv[5], num_workers=1, chunk=2, progress=False)
''')

@pytest.mark.parametrize('where', ['before', 'after'])
def test_killed_run_resumes_to_the_same_file(clips, tmp_path, caplog, where):
    d, audios, _ = clips
    good = pack_waveforms(d/'segs.csv', audios, tmp_path/'good.h5', num_workers=1, progress=False)
    out = tmp_path/'out.h5'
    p = subprocess.run([sys.executable, '-c', KILLER, where, '2', str(d/'segs.csv'), str(audios), str(out)], cwd=ROOT)
    assert p.returncode == -signal.SIGKILL
    partial = tmp_path/'.out.h5.partial'
    assert not out.exists() and partial.exists()           # nothing where the good file is expected
    with caplog.at_level(logging.INFO, logger='audioset_nb.pack'):
        r = pack_waveforms(d/'segs.csv', audios, out, num_workers=1, chunk=2, progress=False)
    assert 'resuming' in caplog.text                        # picked up, not redone
    assert not partial.exists() and r.rows == good.rows and sorted(r.skipped) == sorted(good.skipped)
    with h5py.File(out, 'r') as a, h5py.File(good.path, 'r') as b:
        for k in ('audio_name', 'waveform', 'target'): np.testing.assert_array_equal(a[k][:], b[k][:])

def test_unusable_leftovers_are_redone(clips, tmp_path, caplog):
    d, audios, _ = clips
    good = pack_waveforms(d/'segs.csv', audios, tmp_path/'good.h5', num_workers=1, progress=False)
    (tmp_path/'.out.h5.partial').write_bytes(b'\x89HDF\r\n' + os.urandom(3000))   # a leftover cut mid-write
    with caplog.at_level(logging.WARNING):
        r = pack_waveforms(d/'segs.csv', audios, tmp_path/'out.h5', num_workers=1, progress=False)
    assert 'unreadable leftover' in caplog.text and r.rows == good.rows
    # a leftover made with other settings is not mixed in
    pack_waveforms(d/'segs.csv', audios, tmp_path/'o16.h5', sample_rate=16000, num_workers=1, progress=False)
    (tmp_path/'o16.h5').rename(tmp_path/'.out2.h5.partial')
    r2 = pack_waveforms(d/'segs.csv', audios, tmp_path/'out2.h5', num_workers=1, progress=False)
    with h5py.File(r2.path, 'r') as f: assert f['waveform'].shape == (good.rows, 320000)

# ---- indexes ----

def fake_index(path, names, wave_path):
    with h5py.File(path, 'w') as f:
        f['audio_name'] = np.array(names, dtype='S20')
        f['target'] = np.zeros((len(names), 527), bool)
        f['hdf5_path'] = np.array([wave_path]*len(names), dtype='S200')
        f['index_in_hdf5'] = np.arange(len(names), dtype=np.int32)

def test_full_index_order_is_fixed(tmp_path):
    d = tmp_path/'indexes'
    d.mkdir()
    parts = ['unbalanced_train_part10', 'eval', 'unbalanced_train_part2', 'balanced_train', 'unbalanced_train_part00',
             'full_train']
    for p in parts: fake_index(d/f'{p}.h5', [f'Y{p[-6:]}{i}.wav' for i in range(3)], f'/w/{p}.h5')
    out = combine_indexes(d, d/'full_train.h5')
    with h5py.File(out, 'r') as f:
        srcs = [Path(p.decode()).stem for p in f['hdf5_path'][::3]]
        assert f['index_in_hdf5'].dtype == np.int32 and len(f['audio_name']) == 12
    assert srcs == ['balanced_train', 'unbalanced_train_part00', 'unbalanced_train_part2', 'unbalanced_train_part10']
    assert train_index_order(['b/unb_part1.h5', 'a/balanced_train.h5']) == ['a/balanced_train.h5', 'b/unb_part1.h5']
    with pytest.raises(FileNotFoundError, match='does not exist; check --indexes_hdf5s_dir'):
        combine_indexes(tmp_path/'none', tmp_path/'f.h5')
    (tmp_path/'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='--indexes_hdf5_path'):
        combine_indexes(tmp_path/'empty', tmp_path/'f.h5')

# ---- command line ----

pack = partial(cli, 'audioset_pack', cwd=ROOT)

def test_cli_end_to_end_with_reference_flags(clips, tmp_path):
    d, audios, _ = clips
    w, i = tmp_path/'hdf5s'/'waveforms'/'balanced_train.h5', tmp_path/'hdf5s'/'indexes'/'balanced_train.h5'
    p = pack('--csv_path', str(d/'segs.csv'), '--audios_dir', str(audios), '--waveforms_hdf5_path', str(w),
            '--indexes_hdf5_path', str(i), '--workers', '2', '--quiet')
    assert p.returncode == 0, p.stderr
    assert f'packed {len(KINDS)} clips' in p.stdout and f'{len(BAD)} left out' in p.stdout
    assert clip_name(ytid('garbageclip')) in p.stderr
    fake_index(tmp_path/'hdf5s'/'indexes'/'unbalanced_train_part01.h5', ['Yabcdefghijk.wav'], str(w))
    p = pack('--indexes_hdf5s_dir', str(i.parent), '--full_indexes_hdf5_path', str(i.parent/'full_train.h5'))
    assert p.returncode == 0, p.stderr
    with h5py.File(i.parent/'full_train.h5', 'r') as f: assert len(f['audio_name']) == len(KINDS) + 1

def test_cli_part_packs_its_slice_of_the_list(clips, tmp_path):
    d, audios, segs = clips
    names = []
    for k in range(2):
        w = tmp_path/f'part{k}.h5'
        p = pack('--csv_path', str(d/'segs.csv'), '--audios_dir', str(audios), '--waveforms_hdf5_path', str(w),
                 '--part', f'{k}/2', '--quiet')
        assert p.returncode == 0, p.stderr
        with h5py.File(w, 'r') as f:  # packed rows plus the clips left out: together, the slice
            names.append([n.decode() for n in f['audio_name'][:]] + [n.decode() for n in f['skipped'][:, 0]])
    half = len(segs)//2
    want = [[clip_name(s.ytid) for s in segs[:half]], [clip_name(s.ytid) for s in segs[half:]]]
    assert [sorted(n) for n in names] == [sorted(w) for w in want]

@pytest.mark.parametrize('args,msg', [
    ([], 'nothing to do'),
    (['--csv_path', 'x.csv'], 'packing needs'),
    (['--csv_path', '/no/such.csv', '--audios_dir', '/tmp', '--waveforms_hdf5_path', '/tmp/x.h5'], '--csv_path'),
    (['--waveforms_hdf5_path', '/no/such.h5', '--indexes_hdf5_path', '/tmp/i.h5'], 'pack it first'),
    (['--indexes_hdf5s_dir', '/tmp'], 'both'),
])
def test_cli_bad_input_is_one_sentence(args, msg):
    p = pack(*args)
    assert p.returncode == 1
    one_sentence(p.stderr, msg)

def test_workers_is_an_alias_of_num_workers(run_cli, tones, tmp_path):
    "`--workers`, the flag runme.sh and the README type, packs the same file as the field's own name `--num_workers`."
    ytids = ['aliasclip01', 'aliasclip02', 'aliasclip03']
    tones({clip_name(y)[:-4]: 300 + 200*i for i, y in enumerate(ytids)}, folder=tmp_path/'audios')
    write_segments(tmp_path/'s.csv', [Segment(y, 0., 1., (load_labels().mids[0],)) for y in ytids])
    rows = []
    for flag in ('--workers', '--num_workers'):
        out = tmp_path/f'{flag[2:]}.h5'
        r = run_cli('audioset_pack', '--csv_path', tmp_path/'s.csv', '--audios_dir', tmp_path/'audios',
                    '--waveforms_hdf5_path', out, '--clip_seconds', '1', flag, '2', '--quiet', timeout=120)
        assert r.returncode == 0, r.stderr
        with h5py.File(out, 'r') as f: rows.append(f['waveform'][:])
    assert rows[0].shape == (3, SR) and np.array_equal(rows[0], rows[1])
    assert [round(peak_hz(x)) for x in rows[0]] == [300, 500, 700]

# name, rate, channels, format, subtype: the fast path (16-bit PCM at 32 kHz) and every kind beside it
EXACT = [('w32m', 32000, 1, 'WAV', 'PCM_16'), ('w32s', 32000, 2, 'WAV', 'PCM_16'),
         ('w32c3', 32000, 3, 'WAV', 'PCM_16'), ('f32m', 32000, 1, 'FLAC', 'PCM_16'),
         ('f32s', 32000, 2, 'FLAC', 'PCM_16'), ('a32s', 32000, 2, 'AIFF', 'PCM_16'),
         ('w44s', 44100, 2, 'WAV', 'PCM_16'), ('w32m24', 32000, 1, 'WAV', 'PCM_24'), ('w32f', 32000, 2, 'WAV', 'FLOAT'),
         ('mp3s', 44100, 2, 'mp3', None), ('m4as', 44100, 2, 'm4a', None), ('short', 32000, 2, 'WAV', 'PCM_16')]

def float_path_row(path, n=320000):
    "A row as packing made it before the int16 fast path and the shared rows: decode to float, mix, cut, scale."
    from audioset_nb.audio import load_audio, pad_or_truncate, to_int16
    return to_int16(pad_or_truncate(load_audio(path, SR, duration=n/SR + 1), n))

def test_rows_are_bit_identical_to_the_float_path(tmp_path):
    "Full-scale noise (both ends of int16 included) in every format, rate and channel count packs to the same rows."
    audios = tmp_path/'audios'
    audios.mkdir()
    g, labels = np.random.default_rng(0), load_labels()
    for name, sr, ch, fmt, subtype in EXACT:
        pcm = g.integers(-32768, 32768, (int(sr*(3 if name == 'short' else 11)), ch)).astype(np.int16)
        pcm[:2] = [[-32768]*ch, [32767]*ch]
        path = audios/clip_name(ytid(name))
        if fmt in ('mp3', 'm4a'):
            ffmpeg('-f', 's16le', '-ar', sr, '-ac', ch, '-i', 'pipe:0', '-f', 'mp3' if fmt == 'mp3' else 'ipod', path,
                   input=(pcm//2).tobytes())
        else: sf.write(path, pcm, sr, format=fmt, subtype=subtype)
    write_segments(tmp_path/'segs.csv', [Segment(ytid(e[0]), 0., 10., (labels.mids[0],)) for e in EXACT])
    want = np.stack([float_path_row(audios/clip_name(ytid(e[0]))) for e in EXACT])
    for workers in (1, 2):
        out = tmp_path/f'w{workers}.h5'
        assert pack_waveforms(tmp_path/'segs.csv', audios, out, num_workers=workers, progress=False).rows == len(EXACT)
        with h5py.File(out, 'r') as f: got = f['waveform'][:]
        for e, a, b in zip(EXACT, got, want): assert np.array_equal(a, b), (e, workers)
    pack_waveforms(tmp_path/'segs.csv', audios, tmp_path/'flac.h5', num_workers=2, codec='flac', progress=False)
    with h5py.File(tmp_path/'flac.h5', 'r') as f:
        flac = np.stack([sf.read(io.BytesIO(r.tobytes()), dtype='int16')[0] for r in f['waveform_flac']])
    assert np.array_equal(flac, want)

@pytest.mark.parametrize('ext', ['flac', 'mkv'])
def test_a_long_file_costs_what_a_clip_costs(tmp_path, ext):
    "10 min and 100 min of audio (soundfile's path and ffmpeg's) take the same memory and ffmpeg time to pack a row."
    import resource, tracemalloc
    from audioset_nb.pack import encode_clip
    cost = {}
    for minutes in (10, 100):
        path = tmp_path/f'{minutes}.{ext}'
        pcm = ['-c:a', 'pcm_s16le'] if ext == 'mkv' else []
        ffmpeg('-f', 'lavfi', '-i', f'sine=f=440:r=8000:d={60*minutes}', *pcm, path)
        k0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        tracemalloc.start()
        row = encode_clip(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cost[minutes] = peak, k1.ru_utime + k1.ru_stime - k0.ru_utime - k0.ru_stime
        assert abs(peak_hz(row) - 440) <= 1
    assert cost[100][0] < 1.2*cost[10][0], cost            # Python memory: flat in the file's length
    assert cost[100][1] < 2*cost[10][1] + 0.3, cost        # ffmpeg stops after the clip (-t), wherever the file ends
