-- 0008: a model turn's parts as Gemini sent them (answer text, thought summaries, code and its
-- output, each with its thought signature, which goes back to the same model byte for byte),
-- the Google searches it made (its Search Suggestions), and the tokens the model spent
-- thinking, kept per turn and in the per-channel totals.

ALTER TABLE turns ADD COLUMN parts TEXT;  -- JSON list of {kind, text, signature (base64), detail}
ALTER TABLE turns ADD COLUMN searches TEXT;  -- JSON list of search queries
ALTER TABLE turns ADD COLUMN thoughts_tokens INTEGER;

ALTER TABLE turn_totals ADD COLUMN thoughts_tokens INTEGER NOT NULL DEFAULT 0;

DROP TRIGGER turns_totals_insert;
DROP TRIGGER turns_totals_delete;
DROP TRIGGER turns_totals_update;

CREATE TRIGGER turns_totals_insert AFTER INSERT ON turns BEGIN
    INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens,
                             thoughts_tokens)
    VALUES (NEW.channel_id, NEW.role, NEW.status, 1, coalesce(NEW.prompt_tokens, 0),
            coalesce(NEW.output_tokens, 0), coalesce(NEW.thoughts_tokens, 0))
    ON CONFLICT (channel_id, role, status) DO UPDATE
       SET turns = turns + 1,
           prompt_tokens = prompt_tokens + excluded.prompt_tokens,
           output_tokens = output_tokens + excluded.output_tokens,
           thoughts_tokens = thoughts_tokens + excluded.thoughts_tokens;
END;

CREATE TRIGGER turns_totals_delete AFTER DELETE ON turns BEGIN
    UPDATE turn_totals
       SET turns = turns - 1,
           prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
           output_tokens = output_tokens - coalesce(OLD.output_tokens, 0),
           thoughts_tokens = thoughts_tokens - coalesce(OLD.thoughts_tokens, 0)
     WHERE channel_id = OLD.channel_id AND role = OLD.role AND status = OLD.status;
END;

CREATE TRIGGER turns_totals_update
AFTER UPDATE OF channel_id, role, status, prompt_tokens, output_tokens, thoughts_tokens
ON turns BEGIN
    UPDATE turn_totals
       SET turns = turns - 1,
           prompt_tokens = prompt_tokens - coalesce(OLD.prompt_tokens, 0),
           output_tokens = output_tokens - coalesce(OLD.output_tokens, 0),
           thoughts_tokens = thoughts_tokens - coalesce(OLD.thoughts_tokens, 0)
     WHERE channel_id = OLD.channel_id AND role = OLD.role AND status = OLD.status;
    INSERT INTO turn_totals (channel_id, role, status, turns, prompt_tokens, output_tokens,
                             thoughts_tokens)
    VALUES (NEW.channel_id, NEW.role, NEW.status, 1, coalesce(NEW.prompt_tokens, 0),
            coalesce(NEW.output_tokens, 0), coalesce(NEW.thoughts_tokens, 0))
    ON CONFLICT (channel_id, role, status) DO UPDATE
       SET turns = turns + 1,
           prompt_tokens = prompt_tokens + excluded.prompt_tokens,
           output_tokens = output_tokens + excluded.output_tokens,
           thoughts_tokens = thoughts_tokens + excluded.thoughts_tokens;
END;
