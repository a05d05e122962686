"""Shared test set-up: everything talks to fakes on 127.0.0.1, never through a proxy."""

from __future__ import annotations

import os

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for _var in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
    os.environ.pop(_var, None)

from tests.backends import (  # noqa: E402,F401
    SKIP_POSTGRES,
    SKIP_REASON,
    backend,
    pg_backend,
    postgres,
)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say loudly when the PostgreSQL half of the suite did not run."""
    if SKIP_POSTGRES:
        terminalreporter.write_sep("!", SKIP_REASON, red=True, bold=True)
