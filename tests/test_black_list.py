"Black lists (issue 27, item 5): clips named by a CSV are left out of an index and out of training, and counted."
from pathlib import Path
import h5py, pytest
from conftest import FLAGS, THREADS, cli, make_workspace, one_sentence

@pytest.fixture(scope='module')
def ws(tmp_path_factory): return make_workspace(tmp_path_factory.mktemp('ws'), n_train=32, n_eval=8)

def names_of(path):
    with h5py.File(path, 'r') as f: return [n.decode() for n in f['audio_name'][:]]

def black_csv(path:Path, names:list, absent:int=1)->Path:
    "An official-style black list: `#` header lines, then `ytid, start, end, labels` rows, plus `absent` unknown ids."
    rows = [f'{n[1:12]}, 0.000, 10.000, "/m/09x0r"' for n in names] + [f'zz{k:09d}, 0, 10, "/m/09x0r"' for k in
                                                                        range(absent)]
    path.write_text('# Segments csv\n# num_ytids=3\n# YTID, start_seconds, end_seconds, positive_labels\n' +
                    '\n'.join(rows) + '\n')
    return path

def test_pack_index_leaves_the_black_list_out(ws, tmp_path):
    wav = ws/'hdf5s'/'waveforms'/'balanced_train.h5'
    names = names_of(wav)
    r = cli('audioset_pack', '--waveforms_hdf5_path', wav, '--indexes_hdf5_path', tmp_path/'ix.h5',
            '--black_list', black_csv(tmp_path/'black.csv', names[3:8], absent=2))
    assert r.returncode == 0, r.stderr
    assert 'left out 5 clips on the black list (2 ids not in this set)' in r.stdout
    assert names_of(tmp_path/'ix.h5') == names[:3] + names[8:]
    with h5py.File(tmp_path/'ix.h5', 'r') as f: assert f['index_in_hdf5'][:].tolist() == [0, 1, 2, *range(8, 32)]

def test_pack_bad_black_list_is_one_sentence_and_writes_nothing(ws, tmp_path):
    (tmp_path/'bad.csv').write_text('abcdefghijk\nnot an id, 0, 10\n')
    r = cli('audioset_pack', '--waveforms_hdf5_path', ws/'hdf5s'/'waveforms'/'balanced_train.h5',
            '--indexes_hdf5_path', tmp_path/'ix.h5', '--black_list', tmp_path/'bad.csv')
    assert r.returncode != 0
    one_sentence(r.stderr, 'bad.csv, line 2', 'is not a YouTube id')
    assert not (tmp_path/'ix.h5').exists()

def test_train_samples_no_black_listed_clip(ws, tmp_path):
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    names = names_of(ws/'hdf5s'/'indexes'/'balanced_train.h5')
    rec = tmp_path/'names'
    # 6 steps of 4 x 2 (mixup) clips = 48 draws: two epochs of the 22 clips left
    r = cli('audioset_train', f'--workspace={tmp_path}', *FLAGS, '--batch_size=4', '--balanced=none', '--early_stop=6',
            '--eval_every=1000', '--max_eval_clips=8', '--num_workers=0', f'--record_names={rec}',
            '--black_list', black_csv(tmp_path/'black.csv', names[::3]), env=THREADS, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'left out 11 clips on the black list (1 ids not in this set)' in r.stdout
    seen = Path(f'{rec}.0').read_text().split()
    assert len(seen) == 48 and set(seen) == set(names) - set(names[::3])

def test_train_black_list_of_every_clip_is_refused(ws, tmp_path):
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    names = names_of(ws/'hdf5s'/'indexes'/'balanced_train.h5')
    r = cli('audioset_train', f'--workspace={tmp_path}', *FLAGS, '--early_stop=1', '--black_list',
            black_csv(tmp_path/'black.csv', names), env=THREADS, timeout=600)
    assert r.returncode != 0
    assert 'leaves out every clip' in r.stderr and 'Traceback' not in r.stderr
