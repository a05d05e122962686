-- 0004: the token ledger (one row per reply, with Gemini's full usage), per-day totals kept
-- by triggers so /usage and the daily budgets cost the same at any size, and per-server
-- budget overrides.
--
-- The ledger is about money, not content: it holds ids and counts only, and it outlives the
-- turns it counts (retention, /forget, a deleted channel): `turn_id` is set to NULL then, so
-- a day's spending, and so a budget, cannot be undone by deleting what was said.

CREATE TABLE usage (
    id                      INTEGER PRIMARY KEY,
    turn_id                 INTEGER UNIQUE REFERENCES turns (id) ON DELETE SET NULL,
    user_id                 INTEGER NOT NULL,   -- who asked
    channel_id              INTEGER NOT NULL,   -- where (a thread's own id)
    guild_id                INTEGER,            -- NULL in a DM
    model                   TEXT    NOT NULL,
    at                      REAL    NOT NULL,   -- Unix time, seconds
    day                     INTEGER NOT NULL,   -- UTC day number: floor(at / 86400)
    prompt_tokens           INTEGER NOT NULL DEFAULT 0,  -- cached tokens included
    output_tokens           INTEGER NOT NULL DEFAULT 0,
    thoughts_tokens         INTEGER NOT NULL DEFAULT 0,
    cached_tokens           INTEGER NOT NULL DEFAULT 0,
    tool_use_prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    total_tokens            INTEGER NOT NULL DEFAULT 0
);

-- One row per (channel, day, user, model): what /usage and the budgets read (by channel
-- through the key, by user or server through their indexes).
CREATE TABLE usage_daily (
    day                     INTEGER NOT NULL,
    channel_id              INTEGER NOT NULL,
    user_id                 INTEGER NOT NULL,
    model                   TEXT    NOT NULL,
    guild_id                INTEGER,
    replies                 INTEGER NOT NULL,
    prompt_tokens           INTEGER NOT NULL,
    output_tokens           INTEGER NOT NULL,
    thoughts_tokens         INTEGER NOT NULL,
    cached_tokens           INTEGER NOT NULL,
    tool_use_prompt_tokens  INTEGER NOT NULL,
    total_tokens            INTEGER NOT NULL,
    PRIMARY KEY (channel_id, day, user_id, model)
) WITHOUT ROWID;

CREATE INDEX usage_daily_user ON usage_daily (user_id, day);
CREATE INDEX usage_daily_guild ON usage_daily (guild_id, day) WHERE guild_id IS NOT NULL;

CREATE TRIGGER usage_daily_insert AFTER INSERT ON usage BEGIN
    INSERT INTO usage_daily (day, channel_id, user_id, model, guild_id, replies, prompt_tokens,
                             output_tokens, thoughts_tokens, cached_tokens,
                             tool_use_prompt_tokens, total_tokens)
    VALUES (NEW.day, NEW.channel_id, NEW.user_id, NEW.model, NEW.guild_id, 1, NEW.prompt_tokens,
            NEW.output_tokens, NEW.thoughts_tokens, NEW.cached_tokens,
            NEW.tool_use_prompt_tokens, NEW.total_tokens)
    ON CONFLICT (channel_id, day, user_id, model) DO UPDATE
       SET replies = replies + 1,
           prompt_tokens = prompt_tokens + excluded.prompt_tokens,
           output_tokens = output_tokens + excluded.output_tokens,
           thoughts_tokens = thoughts_tokens + excluded.thoughts_tokens,
           cached_tokens = cached_tokens + excluded.cached_tokens,
           tool_use_prompt_tokens = tool_use_prompt_tokens + excluded.tool_use_prompt_tokens,
           total_tokens = total_tokens + excluded.total_tokens;
END;

CREATE TRIGGER usage_daily_delete AFTER DELETE ON usage BEGIN
    UPDATE usage_daily
       SET replies = replies - 1,
           prompt_tokens = prompt_tokens - OLD.prompt_tokens,
           output_tokens = output_tokens - OLD.output_tokens,
           thoughts_tokens = thoughts_tokens - OLD.thoughts_tokens,
           cached_tokens = cached_tokens - OLD.cached_tokens,
           tool_use_prompt_tokens = tool_use_prompt_tokens - OLD.tool_use_prompt_tokens,
           total_tokens = total_tokens - OLD.total_tokens
     WHERE day = OLD.day AND channel_id = OLD.channel_id AND user_id = OLD.user_id
       AND model = OLD.model;
END;

-- A server's own daily budgets, set with /budget by someone with Manage Server (NULL: the
-- bot's setting; 0: unlimited).
CREATE TABLE guild_budgets (
    guild_id      INTEGER PRIMARY KEY,
    server_tokens INTEGER CHECK (server_tokens >= 0),
    user_tokens   INTEGER CHECK (user_tokens >= 0),
    updated_at    REAL    NOT NULL
);
