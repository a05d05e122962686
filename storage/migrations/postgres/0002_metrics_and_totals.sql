-- 0002 (PostgreSQL): per-reply streaming metrics; running totals kept by triggers (stats cost
-- the same at any size); the index that makes "forget me" cheap. Mirrors ../0002.

CREATE TABLE reply_metrics (
    turn_id               BIGINT  PRIMARY KEY REFERENCES turns (id) ON DELETE CASCADE,
    channel_id            BIGINT  NOT NULL,
    first_chunk_latency   DOUBLE PRECISION,
    first_visible_latency DOUBLE PRECISION,
    total_time            DOUBLE PRECISION NOT NULL,
    chunk_count           INTEGER NOT NULL,
    edit_count            INTEGER NOT NULL,
    send_count            INTEGER NOT NULL,
    rate_limited          INTEGER NOT NULL,
    outcome               TEXT    NOT NULL,
    recorded_at           DOUBLE PRECISION NOT NULL
);

CREATE INDEX turns_author ON turns (author_id) WHERE role = 'user';

CREATE TABLE turn_totals (
    channel_id    BIGINT  NOT NULL,
    role          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    turns         BIGINT  NOT NULL,
    prompt_tokens BIGINT  NOT NULL,
    output_tokens BIGINT  NOT NULL,
    PRIMARY KEY (channel_id, role, status)
);

INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens)
SELECT channel_id, role, status, count(*), coalesce(sum(prompt_tokens), 0),
       coalesce(sum(output_tokens), 0)
  FROM turns
 GROUP BY channel_id, role, status;

CREATE FUNCTION turn_totals_add(ch BIGINT, r TEXT, s TEXT, n BIGINT, p BIGINT, o BIGINT)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens)
    VALUES (ch, r, s, n, p, o)
    ON CONFLICT (channel_id, role, status) DO UPDATE
       SET turns = turn_totals.turns + excluded.turns,
           prompt_tokens = turn_totals.prompt_tokens + excluded.prompt_tokens,
           output_tokens = turn_totals.output_tokens + excluded.output_tokens;
$$;

CREATE FUNCTION turns_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM turn_totals_add(OLD.channel_id, OLD.role, OLD.status, -1,
                                -coalesce(OLD.prompt_tokens, 0), -coalesce(OLD.output_tokens, 0));
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM turn_totals_add(NEW.channel_id, NEW.role, NEW.status, 1,
                                coalesce(NEW.prompt_tokens, 0), coalesce(NEW.output_tokens, 0));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER turns_totals_insert AFTER INSERT ON turns
    FOR EACH ROW EXECUTE FUNCTION turns_totals();
CREATE TRIGGER turns_totals_delete AFTER DELETE ON turns
    FOR EACH ROW EXECUTE FUNCTION turns_totals();
CREATE TRIGGER turns_totals_update
    AFTER UPDATE OF channel_id, role, status, prompt_tokens, output_tokens ON turns
    FOR EACH ROW EXECUTE FUNCTION turns_totals();

CREATE TABLE reply_totals (
    channel_id      BIGINT PRIMARY KEY,
    replies         BIGINT NOT NULL,
    first_chunk_n   BIGINT NOT NULL,
    first_chunk_sum DOUBLE PRECISION NOT NULL,
    total_time_sum  DOUBLE PRECISION NOT NULL
);

CREATE FUNCTION reply_totals_add(ch BIGINT, n BIGINT, fn BIGINT, fs DOUBLE PRECISION,
                                 ts DOUBLE PRECISION)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO reply_totals (channel_id, replies, first_chunk_n, first_chunk_sum, total_time_sum)
    VALUES (ch, n, fn, fs, ts)
    ON CONFLICT (channel_id) DO UPDATE
       SET replies = reply_totals.replies + excluded.replies,
           first_chunk_n = reply_totals.first_chunk_n + excluded.first_chunk_n,
           first_chunk_sum = reply_totals.first_chunk_sum + excluded.first_chunk_sum,
           total_time_sum = reply_totals.total_time_sum + excluded.total_time_sum;
$$;

CREATE FUNCTION reply_metrics_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM reply_totals_add(OLD.channel_id, -1,
                                 -(OLD.first_chunk_latency IS NOT NULL)::int,
                                 -coalesce(OLD.first_chunk_latency, 0), -OLD.total_time);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM reply_totals_add(NEW.channel_id, 1, (NEW.first_chunk_latency IS NOT NULL)::int,
                                 coalesce(NEW.first_chunk_latency, 0), NEW.total_time);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER reply_metrics_totals_insert AFTER INSERT ON reply_metrics
    FOR EACH ROW EXECUTE FUNCTION reply_metrics_totals();
CREATE TRIGGER reply_metrics_totals_delete AFTER DELETE ON reply_metrics
    FOR EACH ROW EXECUTE FUNCTION reply_metrics_totals();
CREATE TRIGGER reply_metrics_totals_update
    AFTER UPDATE OF channel_id, first_chunk_latency, total_time ON reply_metrics
    FOR EACH ROW EXECUTE FUNCTION reply_metrics_totals();
