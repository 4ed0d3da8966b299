"The project's packaging: settings.ini drives setup.py, console scripts resolve, metadata ships."
import configparser, importlib, shlex, subprocess, sys, zipfile
from pathlib import Path
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CFG = configparser.ConfigParser(delimiters=['='])
CFG.read(ROOT/'settings.ini')
CFG = CFG['DEFAULT']

def test_console_scripts_resolve():
    for spec in CFG['console_scripts'].split():
        name, target = spec.split('=')
        mod, fn = target.split(':')
        assert callable(getattr(importlib.import_module(mod), fn)), f'{name} -> {target} is not callable'

def test_setup_has_no_pkg_resources():
    assert 'pkg_resources' not in (ROOT/'setup.py').read_text()

def test_nbdev_flags():
    assert CFG['tst_flags'].split() == ['slow', 'gpu']

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    pip = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q']
    subprocess.run([*pip, '-w', str(out), str(ROOT)], check=True, cwd=ROOT)
    return next(out.glob('*.whl'))

def test_wheel_ships_metadata_and_modules(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ['class_labels_indices.csv', 'eval_segments.csv', 'balanced_train_segments.csv', 'ontology.json',
              'LICENSE.md']:
        assert f'audioset_nb/data/{f}' in names
    mods = {p.stem for p in (ROOT/'audioset_nb').glob('*.py')}
    assert {f'audioset_nb/{m}.py' for m in mods} <= names

def test_wheel_requirements_match_settings(wheel):
    z = zipfile.ZipFile(wheel)
    meta = z.read(next(n for n in z.namelist() if n.endswith('METADATA'))).decode()
    reqs = [l.split(':',
                    1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:') and 'extra ==' not in l]
    norm = lambda rs: sorted(str(Requirement(r)) for r in rs)
    assert norm(reqs) == norm(shlex.split(CFG['requirements']))

# ---- what each command installs: the runtime requirements for ./runme.sh, named extras, dev for ./test.sh ----

EXTRA_MODULES = {'pyarrow', 'fsspec', 'aiohttp', 'onnx', 'onnxruntime', 'ipywidgets', 'IPython', 'nbdev', 'execnb',
                 'fastcore', 'pytest', 'jupyterlab', 'voila', 'playwright', 'hearvalidator'}
name = lambda r: Requirement(r).name.lower().replace('_', '-')

def test_runtime_requirements_hold_no_extra_and_no_test_tool():
    runtime = {name(r) for r in shlex.split(CFG['requirements'])}
    extras = {k: {name(r) for r in shlex.split(v)} for k, v in CFG.items() if k.endswith('_requirements')}
    assert set(extras) == {'import_requirements', 'onnx_requirements', 'demo_requirements', 'dev_requirements'}
    assert not runtime & set().union(*extras.values()), runtime & set().union(*extras.values())
    assert {'pyarrow', 'fsspec', 'aiohttp'} == extras['import_requirements']
    assert {'torch', 'torchlibrosa', 'h5py', 'soundfile', 'soxr', 'yt-dlp', 'scikit-learn', 'matplotlib'} <= runtime

def test_wheel_dev_extra_holds_every_extra(wheel):
    z = zipfile.ZipFile(wheel)
    meta = z.read(next(n for n in z.namelist() if n.endswith('METADATA'))).decode()
    by_extra = {}
    for l in meta.splitlines():
        if l.startswith('Requires-Dist:') and 'extra ==' in l:
            r = Requirement(l.split(':', 1)[1].strip())
            extra = str(r.marker).split('==')[1].strip(' "\'')
            by_extra.setdefault(extra, set()).add(r.name)
    assert set(by_extra) == {'import', 'onnx', 'demo', 'dev'}
    assert by_extra['import'] | by_extra['onnx'] | by_extra['demo'] < by_extra['dev']
    assert {'nbdev', 'pytest', 'jupyterlab', 'playwright', 'aiohttp', 'onnxruntime'} <= by_extra['dev']

BLOCK = f"import sys; sys.modules.update(dict.fromkeys({sorted(EXTRA_MODULES)!r}))\n"

def blocked(code:str, *args):
    "Run `code` in a Python where no extra and no test tool can be imported."
    return subprocess.run([sys.executable, '-c', BLOCK + code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)

def test_every_module_imports_without_the_extras():
    mods = sorted(p.stem for p in (ROOT/'audioset_nb').glob('*.py') if not p.stem.startswith('_'))
    r = blocked(f"import importlib\nfor m in {mods!r}: importlib.import_module('audioset_nb.' + m)\nprint('ok')")
    assert r.returncode == 0 and r.stdout == 'ok\n', r.stderr[-3000:]  # an extra imported at the top fails here

def one_sentence(r, prog:str, extra:str, module:str):
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    assert r.stderr == (f"{prog}: {module} is not installed; it comes with audioset_nb's '{extra}' extra: "
                        f"run pip install -e '.[{extra}]' in the audioset_nb clone.\n")

def test_a_missing_extra_is_one_sentence_naming_it(tmp_path):
    (tmp_path/'a.parquet').write_bytes(b'PAR1 not really')
    imp = 'from audioset_nb.importer import import_cli; import_cli()'
    one_sentence(blocked(imp, str(tmp_path/'a.parquet'), '--waveforms_hdf5_path', str(tmp_path/'w.h5')),
                 'audioset_import', 'import', 'pyarrow')
    one_sentence(blocked(imp, 'https://127.0.0.1:9/a.parquet', '--waveforms_hdf5_path', str(tmp_path/'w.h5')),
                 'audioset_import', 'import', 'aiohttp')
    (tmp_path/'m.onnx').write_bytes(b'not a model')
    one_sentence(blocked('from audioset_nb.stream import tag_cli; tag_cli()', '--onnx', str(tmp_path/'m.onnx'),
                         '--audio_path', str(tmp_path/'a.parquet')), 'audioset_tag', 'onnx', 'onnxruntime')
    r = blocked('from audioset_nb.inference import demo\ntry: demo()\nexcept ImportError as e: sys.exit(str(e))')
    assert r.stderr == "ipywidgets is not installed; it comes with audioset_nb's 'demo' extra: run pip install -e " \
                       "'.[demo]' in the audioset_nb clone.\n"

def test_the_import_extra_reads_parquet_over_http(tmp_path):
    import functools, http.server, threading
    import pyarrow as pa, pyarrow.parquet as pq
    from audioset_nb.importer import find_pieces
    pq.write_table(pa.table({'video_id': ['a', 'b', 'c'], 'audio': [b'x', b'y', b'z']}), tmp_path/'p.parquet',
                   row_group_size=2)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    with http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = f'http://127.0.0.1:{srv.server_port}/p.parquet'
        try: pieces = find_pieces([url])
        finally: srv.shutdown()
    assert [(p.kind, p.path, p.group, p.rows) for p in pieces] == [('parquet', url, 0, 2), ('parquet', url, 1, 1)]
