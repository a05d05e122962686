"""Settings for running at scale: the PostgreSQL URL and the Discord shards of a process."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from storage import ShardSet


def test_database_url_selects_postgres_and_hides_its_password() -> None:
    s = load_settings({}, env_file=None)
    assert s.database_url is None and s.database == "data/gemcord.db"
    url = "postgresql://gemcord:hunter2secret@db.example:5432/gemcord"
    s = load_settings({"GEMCORD_DATABASE_URL": url}, env_file=None)
    assert s.database == url
    assert "hunter2secret" not in repr(s) + str(s.redacted()) + s.database_label
    assert s.redacted()["database_url"] == "postgresql://gemcord:****@db.example:5432/gemcord"


@pytest.mark.parametrize("bad", ["mysql://x@y/z", "./data/gemcord.db", "sqlite:///x.db"])
def test_a_database_url_that_is_not_postgres_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="GEMCORD_DATABASE_URL"):
        load_settings({"GEMCORD_DATABASE_URL": bad}, env_file=None)


def test_shards_default_to_all_of_them() -> None:
    assert load_settings({}, env_file=None).shards is None  # Discord's recommended count
    s = load_settings({"GEMCORD_SHARD_COUNT": "4"}, env_file=None)
    assert s.shards == ShardSet(4, (0, 1, 2, 3)) and s.shards.everything
    s = load_settings({"GEMCORD_SHARD_COUNT": "4", "GEMCORD_SHARD_IDS": "2, 3"}, env_file=None)
    assert s.shards == ShardSet(4, (2, 3)) and s.redacted()["shards"] == "2,3/4"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"GEMCORD_SHARD_COUNT": "0"}, "GEMCORD_SHARD_COUNT"),
        ({"GEMCORD_SHARD_COUNT": "two"}, "GEMCORD_SHARD_COUNT"),
        ({"GEMCORD_SHARD_COUNT": "2", "GEMCORD_SHARD_IDS": "2"}, "GEMCORD_SHARD_IDS"),
        ({"GEMCORD_SHARD_COUNT": "2", "GEMCORD_SHARD_IDS": "0,0"}, "GEMCORD_SHARD_IDS"),
        ({"GEMCORD_SHARD_COUNT": "2", "GEMCORD_SHARD_IDS": "x"}, "GEMCORD_SHARD_IDS"),
        ({"GEMCORD_SHARD_IDS": "0"}, "GEMCORD_SHARD_IDS"),
    ],
)
def test_bad_shard_settings_are_named(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env, env_file=None)


def test_servers_are_on_the_shard_discord_gives_them() -> None:
    shards = ShardSet(2, (1,))
    assert shards.owns((5 << 22) | 999) and not shards.owns(4 << 22)
    assert not shards.owns(None)  # DMs are on shard 0
    assert ShardSet(2, (0,)).owns(None)
