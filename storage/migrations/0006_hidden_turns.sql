-- 0006: turns kept in the file but never again shown to the model. `hidden`:
--   'replaced' - a reply regenerated with a new answer (kept for `/history`, marked so);
--   'private'  - an exchange only its asker saw (a private summary): neither the channel's
--                history nor its exports show it.
-- A column added with ALTER TABLE, so `turns` is not rebuilt; NULL for every existing turn.

ALTER TABLE turns ADD COLUMN hidden TEXT CHECK (hidden IN ('replaced', 'private'));
