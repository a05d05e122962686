-- 0003: each Discord message is answered at most once; turns withdrawn from what the model
-- sees (deleted on Discord, blocked by the safety filter); files Gemini refused; the
-- "interrupted" status of a reply cut off by a restart or a crash.
--
-- SQLite cannot change a CHECK constraint in place, so `turns` is rebuilt (the runner applies
-- migrations with foreign keys off and checks them before committing): new table, copy,
-- drop, rename, then its indexes and triggers again.

CREATE TABLE turns_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after deletes
    channel_id    INTEGER NOT NULL,                   -- the history key
    guild_id      INTEGER,
    thread_id     INTEGER,
    role          TEXT    NOT NULL CHECK (role IN ('user', 'model')),
    author_id     INTEGER NOT NULL,
    author_name   TEXT    NOT NULL DEFAULT '',
    text          TEXT    NOT NULL DEFAULT '',        -- while streaming: the last checkpoint
    status        TEXT    NOT NULL CHECK (status IN ('streaming', 'complete', 'stopped',
                                                     'interrupted', 'failed', 'blocked')),
    reply_to      INTEGER REFERENCES turns (id) ON DELETE CASCADE,
    created_at    REAL    NOT NULL,                   -- Unix time, seconds
    finished_at   REAL,
    prompt_tokens INTEGER,
    output_tokens INTEGER,
    model         TEXT,
    archived      INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),  -- 1 after a reset
    archived_at   REAL,
    -- why the turn is no longer sent to the model (NULL: it is): its Discord message was
    -- deleted, or the exchange tripped the safety filter; it stays in exports
    withdrawn     TEXT    CHECK (withdrawn IN ('deleted', 'blocked')),
    pair_key      INTEGER GENERATED ALWAYS AS (coalesce(reply_to, id)) VIRTUAL,
    CHECK ((role = 'user') = (reply_to IS NULL))
);

INSERT INTO turns_new (id, channel_id, guild_id, thread_id, role, author_id, author_name, text,
                       status, reply_to, created_at, finished_at, prompt_tokens, output_tokens,
                       model, archived, archived_at)
SELECT id, channel_id, guild_id, thread_id, role, author_id, author_name, text, status,
       reply_to, created_at, finished_at, prompt_tokens, output_tokens, model, archived,
       archived_at
  FROM turns;

DROP TABLE turns;
ALTER TABLE turns_new RENAME TO turns;

CREATE INDEX turns_history ON turns (channel_id, archived, pair_key, id);
CREATE INDEX turns_reply_to ON turns (reply_to) WHERE reply_to IS NOT NULL;
CREATE INDEX turns_streaming ON turns (id) WHERE status = 'streaming';
CREATE INDEX turns_author ON turns (author_id) WHERE role = 'user';

CREATE TRIGGER turns_totals_insert AFTER INSERT ON turns BEGIN
    INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens)
    VALUES (NEW.channel_id, NEW.role, NEW.status, 1, coalesce(NEW.prompt_tokens, 0),
            coalesce(NEW.output_tokens, 0))
    ON CONFLICT (channel_id, role, status) DO UPDATE
       SET turns = turns + 1,
           prompt_tokens = prompt_tokens + excluded.prompt_tokens,
           output_tokens = output_tokens + excluded.output_tokens;
END;

CREATE TRIGGER turns_totals_delete AFTER DELETE ON turns BEGIN
    UPDATE turn_totals
       SET turns = turns - 1,
           prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
           output_tokens = output_tokens - coalesce(OLD.output_tokens, 0)
     WHERE channel_id = OLD.channel_id AND role = OLD.role AND status = OLD.status;
END;

CREATE TRIGGER turns_totals_update
AFTER UPDATE OF channel_id, role, status, prompt_tokens, output_tokens ON turns BEGIN
    UPDATE turn_totals
       SET turns = turns - 1,
           prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
           output_tokens = output_tokens - coalesce(OLD.output_tokens, 0)
     WHERE channel_id = OLD.channel_id AND role = OLD.role AND status = OLD.status;
    INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens)
    VALUES (NEW.channel_id, NEW.role, NEW.status, 1, coalesce(NEW.prompt_tokens, 0),
            coalesce(NEW.output_tokens, 0))
    ON CONFLICT (channel_id, role, status) DO UPDATE
       SET turns = turns + 1,
           prompt_tokens = prompt_tokens + excluded.prompt_tokens,
           output_tokens = output_tokens + excluded.output_tokens;
END;

-- The Discord message each question came from. The primary key is the at-most-once guard:
-- a second question from the same message (a duplicate gateway delivery, a second process)
-- cannot be stored.
CREATE TABLE answered (
    message_id INTEGER PRIMARY KEY,
    turn_id    INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE
);

CREATE INDEX answered_turn ON answered (turn_id);

INSERT OR IGNORE INTO answered (message_id, turn_id)
SELECT m.message_id, m.turn_id
  FROM turn_messages AS m JOIN turns AS t ON t.id = m.turn_id
 WHERE t.role = 'user' AND m.position = 0
 ORDER BY m.turn_id;

-- Images Gemini refused to process: never sent again, in any channel.
CREATE TABLE unusable_images (
    sha256    TEXT PRIMARY KEY REFERENCES images (sha256) ON DELETE CASCADE,
    reason    TEXT NOT NULL,
    marked_at REAL NOT NULL
) WITHOUT ROWID;
