-- 0003 (PostgreSQL): each Discord message is answered at most once; turns withdrawn from what
-- the model sees; files Gemini refused; the "interrupted" status. Mirrors ../0003 (where
-- SQLite rebuilds `turns` to change a CHECK, PostgreSQL alters it in place).

ALTER TABLE turns DROP CONSTRAINT turns_status_check;
ALTER TABLE turns ADD CONSTRAINT turns_status_check
    CHECK (status IN ('streaming', 'complete', 'stopped', 'interrupted', 'failed', 'blocked'));
ALTER TABLE turns ADD COLUMN withdrawn TEXT CHECK (withdrawn IN ('deleted', 'blocked'));

CREATE TABLE answered (
    message_id BIGINT PRIMARY KEY,
    turn_id    BIGINT NOT NULL REFERENCES turns (id) ON DELETE CASCADE
);

CREATE INDEX answered_turn ON answered (turn_id);

INSERT INTO answered (message_id, turn_id)
SELECT m.message_id, min(m.turn_id)
  FROM turn_messages AS m JOIN turns AS t ON t.id = m.turn_id
 WHERE t.role = 'user' AND m.position = 0
 GROUP BY m.message_id;

CREATE TABLE unusable_images (
    sha256    TEXT PRIMARY KEY REFERENCES images (sha256) ON DELETE CASCADE,
    reason    TEXT NOT NULL,
    marked_at DOUBLE PRECISION NOT NULL
);
