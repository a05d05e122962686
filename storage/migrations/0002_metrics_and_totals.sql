-- 0002: per-reply streaming metrics; running totals that keep `stats` instant at any size;
-- the index that makes "forget me" cheap.

CREATE TABLE reply_metrics (
    turn_id               INTEGER PRIMARY KEY REFERENCES turns (id) ON DELETE CASCADE,
    channel_id            INTEGER NOT NULL,  -- the reply's channel (its turn's), for the totals
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

-- Turn counts and token sums per channel, role and status, kept by triggers (which also fire
-- for rows removed by ON DELETE CASCADE). Stats read these instead of scanning every turn.
CREATE TABLE turn_totals (
    channel_id    INTEGER NOT NULL,
    role          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    turns         INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    PRIMARY KEY (channel_id, role, status)
) WITHOUT ROWID;

INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens)
SELECT channel_id, role, status, count(*), coalesce(sum(prompt_tokens), 0),
       coalesce(sum(output_tokens), 0)
  FROM turns
 GROUP BY channel_id, role, status;

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

-- Reply metrics summed per channel, kept the same way. Metrics are written with an upsert,
-- never INSERT OR REPLACE (whose implicit delete would not fire the delete trigger).
CREATE TABLE reply_totals (
    channel_id      INTEGER PRIMARY KEY,
    replies         INTEGER NOT NULL,
    first_chunk_n   INTEGER NOT NULL,  -- replies whose first-chunk latency is known
    first_chunk_sum REAL    NOT NULL,
    total_time_sum  REAL    NOT NULL
);

CREATE TRIGGER reply_metrics_totals_insert AFTER INSERT ON reply_metrics BEGIN
    INSERT INTO reply_totals (channel_id, replies, first_chunk_n, first_chunk_sum, total_time_sum)
    VALUES (NEW.channel_id, 1, NEW.first_chunk_latency IS NOT NULL,
            coalesce(NEW.first_chunk_latency, 0), NEW.total_time)
    ON CONFLICT (channel_id) DO UPDATE
       SET replies = replies + 1,
           first_chunk_n = first_chunk_n + excluded.first_chunk_n,
           first_chunk_sum = first_chunk_sum + excluded.first_chunk_sum,
           total_time_sum = total_time_sum + excluded.total_time_sum;
END;

CREATE TRIGGER reply_metrics_totals_delete AFTER DELETE ON reply_metrics BEGIN
    UPDATE reply_totals
       SET replies = replies - 1,
           first_chunk_n = first_chunk_n - (OLD.first_chunk_latency IS NOT NULL),
           first_chunk_sum = first_chunk_sum - coalesce(OLD.first_chunk_latency, 0),
           total_time_sum = total_time_sum - OLD.total_time
     WHERE channel_id = OLD.channel_id;
END;

CREATE TRIGGER reply_metrics_totals_update
AFTER UPDATE OF channel_id, first_chunk_latency, total_time ON reply_metrics BEGIN
    UPDATE reply_totals
       SET replies = replies - 1,
           first_chunk_n = first_chunk_n - (OLD.first_chunk_latency IS NOT NULL),
           first_chunk_sum = first_chunk_sum - coalesce(OLD.first_chunk_latency, 0),
           total_time_sum = total_time_sum - OLD.total_time
     WHERE channel_id = OLD.channel_id;
    INSERT INTO reply_totals (channel_id, replies, first_chunk_n, first_chunk_sum, total_time_sum)
    VALUES (NEW.channel_id, 1, NEW.first_chunk_latency IS NOT NULL,
            coalesce(NEW.first_chunk_latency, 0), NEW.total_time)
    ON CONFLICT (channel_id) DO UPDATE
       SET replies = replies + 1,
           first_chunk_n = first_chunk_n + excluded.first_chunk_n,
           first_chunk_sum = first_chunk_sum + excluded.first_chunk_sum,
           total_time_sum = total_time_sum + excluded.total_time_sum;
END;
