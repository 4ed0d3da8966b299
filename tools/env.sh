# Sourced by test.sh and runme.sh: make (once) and activate the project's own virtual
# environment in .venv, with the package installed in editable mode and its dev extras.
# Re-running is cheap: the install is redone only when settings.ini or setup.py change.
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "audioset_nb needs Python 3.10 or newer: set PYTHON=/path/to/python3.x and run again." >&2; exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.audioset_nb-installed
want=$(cat settings.ini setup.py | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing audioset_nb and its dependencies into .venv (log: .venv/install.log)..."
  {
    python -m pip install -q --upgrade pip &&
    # The verified torch release; its CPU wheel is used where no CUDA is wanted.
    { python -c 'import torch' 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"; } &&
    python -m pip install -q -e '.[dev]'
  } > .venv/install.log 2>&1 || { tail -20 .venv/install.log >&2; echo "Installing failed; the whole log is in .venv/install.log." >&2; exit 1; }
  echo "$want" > "$stamp"
fi
# hearvalidator (tests/test_hear.py) declares tensorflow and torch as dependencies; it needs neither installed
# by pip here (torch is ours, tensorflow only tells TF models apart), so it goes in without them.
python -c 'import hearvalidator' 2>/dev/null || python -m pip install -q --no-deps 'hearvalidator==2021.0.2'
