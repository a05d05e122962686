-- 0007: every kind of file people send (text, PDF, audio, video, images), and the copies
-- uploaded to Gemini's Files API.
--
-- `images` already keeps any file's bytes once by SHA-256 (with its MIME type and size), and
-- `turn_images` links turns to them; a link now keeps the file's name as it was sent, so an
-- older file left out of a request can still be named to the model ("earlier: report.pdf").

ALTER TABLE turn_images ADD COLUMN name TEXT NOT NULL DEFAULT '';

-- A file uploaded to Gemini (Files API), reused by its content hash until it expires (48 h).
-- Deleting the stored file (forget-me, retention) deletes this row by cascade, and the
-- trigger below queues the upload's name so the bot deletes it from Gemini too.
CREATE TABLE gemini_files (
    sha256      TEXT PRIMARY KEY REFERENCES images (sha256) ON DELETE CASCADE,
    name        TEXT NOT NULL,                  -- "files/abc123", what files.get/delete take
    uri         TEXT NOT NULL,                  -- what a request's file_data part names
    mime_type   TEXT NOT NULL,
    expires_at  REAL NOT NULL,                  -- Unix time Gemini drops it
    uploaded_at REAL NOT NULL
);

-- Uploads to delete from Gemini: their stored file is gone, or a newer upload replaced them.
CREATE TABLE gemini_files_gone (
    name      TEXT PRIMARY KEY,
    queued_at REAL NOT NULL
);

CREATE TRIGGER gemini_files_deleted AFTER DELETE ON gemini_files
BEGIN
    INSERT INTO gemini_files_gone (name, queued_at) VALUES (old.name, (julianday('now') - 2440587.5) * 86400.0)
        ON CONFLICT (name) DO NOTHING;
END;

CREATE TRIGGER gemini_files_replaced AFTER UPDATE OF name ON gemini_files
WHEN old.name <> new.name
BEGIN
    INSERT INTO gemini_files_gone (name, queued_at) VALUES (old.name, (julianday('now') - 2440587.5) * 86400.0)
        ON CONFLICT (name) DO NOTHING;
END;
