"""Shared test set-up: everything talks to fakes on 127.0.0.1, never through a proxy."""

from __future__ import annotations

import os

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for _var in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
    os.environ.pop(_var, None)
