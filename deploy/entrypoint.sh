#!/bin/sh
# The container's entry point. A settings error (exit 2) would never fix itself by restarting,
# so instead of letting Docker restart the bot in a loop, the container reports the sentence
# once and waits (its health check says "unhealthy") until the admin fixes .env and recreates
# it. Any other exit is left to the restart policy.
set -u
gemcord "$@"
status=$?
if [ "$status" -eq 2 ]; then
  echo "gemcord: fix the setting above in .env, then: docker compose up -d" >&2
  exec sleep infinity
fi
exit "$status"
