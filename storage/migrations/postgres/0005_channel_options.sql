-- 0005 (PostgreSQL): more per-channel settings, each NULL until a moderator sets it (NULL: the
-- bot's default, and a thread inherits its parent's). Mirrors ../0005_channel_options.sql.

ALTER TABLE channel_settings
    ADD COLUMN thinking    TEXT,
    ADD COLUMN search      TEXT,
    ADD COLUMN links       TEXT,
    ADD COLUMN code        TEXT,
    ADD COLUMN scope       TEXT,
    ADD COLUMN auto_thread TEXT,
    ADD COLUMN answer_mode TEXT;
