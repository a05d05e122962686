"""Which Discord shards a process serves, and so which servers' rows are its own.

Discord puts a server on shard `(guild_id >> 22) % shard_count`, and DMs on shard 0. Several
processes sharing one PostgreSQL database each own the rows of their shards' servers: only
those are theirs to mark interrupted at start-up, and the single-instance lock is per shard.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardSet:
    """The shards `ids` out of `count` that one process runs."""

    count: int = 1
    ids: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("the shard count must be at least 1")
        if not self.ids or len(set(self.ids)) != len(self.ids):
            raise ValueError("give each shard id once, and at least one")
        if any(not 0 <= i < self.count for i in self.ids):
            raise ValueError(f"shard ids must be between 0 and {self.count - 1}")

    @property
    def everything(self) -> bool:
        """True when this process serves every server (no split)."""
        return len(self.ids) == self.count

    def owns(self, guild_id: int | None) -> bool:
        """Whether a server (None: a DM) is on one of these shards."""
        return shard_of(guild_id, self.count) in self.ids

    def label(self) -> str:
        """A short name such as "0,1/4", for logs and metrics."""
        return f"{','.join(map(str, self.ids))}/{self.count}"


def shard_of(guild_id: int | None, count: int) -> int:
    """The shard Discord gives a server (DMs: shard 0)."""
    return 0 if guild_id is None else (int(guild_id) >> 22) % count
