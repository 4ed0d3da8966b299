"The mini AudioSet on disk: determinism, official-format lists, honest events, and source files that decode right."
import os, re, stat
from functools import partial
import numpy as np, pytest
from audioset_nb import audio, mini as M
from audioset_nb.download import YTID_RE, SAMPLE_RATE, read_segments
from conftest import cli, one_sentence

LOSSLESS = {'wav', 'flac'}

@pytest.fixture(scope='module')
def ds(tmp_path_factory):
    "Two clips of every source format in each subset."
    return M.make_mini(tmp_path_factory.mktemp('mini')/'ds', seed=3, n_train=7, n_eval=7, num_workers=2)

def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = M.make_mini(tmp_path/'a', seed=5, n_train=12, n_eval=6, sources=False)
    b = M.make_mini(tmp_path/'b', seed=5, n_train=12, n_eval=6, sources=False)
    c = M.make_mini(tmp_path/'c', seed=6, n_train=12, n_eval=6, sources=False)
    for f in ['metadata/balanced_train_segments.csv', 'metadata/eval_segments.csv', 'events.jsonl']:
        assert (tmp_path/'a'/f).read_bytes() == (tmp_path/'b'/f).read_bytes()
        assert (tmp_path/'a'/f).read_bytes() != (tmp_path/'c'/f).read_bytes()
    y = a.segments['eval'][0].ytid
    assert np.array_equal(a.reference_segment(y), b.reference_segment(y))
    assert not set(a.clips) & set(c.clips)
    assert not np.allclose(a.reference_segment(y), c.reference_segment(c.segments['eval'][0].ytid))

def test_csv_is_official_format(ds):
    lines = ds.csv_path('balanced_train').read_text().splitlines()
    assert [l[0] for l in lines[:3]] == ['#']*3 and lines[2] == '# YTID, start_seconds, end_seconds, positive_labels'
    row = re.compile(r'[A-Za-z0-9_-]{11}, \d+\.000, \d+\.000, "(/[mt]/[0-9a-z_]+,?)+"')
    assert all(row.fullmatch(l) for l in lines[3:]) and len(lines) == 3 + 7

def test_labels_and_distribution(tmp_path):
    m = M.make_mini(tmp_path/'m', seed=0, n_train=20, n_eval=10, sources=False)
    for subset, n in [('balanced_train', 20), ('eval', 10)]:
        segs = read_segments(m.csv_path(subset), strict=True)
        assert len(segs) == n and not segs.problems
        assert all(1 <= len(s.labels) <= 3 and set(s.labels) <= set(M.MINI_MIDS) for s in segs)
        assert {mid for s in segs for mid in s.labels} == set(M.MINI_MIDS)     # every class in each subset
        assert all(s.end - s.start == 10 for s in segs)
    ids = list(m.clips)
    assert len(set(ids)) == 30 and all(YTID_RE.fullmatch(y) for y in ids)
    assert any(y.startswith('-') for y in ids) and any('_' in y for y in ids)

def test_default_sizes_are_balanced():
    clips = M.plan_mini(0)
    for subset, n, least in [('balanced_train', 600, 86), ('eval', 150, 21)]:
        cs = [c for c in clips if c.subset == subset]
        counts = np.bincount([M.MINI_CLASSES.index(e.name) for c in cs for e in c.events], minlength=14)
        assert len(cs) == n and counts.min() >= least, counts
        assert {len(c.events) for c in cs} == {1, 2, 3}

def test_events_are_where_the_sound_is():
    "Outside every event only the noise floor (< -40 dBFS); inside each one, the event at its level."
    for c in M.plan_mini(1, 10, 5):
        x = M.synth_clip(c.seed, c.events)[0]
        quiet = np.ones(len(x), bool)
        for e in c.events:
            i, j = int(round(e.onset*SAMPLE_RATE)), int(round(e.offset*SAMPLE_RATE))
            quiet[i:j] = False
            assert M.LEVELS[0] <= e.level <= M.LEVELS[1] and 0 <= e.onset < e.offset <= 10
            alone = M.synth_clip(c.seed, [e])[0][i:j]
            assert abs(20*np.log10(np.abs(alone).max()) - e.level) < 0.5
        assert np.abs(x[quiet]).max(initial=0) < 10**(-40/20)

def test_synth_clip_rates_and_generators():
    x, ev = M.synth_clip(np.random.default_rng(0), sample_rate=16000, seconds=4)
    assert x.dtype == np.float32 and len(x) == 64000 and all(e.offset <= 4 for e in ev)
    assert np.array_equal(M.synth_clip(np.random.default_rng(0), sample_rate=16000, seconds=4)[0], x)

def test_one_source_per_ytid(ds):
    names = sorted(os.listdir(ds.sources_dir))
    assert names == sorted(f'{y}.{c.source.ext}' for y, c in ds.clips.items())
    assert {c.source.ext for c in ds.clips.values()} == {f.ext for f in M.SOURCE_FORMATS} == set(M.SOURCE_MIME)
    assert M.SOURCE_MIME['mp4'] == 'video/mp4' and all(m.startswith('audio/') for e,
                                                       m in M.SOURCE_MIME.items() if e != 'mp4')

def test_sources_decode_as_declared(ds):
    for y, c in ds.clips.items():
        s, p = c.source, M.probe_media(ds.source_path(y))
        assert (p['audio_codec'], p['sample_rate'], p['channels']) == (s.format.codec, s.sample_rate, s.channels), y
        assert p['video_codec'] == (s.format.video or None)
        assert abs(p['duration'] - s.duration) < 0.1
        assert abs(len(M.decode_audio(ds.source_path(y)))/SAMPLE_RATE - s.duration) < M.AAC_PADDING_S, (y, s)
        assert s.start >= 1 and s.duration - s.end >= 0.5

def test_segment_cut_at_csv_times_is_the_reference(ds):
    "The cut at the CSV's start/end matches the reference; the same cut one second off does not."
    starts = {s.ytid: (s.start, s.end) for subset in M.SUBSETS for s in ds.segments[subset]}
    for y, c in ds.clips.items():
        ref, (start, end) = ds.reference_segment(y), starts[y]
        full = M.decode_audio(ds.source_path(y))
        cut = M.decode_audio(ds.source_path(y), start=start, end=end)
        assert abs(len(cut) - len(ref)) <= SAMPLE_RATE//100   # ffmpeg may end a vorbis cut a frame early
        lossless = c.source.ext in LOSSLESS
        fmax, tol = (8000, 0.999) if lossless else (4000, 0.95)
        i = int(start*SAMPLE_RATE)
        assert M.similarity(full[i:i+len(ref)], ref, fmax=fmax) > tol, (y, c.source)
        assert M.similarity(cut, ref, fmax=fmax) > (0.99 if lossless else 0.95), (y, c.source)
        for off in (-1, 1):
            j = i + off*SAMPLE_RATE
            assert M.similarity(full[j:j+len(ref)], ref, fmax=4000) < 0.95, (y, off)

def test_stereo_right_is_scaled_left(ds):
    y = next(y for y, c in ds.clips.items() if c.source.channels == 2 and c.source.ext in LOSSLESS)
    x = M.decode_audio(ds.source_path(y), sample_rate=ds.source(y).sample_rate, mono=False)
    assert x.shape[1] == 2 and np.abs(x[:, 1] - M.RIGHT_GAIN*x[:, 0]).max() < 1e-3

def test_rerun_resumes_and_cleans_temp_files(ds):
    files = sorted(ds.sources_dir.iterdir())
    gone, before = files[0], {p: p.stat().st_mtime_ns for p in files[1:]}
    ref = M.decode_audio(gone)
    gone.unlink()
    (ds.sources_dir/f'.{gone.name}.tmp').write_bytes(b'half a file')
    m = M.make_mini(ds.root, seed=3, n_train=7, n_eval=7, num_workers=2)
    assert sorted(m.sources_dir.iterdir()) == files                  # the missing one is back, the temp file gone
    assert {p: p.stat().st_mtime_ns for p in files[1:]} == before    # the others were not rewritten
    assert np.array_equal(M.decode_audio(gone), ref)

def test_failed_encoder_leaves_nothing(tmp_path, monkeypatch):
    fake = tmp_path/'ffmpeg'
    fake.write_text('#!/bin/sh\necho "encoder exploded" >&2\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(audio, 'ffmpeg_exe', lambda: str(fake))  # the one `ffmpeg_cmd` calls
    with pytest.raises(RuntimeError, match='ffmpeg could not write .*encoder exploded'):
        M.make_mini(tmp_path/'m', n_train=2, n_eval=1, num_workers=1)
    assert list((tmp_path/'m'/'sources').iterdir()) == []

def test_user_errors_are_one_sentence(tmp_path):
    M.make_mini(tmp_path/'m', seed=0, n_train=3, n_eval=2, sources=False)
    with pytest.raises(ValueError, match='made with other settings'):
        M.make_mini(tmp_path/'m', seed=1, n_train=3, n_eval=2)
    with pytest.raises(ValueError, match='at least 1'): M.make_mini(tmp_path/'z', n_train=0)
    with pytest.raises(ValueError, match='non-negative integer'): M.make_mini(tmp_path/'z', seed=-1)
    with pytest.raises(FileNotFoundError, match='no mini AudioSet'): M.load_mini(tmp_path)
    with pytest.raises(KeyError, match='not a clip'): M.reference_segment(tmp_path/'m', 'AAAAAAAAAAA')
    with pytest.raises(ValueError, match='not a media file'):
        (tmp_path/'x.webm').write_bytes(b'nope')
        M.probe_media(tmp_path/'x.webm')

mini = partial(cli, 'audioset_mini', timeout=120)

def test_cli_writes_the_same_dataset(tmp_path):
    r = mini('--root', tmp_path/'cli', '--seed', '2', '--n_train', '4', '--n_eval', '3', '--no_sources')
    assert r.returncode == 0, r.stderr
    m = M.make_mini(tmp_path/'lib', seed=2, n_train=4, n_eval=3, sources=False)
    assert (tmp_path/'cli'/'events.jsonl').read_bytes() == m.events_path.read_bytes()
    assert not (tmp_path/'cli'/'sources').exists()

def test_cli_bad_input_is_one_sentence(tmp_path):
    r = mini('--root', tmp_path/'x', '--n_train', '0')
    assert r.returncode != 0
    one_sentence(r.stderr, 'must both be at least 1')
    r = mini()
    assert r.returncode != 0
    one_sentence(r.stderr, '--root')

def test_cli_on_a_read_only_disk_is_one_sentence(tmp_path, tmpfs):
    import subprocess
    ro = tmpfs(tmp_path/'ro')
    subprocess.run(['mount', '-o', 'remount,ro', str(ro)], check=True)
    r = cli('audioset_mini', '--root', ro/'m', '--n_train', '2', '--n_eval', '1', timeout=120)
    # was: "[Errno 30] Read-only file system: '.../m'" (or tracebacks), no fix named
    assert r.returncode == 1
    one_sentence(r.stderr, f'Cannot write {ro/"m"}', 'read-only', 'choose a folder')
