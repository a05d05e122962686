-- 0002: per-reply streaming metrics, and the index that makes "forget me" cheap.

CREATE TABLE reply_metrics (
    turn_id               INTEGER PRIMARY KEY REFERENCES turns (id) ON DELETE CASCADE,
    first_chunk_latency   REAL,              -- seconds from request to the model's first chunk
    first_visible_latency REAL,              -- seconds from request to the first Discord message
    total_time            REAL    NOT NULL,
    chunk_count           INTEGER NOT NULL,
    edit_count            INTEGER NOT NULL,
    send_count            INTEGER NOT NULL,
    rate_limited          INTEGER NOT NULL,  -- 429s met while rendering
    outcome               TEXT    NOT NULL,
    recorded_at           REAL    NOT NULL
);

CREATE INDEX turns_author ON turns (author_id) WHERE role = 'user';
