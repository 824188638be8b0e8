#!/usr/bin/env bash
# A user on a fresh Colab, simulated: a new virtual environment in a temporary folder, the
# package installed from this checkout (not editable, so the shipped data files are what
# the notebooks see) with jupyter's nbconvert and ipykernel, then every notebook executed
# top to bottom with `jupyter nbconvert --execute` in scenes mode with the smoke training
# variants. Needs network for pip; not part of CI (minutes of installs).
#
#   notebooks/check_fresh_venv.sh                  # every notebooks/*.ipynb
#   notebooks/check_fresh_venv.sh croc comus       # some of them
#   PYTHON=python3.12 KEEP=1 notebooks/check_fresh_venv.sh   # another Python; keep the folder
#
# Prints each notebook's wall time; exits 1 if any notebook fails, 2 if the installation
# fails (the temporary folder, with the logs and executed copies, is then kept).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dense_jax_fresh.XXXXXX")
cleanup() {
  local status=$?
  if [[ $status -eq 0 && -z ${KEEP:-} ]]; then rm -rf "$tmp"; else echo "kept $tmp"; fi
}
trap cleanup EXIT
echo "fresh environment in $tmp ($("$python" --version))"

start=$SECONDS
if ! {
  "$python" -m venv "$tmp/venv" &&
    "$tmp/venv/bin/python" -m pip install -q --upgrade pip &&
    "$tmp/venv/bin/python" -m pip install -q "$repo" nbconvert ipykernel &&
    "$tmp/venv/bin/python" -m ipykernel install --prefix "$tmp/venv" --name dense-jax-fresh >/dev/null
}; then
  echo "FAILED: installing the package into a fresh venv" >&2
  exit 2
fi
echo "installed in $((SECONDS - start)) s"

if [[ $# -gt 0 ]]; then
  names=("$@")
else
  names=()
  for path in "$repo"/notebooks/*.ipynb; do
    name=$(basename "$path")
    names+=("${name%.ipynb}")
  done
fi

# nbconvert runs each notebook in its own folder; the notebook finds the checkout (configs/)
# by walking up from there and imports the installed package.
export DENSE_JAX_NOTEBOOK_MODE=scenes DENSE_JAX_NOTEBOOK_TRAIN=smoke
failed=()
for name in "${names[@]}"; do
  export DENSE_JAX_NOTEBOOK_WORKDIR="$tmp/work/$name"
  begin=$SECONDS
  if "$tmp/venv/bin/jupyter" nbconvert --to notebook --execute \
    --ExecutePreprocessor.kernel_name=dense-jax-fresh --ExecutePreprocessor.timeout=1800 \
    --output-dir "$tmp/executed" "$repo/notebooks/$name.ipynb" >"$tmp/$name.log" 2>&1; then
    echo "ok      $name  $((SECONDS - begin)) s"
  else
    echo "FAILED  $name  $((SECONDS - begin)) s (log: $tmp/$name.log)"
    tail -n 20 "$tmp/$name.log"
    failed+=("$name")
  fi
done

echo "total $((SECONDS - start)) s"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "${#failed[@]} notebook(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "every notebook ran in a fresh venv"
