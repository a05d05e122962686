# Sourced by scripts/run and scripts/test: make .venv and install gemcord into it (once per change
# of pyproject.toml). Needs only python3 (3.11+) with venv and pip.
set -eu
PYTHON="${PYTHON:-python3}"
EXTRAS="${GEMCORD_EXTRAS:-}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.gemcord-installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
