"README.md is generated from nbs/index.ipynb and must stay in step with it."
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_readme_matches_index():
    r = subprocess.run([sys.executable, 'tools/readme.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_names_both_commands_first():
    text = (ROOT/'README.md').read_text()
    first = text.index('## ', text.index('# audioset_nb') + 1)
    assert text[first:].startswith('## Two commands')
    assert './runme.sh' in text and './test.sh' in text
    assert 'exec ./test.sh' in (ROOT/'.ci'/'run').read_text()
