-- Who started a run (and so owns its approvals), as its audit actor (`key:key_…`,
-- `jwt:<subject>`): a JWT caller has no key id, and an invoker may cancel or decide only
-- what it started. Rows from before this migration fall back to their key id.
ALTER TABLE runs ADD COLUMN started_by TEXT;
ALTER TABLE approvals ADD COLUMN started_by TEXT;
