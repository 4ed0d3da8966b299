# Sourced by runme.sh, tools/full.sh and test.sh: make (once) and activate the project's own virtual environment in
# .venv, with the package installed in editable mode and the extras the command needs:
#   source tools/env.sh          the main job: the runtime requirements only (settings.ini `requirements`)
#   source tools/env.sh import   and an extra (settings.ini `import_requirements`, ...); several: import,onnx
#   source tools/env.sh dev      ./test.sh: the test tools and every extra
# Re-running is cheap: pip runs only when settings.ini or setup.py changed or an extra is missing. A venv keeps what
# it has: after ./test.sh, ./runme.sh finds dev (which holds everything) and installs nothing.
set -euo pipefail
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "audioset_nb needs Python 3.10 or newer: set PYTHON=/path/to/python3.x and run again." >&2; exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.audioset_nb-installed  # "<sha1 of settings.ini and setup.py> <extras installed, comma-separated>"
want=$(cat settings.ini setup.py | sha1sum | cut -d' ' -f1)
read -r had had_extras 2>/dev/null < "$stamp" || true
extras=$(echo "${had_extras:-},${1:-}" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)
case ",$extras," in *,dev,*) extras=dev ;; esac  # dev holds every extra
if [ "${had:-}" != "$want" ] || [ "$extras" != "${had_extras:-}" ]; then
  echo "Installing audioset_nb${extras:+[$extras]} and its dependencies into .venv (log: .venv/install.log)..."
  {
    python -m pip install -q --upgrade pip &&
    # The verified torch release; its CPU wheel is used where no CUDA is wanted.
    { python -c 'import torch' 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"; } &&
    python -m pip install -q -e ".${extras:+[$extras]}" &&
    # hearvalidator (tests/test_hear.py) declares tensorflow and torch as dependencies; it needs neither installed
    # by pip here (torch is ours, tensorflow only tells TF models apart), so it goes in without them.
    { [ "$extras" != dev ] || python -m pip install -q --no-deps 'hearvalidator==2021.0.2'; }
  } > .venv/install.log 2>&1 || { tail -20 .venv/install.log >&2; echo "Installing failed; the whole log is in .venv/install.log." >&2; exit 1; }
  echo "$want $extras" > "$stamp"
fi
