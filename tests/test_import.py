"""Importing copies of AudioSet: Hugging Face parquet, WebDataset shards and folders equal the YouTube/pack path;
coverage; kill and resume; the CLI."""
import csv, io, json, os, signal, subprocess, sys, tarfile, textwrap
from functools import partial
from pathlib import Path
import h5py, numpy as np, pytest, soundfile as sf
import pyarrow as pa, pyarrow.parquet as pq
from audioset_nb.fileio import output_lock
from audioset_nb.audio import AUDIO_EXTS
from audioset_nb.importer import check_coverage, find_pieces, import_clips
from audioset_nb.metadata import Segment, load_labels, load_segments, write_segments
from audioset_nb.pack import pack_waveforms
from conftest import ROOT, cli, cli_popen, one_sentence, tone

HF_SCHEMA = pa.schema([('video_id', pa.string()), ('audio', pa.struct([('bytes', pa.binary()), ('path', pa.string())])),
                       ('labels', pa.list_(pa.string())), ('human_labels', pa.list_(pa.string()))])
BAL = load_segments('balanced_train')
LABELS = load_labels()
UNLISTED = 'zzzzzzzzzz0'        # an id in no official list

def flac(x, sr, subtype='PCM_24'):
    b = io.BytesIO()
    sf.write(b, x, sr, format='FLAC', subtype=subtype)
    return b.getvalue()

# (ytid, audio bytes, label mids): 48 kHz/24-bit, 44.1 kHz, a 3-s clip, a blob that is not audio, a row whose labels
# are not the official ones, and an id in no official list
ROWS = [(BAL[10].ytid, flac(tone(440, 10, 48000), 48000), BAL[10].labels),
        (BAL[11].ytid, flac(tone(660, 10, 44100), 44100, 'PCM_16'), BAL[11].labels),
        (BAL[12].ytid, flac(tone(880, 3, 48000), 48000), BAL[12].labels),
        (BAL[13].ytid, b'fLaC\x00\x00\x00\x22 not a flac stream', BAL[13].labels),
        (BAL[14].ytid, flac(tone(1000, 10, 48000), 48000), (LABELS.mid('Cat'), LABELS.mid('Meow'))),
        (UNLISTED, flac(tone(1200, 10, 44100), 44100), (LABELS.mid('Dog'),))]
GOOD = [r for k, r in enumerate(ROWS) if k != 3]

def write_parquet(path, rows, row_group_size=2):
    pq.write_table(pa.table({'video_id': [r[0] for r in rows],
                             'audio': [{'bytes': r[1], 'path': f'audio/bal_train/{r[0]}.flac'} for r in rows],
                             'labels': [list(r[2]) for r in rows],
                             'human_labels': [[LABELS[LABELS.index(m)] for m in r[2]] for r in rows]},
                            schema=HF_SCHEMA),
                   path, row_group_size=row_group_size)

def write_shard(path, rows):
    with tarfile.open(path, 'w') as tar:
        for ytid, audio, mids in rows:
            for name, data in [(f'{ytid}.flac', audio), (f'{ytid}.json', json.dumps({'labels': list(mids)}).encode())]:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))

@pytest.fixture(scope='module')
def copies(tmp_path_factory):
    "The same clips as a Hugging Face parquet file, a WebDataset shard, a folder with its CSV, and downloaded wavs."
    d = tmp_path_factory.mktemp('copies')
    write_parquet(d/'bal_train00.parquet', ROWS)
    write_shard(d/'shard-000000.tar', ROWS)
    (d/'clips').mkdir()
    (d/'audios').mkdir()
    for k, (ytid, audio, _) in enumerate(ROWS):
        (d/'clips'/f'{"Y" if k % 2 else ""}{ytid}.{"flac" if k % 3 else "audio"}').write_bytes(audio)
        if k != 3:
            x, sr = sf.read(io.BytesIO(audio))
            sf.write(d/'audios'/f'Y{ytid}.wav', x, sr, subtype='FLOAT')
    write_segments(d/'segs.csv', [Segment(y, 0., 10., tuple(m)) for y, _, m in ROWS])
    packed = pack_waveforms(d/'segs.csv', d/'audios', d/'packed.h5', num_workers=1, progress=False)
    return d, packed

def rows_by_name(path):
    with h5py.File(path, 'r') as f:
        names = [n.decode() for n in f['audio_name'][:]]
        return {n: (w, t) for n, w, t in zip(names, f['waveform'][:], f['target'][:])}

@pytest.mark.parametrize('source,kw', [('bal_train00.parquet', {}), ('shard-000000.tar', {}),
                                       ('clips', {'csv_path': 'segs.csv'})])
def test_each_copy_packs_to_the_rows_of_the_youtube_path(copies, tmp_path, source, kw):
    d, packed = copies
    kw = {k: d/v for k, v in kw.items()}
    r = import_clips([d/source], tmp_path/'w.h5', num_workers=2, progress=False, **kw)
    got, want = rows_by_name(r.path), rows_by_name(packed.path)
    assert sorted(got) == sorted(want) == sorted(f'Y{y}.wav' for y, _, _ in GOOD)
    for n in want:
        np.testing.assert_allclose(got[n][0].astype(int), want[n][0].astype(int), atol=2)  # FLAC 24-bit vs float wav
        assert (got[n][1] == want[n][1]).all()
    short = got[f'Y{ROWS[2][0]}.wav'][0]
    assert short.shape == (320000,) and not short[3*32000 + 100:].any() and short[:3*32000].any()
    assert [n for n, _ in r.skipped] == [f'Y{ROWS[3][0]}.wav'] and 'could not be decoded' in r.skipped[0][1]

def test_coverage_counts_are_exact(copies, tmp_path):
    d, _ = copies
    r = import_clips([d/'bal_train00.parquet'], tmp_path/'w.h5', num_workers=1, progress=False)
    cov = check_coverage(r.path)
    b = cov.summary['balanced_train']
    assert (b['official'], b['imported'], b['left_out'], b['differ'], b['absent']) == (len(BAL), 4, 1, 1, len(BAL) - 5)
    assert cov.unlisted == 1 and cov.summary['eval']['absent'] == 0
    kinds = {(p[0], p[2]) for p in cov.problems if p[2] != 'absent'}
    assert kinds == {(ROWS[4][0], 'labels differ'), (ROWS[3][0], 'left out'), (UNLISTED, 'unlisted')}
    absent = {p[0] for p in cov.problems if p[2] == 'absent'}
    assert absent == {s.ytid for s in BAL} - {r[0] for r in ROWS[:5]}
    got, want = cov.class_counts['balanced_train']
    assert got[LABELS.index('Cat')] == 1 + sum(LABELS.mid('Cat') in r[2] for r in ROWS[:3])
    assert want[LABELS.index('Cat')] == sum(LABELS.mid('Cat') in s.labels for s in BAL)
    assert cov.class_counts['unlisted'][0][LABELS.index('Dog')] == 1

KILLER = textwrap.dedent('''
    import os, signal, sys
    import audioset_nb.pack as p
    from audioset_nb.importer import import_clips
    calls = [0]
    def killing(orig):
        def f(*a, **k):
            calls[0] += 1
            out = orig(*a, **k)
            if calls[0] >= 2: os.kill(os.getpid(), signal.SIGKILL)   # rows written, resume point not yet recorded
            return out
        return f
    p._append = killing(p._append)
    import_clips([sys.argv[1]], sys.argv[2], num_workers=1, chunk=2, progress=False)
''')

@pytest.mark.parametrize('source', ['bal_train00.parquet', 'shard-000000.tar'])
def test_sigkill_mid_import_then_rerun_gives_the_clean_file(copies, tmp_path, source):
    d, _ = copies
    clean = import_clips([d/source], tmp_path/'clean.h5', num_workers=1, chunk=2, progress=False)
    out = tmp_path/'out.h5'
    p = subprocess.run([sys.executable, '-c', KILLER, str(d/source), str(out)], cwd=ROOT)
    assert p.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path/'.out.h5.partial').exists()
    with h5py.File(tmp_path/'.out.h5.partial', 'r') as f: assert 0 < f['audio_name'].shape[0] < clean.rows
    r = import_clips([d/source], out, num_workers=2, chunk=2, progress=False)
    assert r.rows == clean.rows and r.skipped == clean.skipped and not (tmp_path/'.out.h5.partial').exists()
    with h5py.File(out, 'r') as a, h5py.File(clean.path, 'r') as b:
        for k in ('audio_name', 'waveform', 'target', 'skipped'): np.testing.assert_array_equal(a[k][:], b[k][:])
        assert dict(a.attrs) == dict(b.attrs)

def test_a_url_source_is_read_through_fsspec(copies, tmp_path):
    pytest.importorskip('fsspec')
    d, _ = copies
    r = import_clips([f'file://{d}/*.parquet'], tmp_path/'w.h5', num_workers=1, progress=False)
    assert sorted(rows_by_name(r.path)) == sorted(f'Y{y}.wav' for y, _, _ in GOOD)

# ---- command line ----

imp = partial(cli, 'audioset_import', cwd=ROOT)

def test_cli_parts_combine_to_the_whole(copies, tmp_path):
    d, _ = copies
    w, ix = tmp_path/'hdf5s'/'waveforms', tmp_path/'hdf5s'/'indexes'
    for i in range(2):
        p = imp(str(d/'bal_train00.parquet'), '--part', f'{i}/2', '--workers', '2', '--quiet',
                '--waveforms_hdf5_path', w/f'unbalanced_train_part{i:02d}.h5',
                '--indexes_hdf5_path', ix/f'unbalanced_train_part{i:02d}.h5')
        assert p.returncode == 0, p.stderr
        assert 'balanced_train:' in p.stdout and 'coverage report:' in p.stdout
    assert (w/'unbalanced_train_part00_coverage.csv').exists()
    p = cli('audioset_pack', '--indexes_hdf5s_dir', ix, '--full_indexes_hdf5_path', ix/'full_train.h5', cwd=ROOT)
    assert p.returncode == 0, p.stderr
    with h5py.File(ix/'full_train.h5', 'r') as f: names = [n.decode() for n in f['audio_name'][:]]
    assert names == [f'Y{y}.wav' for y, _, _ in GOOD]

def test_cli_summary_and_report(copies, tmp_path):
    d, _ = copies
    p = imp(str(d/'clips'), '--csv_path', d/'segs.csv', '--waveforms_hdf5_path', tmp_path/'w.h5', '--coverage_path',
            tmp_path/'c.csv', '--quiet', '--workers', '1')
    assert p.returncode == 0, p.stderr
    assert f'imported {len(GOOD)} clips' in p.stdout and '1 left out' in p.stdout
    assert f'balanced_train: 4 of {len(BAL):,} official clips imported' in p.stdout
    assert '1 with other labels' in p.stdout
    assert 'not in any official list: 1 imported clips' in p.stdout
    with open(tmp_path/'c.csv') as f: report = list(csv.DictReader(f))
    assert sum(r['problem'] == 'absent' for r in report) == len(BAL) - 5

def test_bad_input_is_one_sentence(copies, tmp_path):
    d, _ = copies
    (tmp_path/'empty').mkdir()
    (tmp_path/'empty'/'readme.txt').write_text('nothing')
    pq.write_table(pa.table({'id': ['x']}), tmp_path/'other.parquet')
    (tmp_path/'bad.tar').write_bytes(os.urandom(3000))
    out = ['--waveforms_hdf5_path', tmp_path/'w.h5', '--quiet']
    cases = [((tmp_path/'empty', *out), 'holds no parquet files'), ((tmp_path/'missing', *out), 'does not exist'),
             ((tmp_path/'other.parquet', *out), 'no audio or video_id column'), ((tmp_path/'bad.tar', *out),
                                                                                 'not a readable tar shard'),
             ((d/'bal_train00.parquet', '--part', '2/2', *out), '--part'), ((d/'bal_train00.parquet', '--part', '0/6',
                                                                             *out), 'is empty'),
             ((d/'bal_train00.parquet', '--codec', 'mp4', *out), '--codec'),
             ((d/'bal_train00.parquet',), '--waveforms_hdf5_path')]
    for args, words in cases:
        p = imp(*args)
        assert p.returncode != 0, args
        one_sentence(p.stderr, words)
    assert not (tmp_path/'w.h5').exists()
    with output_lock(tmp_path/'busy.h5'):
        p = imp(d/'bal_train00.parquet', '--waveforms_hdf5_path', tmp_path/'busy.h5')
    assert p.returncode != 0 and 'being written by another process' in one_sentence(p.stderr)

# ---- compressed stores ----

@pytest.mark.parametrize('codec', ['flac', 'mp3'])
def test_compressed_stores_import_and_load_like_int16(copies, tmp_path, codec):
    from audioset_nb.data import AudioSetDataset
    d, _ = copies
    ref = import_clips([d/'bal_train00.parquet'], tmp_path/'int16.h5', num_workers=1, progress=False)
    r = import_clips([d/'bal_train00.parquet'], tmp_path/f'{codec}.h5', codec=codec, num_workers=2, progress=False)
    with h5py.File(r.path, 'r') as f: sizes = [len(b) for b in f[f'waveform_{codec}']]
    assert len(sizes) == ref.rows and max(sizes) < (320_000 if codec == 'flac' else 160_000)   # bytes per 10-s clip
    a, b = AudioSetDataset(ref.path), AudioSetDataset(r.path)
    for i in range(ref.rows):
        x, y = a[i]['waveform'], b[i]['waveform']
        assert y.shape == x.shape == (320000,) and a[i]['audio_name'] == b[i]['audio_name']
        if codec == 'flac': np.testing.assert_array_equal(x, y)
        else:
            err = np.sum((x[3200:-3200] - y[3200:-3200])**2)/np.sum(x[3200:-3200]**2)
            assert err < 0.01, (i, err)      # SNR above 20 dB, sample-aligned

def test_a_changed_source_is_not_resumed_into(copies, tmp_path):
    d, _ = copies
    src = tmp_path/'x.parquet'
    write_parquet(src, ROWS)
    p = subprocess.run([sys.executable, '-c', KILLER, str(src), str(tmp_path/'out.h5')], cwd=ROOT)
    assert p.returncode == -signal.SIGKILL and (tmp_path/'.out.h5.partial').exists()
    changed = [(y, flac(tone(300, 10, 48000), 48000), m) for y, _, m in ROWS]   # same ids and row groups, other audio
    write_parquet(src, changed)
    r = import_clips([src], tmp_path/'out.h5', num_workers=1, chunk=2, progress=False)
    clean = import_clips([src], tmp_path/'clean.h5', num_workers=1, chunk=2, progress=False)
    assert r.rows == clean.rows == len(ROWS)
    with h5py.File(r.path, 'r') as a, h5py.File(clean.path, 'r') as b:
        np.testing.assert_array_equal(a['waveform'][:], b['waveform'][:])

def test_a_folder_holds_what_audio_exts_call_audio(tones, tmp_path):
    "A shard's members are audio by `audio.AUDIO_EXTS` (the one list), not a list of the importer's: `.aif` is audio."
    assert {'.aif', '.oga', '.mov'} <= AUDIO_EXTS
    d = tmp_path/'clips'
    tones({'YaifClip0001': 440}, fmt='aif', folder=d)
    (d/'YtxtClip0001.txt').write_text('not a clip')
    assert [(p.kind, Path(p.path).name) for p in find_pieces([d])] == [('file', 'YaifClip0001.aif')]
    r = import_clips([d], tmp_path/'w.h5', csv_path=_one_label_csv(tmp_path, 'aifClip0001'), num_workers=1,
                     progress=False)
    assert r.rows == 1
    with tarfile.open(tmp_path/'shard.tar', 'w') as tar:  # a WebDataset shard whose clip is an .aif member
        tar.add(d/'YaifClip0001.aif', 'aifClip0001.aif')
        meta = json.dumps(dict(video_id='aifClip0001', labels=[LABELS.mids[0]])).encode()
        info = tarfile.TarInfo('aifClip0001.json')
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    r = import_clips([tmp_path/'shard.tar'], tmp_path/'t.h5', num_workers=1, progress=False)
    assert (r.rows, r.skipped) == (1, [])

def _one_label_csv(d, ytid):
    write_segments(d/'one.csv', [Segment(ytid, 0., 10., (LABELS.mids[0],))])
    return d/'one.csv'
