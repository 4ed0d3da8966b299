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
