#!/bin/sh
# Install gemcord from this checkout into a virtual environment, and check that the install
# works (settings, database and migrations) without touching anything else.
# Used by deploy/Dockerfile and by CI (scripts/test), so both install the same way.
#   sh deploy/install.sh /opt/gemcord        # creates /opt/gemcord/bin/gemcord
set -eu
target="${1:?usage: sh deploy/install.sh VENV_DIR}"
root="$(cd "$(dirname "$0")/.." && pwd)"
"${PYTHON:-python3}" -m venv "$target"
# Built from a copy of what the package needs, so the checkout gets no build/ folder.
src="$(mktemp -d)"
cp -R "$root/pyproject.toml" "$root/README.md" "$root/bot" "$root/storage" "$src/"
"$target/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "$src"
rm -rf "$src"
probe="$(mktemp -d)"
GEMCORD_DB="$probe/probe.db" "$target/bin/gemcord" check --env-file /dev/null >/dev/null 2>&1 || {
  status=$?
  # exit 1 only says the secrets are missing: the install itself is fine
  [ "$status" -eq 1 ] || { rm -rf "$probe"; exit "$status"; }
}
rm -rf "$probe"
echo "gemcord installed in $target"
