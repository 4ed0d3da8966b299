"A real browser: Voila serves the demo notebook, headless Chromium picks a clip, presses Tag and reads the labels."
import os, shutil, socket, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest, soundfile as sf, torch

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path('/usr/bin/chromium')
FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run']
ARTIFACTS = ROOT/'artifacts'/'browser'

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason='Debian chromium is not installed (/usr/bin/chromium); apt-get install chromium'),
    pytest.mark.timeout(600)]
sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (pip install playwright)')
if not (shutil.which('voila') or (Path(sys.executable).parent/'voila').exists()): pytest.skip('voila is not installed',
                                                                                              allow_module_level=True)

from audioset_nb.inference import example_clips, load_tagger, tag
from audioset_nb.models import build_model, save_checkpoint

LOADED = ("sel => { const e = document.querySelector(sel); "
          "const i = e && (e.tagName == 'IMG' ? e : e.querySelector('img')); "
          "return i && i.complete && i.naturalWidth > 100; }")

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def wait_for_port(port, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None: raise RuntimeError(f'{Path(proc.args[0]).name} exited with {proc.returncode}; '
                                                       f'see its log in artifacts/browser')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0: return
        time.sleep(0.5)
    raise TimeoutError(f'voila did not listen on port {port} within {timeout} s')

def exe(name): return shutil.which(name) or str(Path(sys.executable).parent/name)

@pytest.fixture(scope='module')
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp('browser')
    (d/'ckpts').mkdir()
    (d/'tmp').mkdir()
    torch.manual_seed(0)
    save_checkpoint(d/'ckpts'/'cnn6.pth', build_model('Cnn6'), model_type='Cnn6')
    save_checkpoint(d/'sed.pth', build_model('Cnn6_DecisionLevelMax'), model_type='Cnn6_DecisionLevelMax')
    return d

def serve(d, name, cmd):
    "Start `cmd` (a Jupyter server on loopback) with the test's checkpoints and temp folder; yield its URL."
    env = {**os.environ, 'AUDIOSET_NB_CHECKPOINTS': str(d/'ckpts'), 'TMPDIR': str(d/'tmp'),
           'JUPYTER_CONFIG_DIR': str(d/'jcfg'),
           'JUPYTER_DATA_DIR': str(d/'jdata'), 'JUPYTER_RUNTIME_DIR': str(d/'jrun'),
           'JUPYTERLAB_WORKSPACES_DIR': str(d/'jws')}
    port = free_port()
    log = open(d/f'{name}.log', 'w')
    proc = subprocess.Popen([*cmd, '--no-browser', f'--port={port}', '--ServerApp.ip=127.0.0.1'], cwd=d, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield f'http://127.0.0.1:{port}/'
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(d/f'{name}.log', ARTIFACTS/f'{name}.log')

@pytest.fixture(scope='module')
def voila_url(d):
    yield from serve(d, 'voila', [exe('voila'), str(ROOT/'nbs'/'61_demo.ipynb'), '--Voila.ip=127.0.0.1'])

@pytest.fixture(scope='module')
def lab_url(d):
    shutil.copy(ROOT/'nbs'/'61_demo.ipynb', d/'61_demo.ipynb')
    yield from serve(d, 'lab', [exe('jupyter'), 'lab', '--ServerApp.token=', '--ServerApp.password=',
                                f'--ServerApp.root_dir={d}', '--ServerApp.disable_check_xsrf=True', '--allow-root'])

def browser(pw):
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)

def test_voila_pick_a_clip_press_tag_see_the_top_label(d, voila_url):
    clips = example_clips(d/'tmp'/'audioset_nb_examples')
    want = tag(load_tagger(d/'ckpts'/'cnn6.pth'), clips['chirp.wav']).top(10)
    up, t = d/'upload.wav', np.arange(3*22050)/22050
    sf.write(up, np.stack([np.sin(2*np.pi*300*t), np.sign(np.sin(2*np.pi*5*t))]).T*0.4, 22050)
    want_up = tag(load_tagger(d/'ckpts'/'cnn6.pth'), up).top(10)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        b = browser(pw)
        try:
            page = b.new_page(viewport={'width': 1200, 'height': 1400})
            page.goto(voila_url, timeout=120_000)
            button = page.get_by_role('button', name='Tag')
            button.wait_for(timeout=180_000)
            page.locator('.widget-dropdown select').first.select_option('chirp.wav')
            button.click()
            top = page.locator('ol.audioset-top li .label')
            top.first.wait_for(timeout=180_000)
            page.wait_for_function(LOADED, arg='.audioset-chart', timeout=60_000)
            page.screenshot(path=str(ARTIFACTS/'demo.png'), full_page=True)
            shown = top.all_inner_texts()
            assert 'chirp.wav' in page.inner_text('body')
            assert shown == [l for l, _ in want], (shown, want)
            # an uploaded file (22.05 kHz stereo: the kernel resamples it) is added to the clips and tagged
            with page.expect_file_chooser() as chooser: page.locator('.widget-upload').first.click()
            chooser.value.set_files(str(up))
            page.wait_for_function("() => [...document.querySelectorAll('.widget-dropdown select option')].some(o => "
                                   "o.textContent == 'upload.wav')",
                                   timeout=60_000)
            button.click()
            page.wait_for_function("() => document.body.innerText.includes('upload.wav: 3.0 s')", timeout=180_000)
            assert top.all_inner_texts() == [l for l, _ in want_up]
            # a decision-level checkpoint, typed in: the SED picture appears as well
            page.get_by_placeholder('path/to/checkpoint.pth').fill(str(d/'sed.pth'))
            button.click()
            page.wait_for_function(LOADED, arg='.audioset-sed', timeout=180_000)
            page.screenshot(path=str(ARTIFACTS/'demo-sed.png'), full_page=True)
            assert 'model Cnn6_DecisionLevelMax' in page.inner_text('body')
            want_sed = tag(load_tagger(d/'sed.pth'), clips['chirp.wav']).top(1)[0][0]
            assert top.first.inner_text() == want_sed
        finally: b.close()
    assert (ARTIFACTS/'demo.png').stat().st_size > 10_000

def test_jupyterlab_run_the_demo_notebook_and_tag(d, lab_url):
    clips = example_clips(d/'tmp'/'audioset_nb_examples')
    want = tag(load_tagger(d/'ckpts'/'cnn6.pth'), clips['noise_bursts.wav']).top(1)[0][0]
    with sync_api.sync_playwright() as pw:
        b = browser(pw)
        try:
            page = b.new_page(viewport={'width': 1300, 'height': 1400})
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.goto(lab_url + 'lab/tree/61_demo.ipynb', timeout=120_000)
            page.locator('.jp-Notebook').first.wait_for(timeout=120_000)
            select = page.locator('.jp-Dialog').get_by_role('button', name='Select')  # the notebook names no kernel
            select.wait_for(timeout=60_000)
            select.click()
            page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(timeout=180_000)
            page.locator('.jp-Notebook').first.click()
            page.keyboard.press('Control+Shift+C')
            page.locator('.lm-CommandPalette-input').fill('Run All Cells')
            page.keyboard.press('Enter')
            button = page.locator('.jp-OutputArea').get_by_role('button', name='Tag')
            button.wait_for(timeout=180_000)
            page.locator('.jp-OutputArea .widget-dropdown select').first.select_option('noise_bursts.wav')
            button.click()
            top = page.locator('.jp-OutputArea ol.audioset-top li .label')
            top.first.wait_for(timeout=180_000)
            page.wait_for_function(LOADED, arg='.jp-OutputArea .audioset-chart', timeout=60_000)
            page.screenshot(path=str(ARTIFACTS/'demo-jupyterlab.png'), full_page=True)
            assert top.first.inner_text() == want
        except Exception:
            page.screenshot(path=str(ARTIFACTS/'demo-jupyterlab-failed.png'), full_page=True)
            raise
        finally: b.close()
