-- 0008 (PostgreSQL): a model turn's parts as Gemini sent them (JSON text, signatures in
-- base64), the Google searches it made (JSON text), and its thinking tokens, kept per turn and
-- in the per-channel totals. Mirrors ../0008_model_parts.sql. The JSON stays TEXT, as in
-- SQLite, so `gemcord migrate` copies and checks it byte for byte.

ALTER TABLE turns
    ADD COLUMN parts           TEXT,
    ADD COLUMN searches        TEXT,
    ADD COLUMN thoughts_tokens BIGINT;

ALTER TABLE turn_totals ADD COLUMN thoughts_tokens BIGINT NOT NULL DEFAULT 0;

DROP FUNCTION turn_totals_add(BIGINT, TEXT, TEXT, BIGINT, BIGINT, BIGINT);

CREATE FUNCTION turn_totals_add(ch BIGINT, r TEXT, s TEXT, n BIGINT, p BIGINT, o BIGINT,
                                th BIGINT)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens,
                             thoughts_tokens)
    VALUES (ch, r, s, n, p, o, th)
    ON CONFLICT (channel_id, role, status) DO UPDATE
       SET turns = turn_totals.turns + excluded.turns,
           prompt_tokens = turn_totals.prompt_tokens + excluded.prompt_tokens,
           output_tokens = turn_totals.output_tokens + excluded.output_tokens,
           thoughts_tokens = turn_totals.thoughts_tokens + excluded.thoughts_tokens;
$$;

CREATE OR REPLACE FUNCTION turns_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM turn_totals_add(OLD.channel_id, OLD.role, OLD.status, -1,
                                -coalesce(OLD.prompt_tokens, 0), -coalesce(OLD.output_tokens, 0),
                                -coalesce(OLD.thoughts_tokens, 0));
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM turn_totals_add(NEW.channel_id, NEW.role, NEW.status, 1,
                                coalesce(NEW.prompt_tokens, 0), coalesce(NEW.output_tokens, 0),
                                coalesce(NEW.thoughts_tokens, 0));
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER turns_totals_update ON turns;
CREATE TRIGGER turns_totals_update
    AFTER UPDATE OF channel_id, role, status, prompt_tokens, output_tokens, thoughts_tokens
    ON turns FOR EACH ROW EXECUTE FUNCTION turns_totals();
