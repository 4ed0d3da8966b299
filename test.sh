#!/usr/bin/env bash
# Every test, from a fresh clone: ./test.sh
# Makes .venv, installs the package with its dev extra (the test tools and every other extra), then checks
# that the notebooks and the package agree (nbdev_export), runs the notebooks (nbdev_test), checks that they
# are clean (nbdev_clean), and runs the pytest suite in tests/.
set -euo pipefail
cd "$(dirname "$0")"
source tools/env.sh dev  # the test tools and every extra

# The browser tests drive Debian's Chromium; install it where we may (they skip, saying why, where it is missing).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing chromium for the browser tests"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1 ||
    echo "Could not install chromium; the browser tests will be skipped." >&2
fi

# Decoding is checked with two ffmpeg builds: Debian's (5.1 on Debian 12), installed here where we may and used from
# PATH, and the one imageio-ffmpeg bundles ($AUDIOSET_NB_FFMPEG=bundled); they differ in how they seek and trim.
if ! command -v ffmpeg >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing Debian's ffmpeg for the decoding tests"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; } >/dev/null 2>&1 ||
    echo "Could not install ffmpeg; the decoding tests run with imageio-ffmpeg's only." >&2
fi

# Notebooks and tests write their scratch folders under one temporary folder, removed when this script ends: a run
# leaves nothing behind in /tmp (the examples of 60_inference alone write ~700 MB).
TMPDIR=$(mktemp -d -t audioset_nb-test.XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

must_be_clean() {
  local dirty; dirty=$(git diff --name-only -- nbs audioset_nb settings.ini; git ls-files --others --exclude-standard -- nbs audioset_nb)
  if [ -n "$dirty" ]; then
    echo "$1 changed tracked files; run it, review the diff and commit:" >&2; echo "$dirty" >&2; exit 1
  fi
}
echo "== ruff";         ruff check .
echo "== nbdev_export"; nbdev_export; must_be_clean nbdev_export
echo "== nbdev_test";   nbdev_test ${NBDEV_TEST_FLAGS:+--flags "$NBDEV_TEST_FLAGS"}
echo "== nbdev_clean";  nbdev_clean; must_be_clean nbdev_clean
echo "== pytest";       python -m pytest tests/ -q -p no:cacheprovider --durations=30 "$@"
if command -v ffmpeg >/dev/null; then
  echo "== decoding again with imageio-ffmpeg's ffmpeg (the above used $(command -v ffmpeg))"
  for nb in nbs/01_audio.ipynb nbs/90_mini.ipynb; do AUDIOSET_NB_FFMPEG=bundled nbdev_test --path "$nb"; done
  AUDIOSET_NB_FFMPEG=bundled python -m pytest tests/test_mini.py tests/test_download.py -q -p no:cacheprovider --durations=30
fi
