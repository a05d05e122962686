-- 0007 (PostgreSQL): every kind of file, with the name it was sent as, and the copies uploaded
-- to Gemini's Files API. Mirrors ../0007_files.sql (its triggers become plpgsql functions).

ALTER TABLE turn_images ADD COLUMN name TEXT NOT NULL DEFAULT '';

CREATE TABLE gemini_files (
    sha256      TEXT PRIMARY KEY REFERENCES images (sha256) ON DELETE CASCADE,
    name        TEXT NOT NULL,                  -- "files/abc123", what files.get/delete take
    uri         TEXT NOT NULL,                  -- what a request's file_data part names
    mime_type   TEXT NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,      -- Unix time Gemini drops it
    uploaded_at DOUBLE PRECISION NOT NULL
);

-- Uploads to delete from Gemini: their stored file is gone, or a newer upload replaced them.
CREATE TABLE gemini_files_gone (
    name      TEXT PRIMARY KEY,
    queued_at DOUBLE PRECISION NOT NULL
);

CREATE FUNCTION gemini_files_queue_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gemini_files_gone (name, queued_at)
    VALUES (OLD.name, extract(epoch FROM clock_timestamp()))
        ON CONFLICT (name) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER gemini_files_deleted AFTER DELETE ON gemini_files
    FOR EACH ROW EXECUTE FUNCTION gemini_files_queue_gone();

CREATE TRIGGER gemini_files_replaced AFTER UPDATE OF name ON gemini_files
    FOR EACH ROW WHEN (OLD.name <> NEW.name) EXECUTE FUNCTION gemini_files_queue_gone();
