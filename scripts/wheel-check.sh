#!/usr/bin/env bash
# The installable-package check of issue 25 item 3 (`make wheel-check`, called by .ci/run): build the
# sdist and the wheel (`python -m build`); install the wheel into a fresh virtual environment (torch
# first: only torch==2.13.0 takes the CPU build on this disk; then the wheel, with requirements.lock's
# versions unless WHEEL_CHECK_UNLOCKED=1, which leaves pyproject's ranges alone); then, from an empty
# directory with no checkout on the path, list the shipped configs, train one by name and run a
# one-seed reproduce, whose results.json must record the versions it used.
# Everything lives in one temporary directory, removed at the end (WHEEL_CHECK_KEEP=1 keeps it).
# About 2-3 minutes on 2 cores, most of it installing the dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUILD_PY=${BUILD_PY:-.venv/bin/python}   # a Python with `build` (the dev extras)
PYTHON=${PYTHON:-python3}                # the interpreter of the fresh environment
TMP=$(mktemp -d "${TMPDIR:-/tmp}/localstdp-wheel-check.XXXXXX")
if [ "${WHEEL_CHECK_KEEP:-0}" = 1 ]; then echo "wheel-check: keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi
say() { echo "wheel-check: $*"; }

say "python -m build -> $TMP/dist"
"$BUILD_PY" -m build --outdir "$TMP/dist" . >"$TMP/build.log" 2>&1 || { tail -30 "$TMP/build.log"; exit 1; }
WHEEL=$(ls "$TMP"/dist/localstdp-*.whl)
for f in $(cd src/localstdp/configs && ls ./*.toml); do  # every shipped config is inside the wheel
    "$BUILD_PY" -c 'import sys, zipfile; sys.exit(0 if "localstdp/configs/" + sys.argv[2] in zipfile.ZipFile(sys.argv[1]).namelist() else 1)' \
        "$WHEEL" "${f#./}" || { say "FAIL: ${f#./} is not in $WHEEL"; exit 1; }
done
say "$(basename "$WHEEL") holds the $(ls src/localstdp/configs/*.toml | wc -l) shipped configs"

say "fresh venv $TMP/venv: torch==2.13.0, then the wheel"
"$PYTHON" -m venv "$TMP/venv"
pip_install() {  # pip's output to a log, shown on failure
    "$TMP/venv/bin/pip" install --disable-pip-version-check "$@" >>"$TMP/pip.log" 2>&1 || { tail -30 "$TMP/pip.log"; exit 1; }
}
pip_install torch==2.13.0
if [ "${WHEEL_CHECK_UNLOCKED:-0}" = 1 ]; then  # what a library user gets: pyproject's ranges alone
    pip_install "$WHEEL"
else                                          # the locked versions, as `make install` (CI stays reproducible)
    pip_install -c requirements.lock "$WHEEL"
fi
say "installed: $("$TMP/venv/bin/python" -c 'from importlib.metadata import version as v
print(", ".join(f"{n} {v(n)}" for n in ("localstdp", "torch", "adversarial-robustness-toolbox", "numpy", "scikit-learn")))')"
BIN=$TMP/venv/bin

mkdir "$TMP/empty"
cd "$TMP/empty"  # no checkout here, nor on the path
unset PYTHONPATH
where=$("$BIN/python" -c 'import localstdp; print(localstdp.__file__)')
case "$where" in
    "$TMP/venv/"*) say "localstdp imported from $where" ;;
    *) say "FAIL: localstdp imported from $where, not from the fresh venv"; exit 1 ;;
esac
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
"$BIN/localstdp" configs
"$BIN/localstdp" train --config iris --out "$TMP/train" --no-progress
"$BIN/localstdp" reproduce --tasks iris-1v2 --seeds 1 --frontier-seeds 0 --out "$TMP/reproduce" --no-progress
"$BIN/python" - "$TMP/reproduce/results.json" <<'PY' || exit 1
import json, sys
versions = json.load(open(sys.argv[1]))["settings"].get("versions") or {}
print("wheel-check: results.json settings.versions:", versions)
sys.exit(0 if versions.get("localstdp") and versions.get("torch") else "wheel-check: FAIL: no versions in results.json")
PY
[ -z "$(ls -A "$TMP/empty")" ] || { say "FAIL: the runs wrote into the working directory: $(ls -A "$TMP/empty")"; exit 1; }
cd "$REPO"
say "OK: the wheel installs; train --config iris and a one-seed reproduce ran outside the checkout"
