-- 0006 (PostgreSQL): turns kept but never again shown to the model ('replaced': a regenerated
-- reply; 'private': an exchange only its asker saw). Mirrors ../0006_hidden_turns.sql.

ALTER TABLE turns ADD COLUMN hidden TEXT
    CONSTRAINT turns_hidden_check CHECK (hidden IN ('replaced', 'private'));
