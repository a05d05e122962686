"""End to end: questions asked together in one channel begin their replies in the order asked.

A question answered at once is stored, its reply started and its history read in one store
operation (``Store.ask``), inside the channel's arrival order; one that waited for admission
starts its reply with ``Store.start_reply``. Checked here: what each Gemini request carried
(the earlier questions, in the order asked) and what was stored.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.conversation import SEPARATE
from tests.test_e2e_busy import fast, held_echo, user_turns

pytestmark = pytest.mark.timeout(60)

N = 6


def turns(db_path: Path) -> list[tuple[int, str, str, int | None, str]]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT id, role, text, reply_to, status FROM turns ORDER BY id"
        ).fetchall()


@pytest.mark.parametrize("cap", [None, 2], ids=["at-once", "queued"])
async def test_questions_asked_together_begin_in_the_order_asked(
    tmp_path: Path, cap: int | None
) -> None:
    env = {"GEMCORD_REPLIES_PER_CHANNEL": str(cap or N)}
    async with fast(tmp_path, env) as w:
        hold = asyncio.Event()
        w.gemini.default_reply = held_echo(hold)
        people = []
        for k in range(N):
            user = w.discord.add_user(f"asker{k}")
            w.discord.add_member(w.guild, user)
            people.append(user)
        asked = [f"question {k}" for k in range(N)]
        questions = await asyncio.gather(
            *(w.mention(w.general, people[k], asked[k]) for k in range(N))
        )
        labelled = [f"[asker{k}] {asked[k]}" for k in range(N)]
        first = N if cap is None else cap
        requests = await w.gemini.wait_for_requests(first)
        if cap is not None:
            hold.set()  # let the first replies finish, so the queued ones begin
            requests = await w.gemini.wait_for_requests(N)
        hold.set()
        await asyncio.gather(*(w.reply_done(q.id) for q in questions))

        by_question = {user_turns(r)[-1]: r for r in requests}
        assert sorted(by_question) == sorted(labelled)
        for k, label in enumerate(labelled):
            seen = user_turns(by_question[label])
            # every earlier question comes before it, in the order asked, and no later one
            assert seen[-1] == label
            assert seen[:-1] == [x for x in labelled[:k] if x in seen[:-1]]
            if cap is None:  # all still streaming: each earlier one is context
                assert seen[:-1] == labelled[:k]
                assert by_question[label].texts("model") == [SEPARATE] * k

        stored = turns(w.db_path)
        questions_stored = [t for t in stored if t[1] == "user"]
        assert [t[2] for t in questions_stored] == asked  # stored in the order asked
        replies = [t for t in stored if t[1] == "model"]
        assert sorted(t[3] for t in replies) == [t[0] for t in questions_stored]  # one each
        assert {t[4] for t in replies} == {"complete"}
        for (q_id, *_), label in zip(questions_stored, labelled, strict=True):
            reply = next(t for t in replies if t[3] == q_id)
            assert reply[2] == f"Echo: {label}"
        assert not w.discord.rate_limit_hits
