-- 0001: conversation turns, the Discord messages and images they carry, per-channel settings.
--
-- A turn is one user question or one model reply. A model turn points at the user turn it
-- answers (reply_to); pair_key groups the two, so history keeps each question next to its
-- answer in the order the questions were asked, whatever order the replies finished in.

CREATE TABLE turns (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after deletes
    channel_id    INTEGER NOT NULL,                   -- the history key
    guild_id      INTEGER,
    thread_id     INTEGER,
    role          TEXT    NOT NULL CHECK (role IN ('user', 'model')),
    author_id     INTEGER NOT NULL,
    author_name   TEXT    NOT NULL DEFAULT '',
    text          TEXT    NOT NULL DEFAULT '',
    status        TEXT    NOT NULL
                  CHECK (status IN ('streaming', 'complete', 'stopped', 'failed', 'blocked')),
    reply_to      INTEGER REFERENCES turns (id) ON DELETE CASCADE,
    created_at    REAL    NOT NULL,                   -- Unix time, seconds
    finished_at   REAL,
    prompt_tokens INTEGER,
    output_tokens INTEGER,
    model         TEXT,
    archived      INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),  -- 1 after a reset
    archived_at   REAL,
    pair_key      INTEGER GENERATED ALWAYS AS (coalesce(reply_to, id)) VIRTUAL,
    CHECK ((role = 'user') = (reply_to IS NULL))
);

-- The history access path: one channel's live turns, newest pair first.
CREATE INDEX turns_history ON turns (channel_id, archived, pair_key, id);
-- Replies to a turn (cascading deletes, forget-me).
CREATE INDEX turns_reply_to ON turns (reply_to) WHERE reply_to IS NOT NULL;
-- Model turns still streaming: few at any time; found at start-up to mark them failed.
CREATE INDEX turns_streaming ON turns (id) WHERE status = 'streaming';

-- The Discord messages that carry a turn (a long reply spans several), in order.
CREATE TABLE turn_messages (
    turn_id    INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (turn_id, position)
) WITHOUT ROWID;

CREATE INDEX turn_messages_message ON turn_messages (message_id);

-- Images, stored once by content hash.
CREATE TABLE images (
    sha256     TEXT    PRIMARY KEY,                   -- lower-case hex of the bytes' SHA-256
    mime_type  TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    data       BLOB    NOT NULL                       -- last, so scans never read it
);

CREATE TABLE turn_images (
    turn_id  INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sha256   TEXT    NOT NULL REFERENCES images (sha256),
    PRIMARY KEY (turn_id, position)
) WITHOUT ROWID;

CREATE INDEX turn_images_sha256 ON turn_images (sha256);

CREATE TABLE channel_settings (
    channel_id INTEGER PRIMARY KEY,
    persona    TEXT,
    model      TEXT,
    updated_at REAL NOT NULL
);
