"The downloader end to end against the loopback mirror: containers, faults, kills, malicious ids, the CLI."
import csv, os, signal, time, wave
from pathlib import Path
import numpy as np, scipy.signal
import pytest
from audioset_nb.download import (Segment, download, download_clips, fetch_unbalanced, format_segments,
                                  is_finished, read_log, summarize, write_segments)
from audioset_nb.mirror import Fault, Mirror
from conftest import SINE_LABEL as LABEL, SOURCE_S, cli, cli_popen, make_source, one_sentence, synth

SR = 32000
# ytid: (extension, rate, channels, codec args, segment start, segment end, with a video stream)
SOURCES = {
    'opusStereo1': ('webm', 48000, 2, ['-c:a', 'libopus', '-b:a', '96k'], 2.0, 12.0, False),
    'aacStereo44': ('m4a', 44100, 2, ['-c:a', 'aac', '-b:a', '128k'], 1.5, 11.5, False),
    'mp3Mono4410': ('mp3', 44100, 1, ['-c:a', 'libmp3lame', '-b:a', '128k'], 3.25, 13.25, False),
    'vorbis22050': ('ogg', 22050, 1, ['-c:a', 'libvorbis'], 0.0, 10.0, False),
    'flacStereo8': ('flac', 48000, 2, ['-c:a', 'flac'], 4.0, 12.5, False),
    'mp4VideoAAC': ('mp4', 48000, 2, ['-c:a', 'aac', '-shortest'], 2.5, 12.5, True),
}

@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp('sources')
    for ytid, (ext, sr, ch, args, *_, video) in SOURCES.items(): make_source(root/f'{ytid}.{ext}', sr, ch, args, video)
    return root

def segs_of(ytids, start=None, end=None):
    return [Segment(y, SOURCES[y][4] if start is None else start, SOURCES[y][5] if end is None else end,
                    LABEL) for y in ytids]

def read_wav(path):
    with wave.open(str(path)) as w:
        return (w.getnchannels(), w.getsampwidth(), w.getframerate()), np.frombuffer(w.readframes(-1), '<i2')/32768

def best_lag(x, ref, max_lag=0.1):
    "(how late `x` is against `ref`, in s; normalized correlation there), searched within +-`max_lag` s."
    c = scipy.signal.correlate(ref, x, mode='full', method='fft')/np.linalg.norm(x)/np.linalg.norm(ref)
    lags = np.arange(-len(x) + 1, len(ref))
    keep = np.abs(lags) <= max_lag*SR
    k = np.argmax(c[keep])
    return lags[keep][k]/SR, c[keep][k]

def test_best_lag_sees_a_one_second_offset():
    t = 2 + np.arange(10*SR)/SR
    assert best_lag(synth(t), synth(t))[1] > 0.999
    assert best_lag(synth(t + 1), synth(t))[1] < 0.3      # the check below would catch a clip taken 1 s late
    assert abs(best_lag(synth(t + 0.02), synth(t))[0] - 0.02) < 1e-3

@pytest.fixture(scope='module')
def downloaded(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp('audios')
    with Mirror(sources) as m:
        rows = download_clips(segs_of(SOURCES), out, num_workers=4, progress=False, url_template=m.url_template,
                              timeout=20, backoff=0.05)
        ranged = [r for r in m.requests if r['range']]
    return out, {r['ytid']: r for r in rows}, ranged

@pytest.mark.parametrize('ytid', list(SOURCES))
def test_each_container_rate_and_layout(downloaded, ytid):
    out, rows, _ = downloaded
    ext, sr, ch, args, start, end, video = SOURCES[ytid]
    assert rows[ytid]['status'] == 'ok', rows[ytid]
    fmt, x = read_wav(out/f'Y{ytid}.wav')
    assert fmt == (1, 2, SR)
    assert len(x) == round((end - start)*SR)
    lag, corr = best_lag(x, synth(start + np.arange(len(x))/SR))
    assert corr > 0.9, (ytid, corr)
    assert abs(lag) < 0.03, (ytid, lag)

def test_only_the_section_is_fetched_with_ranges(downloaded):
    _, _, ranged = downloaded
    # ffmpeg reads through Range requests; the webm is seeked into rather than read from byte 0 to the end
    assert {r['key'] for r in ranged} == set(SOURCES)
    assert any(r['range'] != 'bytes=0-' for r in ranged if r['key'] == 'opusStereo1')

def test_rerun_skips_finished_clips(downloaded, sources):
    out, _, _ = downloaded
    with Mirror(sources) as m:
        rows = download_clips(segs_of(SOURCES), out, num_workers=2, progress=False, url_template=m.url_template)
        assert m.requests == []
    assert {r['status'] for r in rows} == {'ok'} and {r['message'] for r in rows} == {'already downloaded'}

def test_segment_past_the_end_is_padded_and_says_so(sources, tmp_path):
    with Mirror(sources) as m:
        (row,) = download_clips(segs_of(['flacStereo8'], 6., 16.), tmp_path, progress=False,
                                url_template=m.url_template)
    _, x = read_wav(tmp_path/'YflacStereo8.wav')
    assert row['status'] == 'ok' and 'padded with 2.000 s' in row['message'] and row['samples'] == 8*SR
    assert len(x) == 10*SR and not x[8*SR:].any() and np.abs(x[:8*SR]).max() > 0.3

def run_faults(sources, tmp_path, faults, ytids, **kw):
    with Mirror(sources, faults=faults, stall_s=60) as m:
        t0 = time.time()
        rows = download_clips(segs_of(ytids), tmp_path, progress=False, url_template=m.url_template, **kw)
        return {r['ytid']: r for r in rows}, time.time() - t0, m.requests

def test_404_and_private_are_final(sources, tmp_path):
    rows, _, reqs = run_faults(sources, tmp_path, {'opusStereo1': '404', 'mp3Mono4410': '403'},
                               ['opusStereo1', 'mp3Mono4410'], retries=3, backoff=0.01)
    assert (rows['opusStereo1']['status'], rows['opusStereo1']['attempts']) == ('unavailable', 1)
    assert (rows['mp3Mono4410']['status'], rows['mp3Mono4410']['attempts']) == ('private', 1)
    assert '404' in rows['opusStereo1']['message'] and len(reqs) == 2
    # the lock file stays
    # and the clips' lock
    assert [p.name.split('-')[0] for p in sorted(tmp_path.iterdir())] == ['.clips', '.download_log.csv.lock',
                                                                          'download_log.csv']

def test_dropped_connection_is_retried_then_given_up(sources, tmp_path):
    # ffmpeg reads an mp3 from byte 0 through the segment, so a drop after a quarter of the file cuts the segment.
    # ffmpeg itself sometimes reconnects once after a drop, so two drops are needed to make a try fail for sure.
    once, _, _ = run_faults(sources, tmp_path/'once', {'mp3Mono4410': Fault('drop', times=2)}, ['mp3Mono4410'],
                            retries=3, backoff=0.01)
    always, _, _ = run_faults(sources, tmp_path/'always', {'mp3Mono4410': 'drop'}, ['mp3Mono4410'], retries=2,
                              backoff=0.01)
    assert once['mp3Mono4410']['status'] == 'ok' and once['mp3Mono4410']['attempts'] in (2, 3)
    assert (always['mp3Mono4410']['status'], always['mp3Mono4410']['attempts']) == ('other', 3)
    assert 'Input/output error' in always['mp3Mono4410']['message']
    assert not (tmp_path/'always'/'Ymp3Mono4410.wav').exists()   # never a truncated clip padded to length
    _, x = read_wav(tmp_path/'once'/'Ymp3Mono4410.wav')
    assert best_lag(x, synth(3.25 + np.arange(len(x))/SR))[1] > 0.9

def test_stall_times_out(sources, tmp_path):
    rows, took, _ = run_faults(sources, tmp_path, {'aacStereo44': 'stall'}, ['aacStereo44', 'mp3Mono4410'], timeout=2,
                               retries=0)
    assert rows['aacStereo44']['status'] == 'timeout' and rows['mp3Mono4410']['status'] == 'ok'
    assert took < 15 and not (tmp_path/'YaacStereo44.wav').exists()

def test_429_backs_off_then_succeeds(sources, tmp_path):
    rows, took, reqs = run_faults(sources, tmp_path, {'opusStereo1': Fault('429', times=2), 'mp3Mono4410': '429'},
                                  ['opusStereo1', 'mp3Mono4410'], retries=2, backoff=0.2)
    assert (rows['opusStereo1']['status'], rows['opusStereo1']['attempts']) == ('ok', 3)
    assert (rows['mp3Mono4410']['status'], rows['mp3Mono4410']['attempts']) == ('rate-limited', 3)
    assert took > 0.2*0.5 + 0.4*0.5                     # it waited between tries (jitter is 0.5x to 1.5x)
    assert sum(r['key'] == 'mp3Mono4410' for r in reqs) == 3

def test_500_is_retried(sources, tmp_path):
    rows, _, _ = run_faults(sources, tmp_path, {'opusStereo1': Fault('500', times=1)}, ['opusStereo1'], retries=1,
                            backoff=0.01)
    assert (rows['opusStereo1']['status'], rows['opusStereo1']['attempts']) == ('ok', 2)

MALICIOUS = ['../../etc/x', '$(rm -rf ~)', 'abcdefghijkl', '../Yabcdefgh', 'a b c d e f']

def test_malicious_ids_never_reach_a_path_or_url(sources, tmp_path):
    csv_path = tmp_path/'list.csv'
    csv_path.write_text(format_segments(segs_of(['mp3Mono4410']))
                        + ''.join(f'"{y}", 0.000, 10.000, "{LABEL[0]}"\n' for y in MALICIOUS))
    audios = tmp_path/'deep'/'audios'
    with Mirror(sources) as m, pytest.warns(UserWarning, match='could not be read'):
        tpl = m.url_template
        rows = download(csv_path, audios, url_template=tpl, quiet=True)
        keys = [r['key'] for r in m.requests]
    assert summarize(rows) == {'ok': 1, 'bad-id': len(MALICIOUS)}
    bad = [r for r in rows if r['status'] == 'bad-id']
    assert [r['message'].split(':')[0] for r in bad] == [f'line {n}' for n in range(5, 5 + len(MALICIOUS))]
    assert all(repr(y) in r['message'] for y, r in zip(MALICIOUS, bad))
    assert set(keys) == {'mp3Mono4410'}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob('*') if p.suffix != '.lock') == \
        ['deep', 'deep/audios', 'deep/audios/Ymp3Mono4410.wav', 'deep/audios/download_log.csv', 'list.csv']
    # a list built in code (not read from a file) is checked too
    (row,) = download_clips([Segment('../../etc/x', 0., 10., LABEL)], audios, progress=False, url_template=tpl)
    assert row['status'] == 'bad-id'

def test_killed_run_leaves_no_partial_wav_and_rerun_completes(sources, tmp_path):
    ytids = [f'clip{i:07d}' for i in range(8)]
    src = tmp_path/'src'
    src.mkdir()
    for y in ytids: os.link(sources/'mp3Mono4410.mp3', src/f'{y}.mp3')
    write_segments(tmp_path/'list.csv', [Segment(y, 3.25, 13.25, LABEL) for y in ytids])
    audios = tmp_path/'audios'
    with Mirror(src, delay=0.15) as m:
        # a session of its own, so the kill below takes its ffmpeg children too
        args = ('--csv_path', tmp_path/'list.csv', '--audios_dir', audios, '--url_template', m.url_template, '--quiet')
        p = cli_popen('audioset_download', *args, '--workers', 2, start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < 30 and len(list(audios.glob('Y*.wav'))) < 2: time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        done = list(audios.glob('Y*.wav'))
        assert 2 <= len(done) < len(ytids), 'the run was not killed mid-way'
        assert all(is_finished(w, 10*SR) for w in done)   # every Y*.wav there is whole
        r = cli('audioset_download', *args, '--workers', 4, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f'{len(ytids)} clips: {len(ytids)} ok' in r.stdout
    assert sorted(w.name for w in audios.glob('Y*.wav')) == [f'Y{y}.wav' for y in ytids]
    assert all(is_finished(w, 10*SR) for w in audios.glob('Y*.wav'))
    # temporary files of the killed run are gone
    assert sorted(p.name.split('-')[0] for p in audios.glob('.*')) == ['.clips', '.download_log.csv.lock']
    latest = read_log(audios/'download_log.csv')
    assert len(latest) == len(ytids) and {r['status'] for r in latest} == {'ok'}
    assert sum(r['message'] == 'already downloaded' for r in latest) >= len(done)

@pytest.mark.parametrize('args,says', [
    (['--csv_path', 'nope.csv', '--audios_dir', 'a'], 'does not exist'),
    (['--audios_dir', 'a'], 'the following arguments are required: --csv_path'),
    (['--csv_path', 'eval', '--audios_dir', 'a', '--part', '4/4'], '--part'),
    (['--csv_path', 'eval', '--audios_dir', 'a', '--url_template', 'ftp://x/{ytid}'], '--url_template'),
    (['--csv_path', 'eval', '--audios_dir', 'a', '--url_template', 'https://x/watch'], '--url_template'),
    (['--csv_path', 'eval', '--audios_dir', 'a', '--workers', '0'], '--num_workers'),  # the older flag name works
])
def test_cli_bad_input_is_one_sentence(tmp_path, args, says):
    r = cli('audioset_download', *args, cwd=tmp_path, timeout=60)
    assert r.returncode != 0
    one_sentence(r.stderr, says)
    assert not (tmp_path/'a').exists()

def test_cli_part_and_log_name(sources, tmp_path):
    write_segments(tmp_path/'list.csv', segs_of(SOURCES))
    with Mirror(sources) as m:
        r = cli('audioset_download', '--csv_path', tmp_path/'list.csv', '--audios_dir', tmp_path/'a',
                '--url_template', m.url_template, '--part', '1/3', '--quiet', timeout=120)
    assert r.returncode == 0, r.stderr
    rows = read_log(tmp_path/'a'/'download_log_part1of3.csv')
    assert [r['ytid'] for r in sorted(rows, key=lambda r: list(SOURCES).index(r['ytid']))] == list(SOURCES)[2:4]

def test_fetch_unbalanced_rejects_a_short_list_and_reports_http_errors(tmp_path):
    bucket = tmp_path/'bucket'
    bucket.mkdir()
    text = format_segments(segs_of(SOURCES))
    (bucket/'cut.csv').write_text(text.rsplit('\n', 3)[0] + '\n')        # header says 6 rows, 4 are there
    with Mirror(bucket) as m:
        with pytest.raises(ValueError, match='not a whole segment list'):
            fetch_unbalanced(tmp_path/'c1', url=m.file_url('cut.csv'))
        with pytest.raises(ConnectionError, match='HTTP 404'):
            fetch_unbalanced(tmp_path/'c2', url=m.file_url('gone.csv'))
    assert list((tmp_path/'c1').iterdir()) == []

def test_fetch_unbalanced_resumes_a_part_file(tmp_path):
    bucket = tmp_path/'bucket'
    bucket.mkdir()
    text = format_segments(segs_of(SOURCES))
    (bucket/'u.csv').write_text(text)
    cache = tmp_path/'cache'
    cache.mkdir()
    (cache/'unbalanced_train_segments.csv.part').write_text(text[:100])   # what a killed earlier run left
    with Mirror(bucket) as m:
        p = fetch_unbalanced(cache, url=m.file_url('u.csv'))
        assert [r['range'] for r in m.requests] == ['bytes=100-']
    assert p.read_text() == text and not (cache/'unbalanced_train_segments.csv.part').exists()

def test_short_section_of_a_long_video_is_a_cut_transfer(sources, tmp_path, monkeypatch):
    "When yt-dlp knows the video outlasts the segment, a short section is retried, never padded into a clip."
    import audioset_nb.download as dl
    real = dl.media_url
    # the file has 14 s, the page says 60
    monkeypatch.setattr(dl, 'media_url', lambda *a, **k: {**real(*a, **k), 'duration': 60})
    with Mirror(sources) as m:
        rows = download_clips(segs_of(['mp3Mono4410'], 6., 16.), tmp_path, progress=False, url_template=m.url_template,
                              retries=1, backoff=0.01)
    assert (rows[0]['status'], rows[0]['attempts']) == ('other', 2) and 'cut short' in rows[0]['message']
    assert not (tmp_path/'Ymp3Mono4410.wav').exists()

def test_skip_unavailable_leaves_known_dead_clips_alone(sources, tmp_path):
    segs = segs_of(['opusStereo1', 'mp3Mono4410'])
    with Mirror(sources, faults={'opusStereo1': '404', 'mp3Mono4410': Fault('403', times=1)}) as m:
        first = download_clips(segs, tmp_path, progress=False, url_template=m.url_template)
        n = len(m.requests)
        again = {r['ytid']: r for r in download_clips(segs, tmp_path, progress=False, url_template=m.url_template,
                                                      skip_unavailable=True)}
        assert len(m.requests) == n                      # neither was asked for again
        retried = {r['ytid']: r for r in download_clips(segs, tmp_path, progress=False, url_template=m.url_template)}
    assert summarize(first) == {'unavailable': 1, 'private': 1}
    assert again['opusStereo1']['status'] == 'unavailable' and again['opusStereo1']['message'].startswith('skipped')
    assert again['mp3Mono4410']['status'] == 'private'
    # without the flag: tried again
    assert (retried['opusStereo1']['status'], retried['mp3Mono4410']['status']) == ('unavailable', 'ok')

def test_mini_audioset_downloads_to_its_reference(tmp_path):
    "The mini AudioSet's sources (every container it makes) come back as its exact reference segments."
    mini = pytest.importorskip('audioset_nb.mini')
    ms = mini.make_mini(tmp_path/'mini', seed=3, n_train=1, n_eval=len(mini.SOURCE_FORMATS))
    with Mirror(tmp_path/'mini'/'sources') as m:
        rows = download(tmp_path/'mini'/'metadata'/'eval_segments.csv', tmp_path/'audios', url_template=m.url_template,
                        num_workers=4, quiet=True)
    assert summarize(rows) == {'ok': len(mini.SOURCE_FORMATS)}
    seen = set()
    for s in ms.segments['eval']:
        fmt, x = read_wav(tmp_path/'audios'/f'Y{s.ytid}.wav')
        assert fmt == (1, 2, SR) and len(x) == round((s.end - s.start)*SR)
        lag, corr = best_lag(x, mini.reference_segment(ms, s.ytid).astype(float))
        assert corr > 0.8 and abs(lag) < 0.03, (ms.clips[s.ytid].source, lag, corr)
        seen.add(ms.clips[s.ytid].source.ext)
    assert len(seen) >= len(mini.SOURCE_FORMATS) - 1
