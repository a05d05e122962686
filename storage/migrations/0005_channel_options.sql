-- 0005: more per-channel settings, each NULL until a moderator sets it (NULL: the bot's
-- default, and a thread inherits its parent's). Values are the choice names `/settings`
-- offers (see bot/options.py), so a new setting is one column here and one entry there.

ALTER TABLE channel_settings ADD COLUMN thinking    TEXT;
ALTER TABLE channel_settings ADD COLUMN search      TEXT;
ALTER TABLE channel_settings ADD COLUMN links       TEXT;
ALTER TABLE channel_settings ADD COLUMN code        TEXT;
ALTER TABLE channel_settings ADD COLUMN scope       TEXT;
ALTER TABLE channel_settings ADD COLUMN auto_thread TEXT;
ALTER TABLE channel_settings ADD COLUMN answer_mode TEXT;
