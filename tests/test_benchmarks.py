"The benchmarks run at tiny sizes here (the GPU one on the CPU), so that they cannot rot; no timing is asserted."
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_train_throughput_runs_on_cpu(tmp_path):
    out = tmp_path/'tt.json'
    r = subprocess.run([sys.executable, 'benchmarks/train_throughput.py', '--models', 'Cnn6', '--batches', '2',
                        '--seconds', '1.0', '--steps', '1', '--repeat', '1', '--workers', '0',
                        '--variants', 'reference', 'ours', 'sync_every_step', '--out', str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['torch'] and res['date'] and res['device']
    runs = {x['variant']: x for x in res['runs']}
    assert set(runs) == {'reference', 'ours', 'sync_every_step'}
    assert runs['reference']['vs_reference'] == 1.0
    for x in runs.values():
        assert x['examples_per_s'] > 0 and 0 <= x['data_wait'] <= 1 and x['model'] == 'Cnn6' and x['batch'] == 2
    assert runs['ours']['switches'] != runs['reference']['switches']

def test_models_inference_runs_and_checks_agreement(tmp_path):
    out = tmp_path/'mi.json'
    args = ['--models', 'Cnn6', '--batches', '1', '--reps', '1', '--no-compile', '--out', str(out)]
    cmd = [sys.executable, 'benchmarks/models_inference.py', *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['versions']['torch'] and res['date'] and res['device']
    (row,) = res['results']
    assert row['model'] == 'Cnn6' and row['batch'] == 1 and row['reference_speedup'] == 1.0
    assert 0 < row['eager_max_diff'] < 1e-4  # the fast path was measured, and it is not the reference itself
    assert 0 < row['eager_prepared_weight_bytes'] < row['model_bytes']

def test_import_benchmark_runs(tmp_path):
    out = tmp_path/'imp.json'
    r = subprocess.run([sys.executable, 'benchmarks/import.py', '--ns', '4', '--out', str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['date'] and res['versions']['pyarrow'] and [x['variant'] for x in res['runs']] == ['baseline', 'ours-w1',
                                                                                                  'ours-w2']
    assert all(x['rows_identical_to_baseline'] and x['peak_tree_rss_mb'] > 0 for x in res['runs'])

def test_stores_benchmark_runs(tmp_path):
    out = tmp_path/'stores.json'
    args = ['--n', '3', '--iterations', '0', '--out', str(out)]
    cmd = [sys.executable, 'benchmarks/stores.py', *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res['size_and_decode']) == {'int16', 'flac',
                                           'mp3'} and res['size_and_decode']['int16']['bytes_per_clip'] == 640000
    assert res['size_and_decode']['mp3']['bytes_per_clip'] < res['size_and_decode']['flac']['bytes_per_clip'] < 640000
