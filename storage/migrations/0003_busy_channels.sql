-- 0003: each Discord message is answered at most once; turns withdrawn from what the model
-- sees (deleted on Discord, blocked by the safety filter); files Gemini refused.

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

-- Why a turn is no longer sent to the model (NULL: it is): 'deleted' (its Discord message was
-- deleted) or 'blocked' (the exchange tripped the safety filter). It stays in exports.
ALTER TABLE turns ADD COLUMN withdrawn TEXT CHECK (withdrawn IN ('deleted', 'blocked'));

-- Images Gemini refused to process: never sent again, in any channel.
CREATE TABLE unusable_images (
    sha256    TEXT PRIMARY KEY REFERENCES images (sha256) ON DELETE CASCADE,
    reason    TEXT NOT NULL,
    marked_at REAL NOT NULL
) WITHOUT ROWID;
