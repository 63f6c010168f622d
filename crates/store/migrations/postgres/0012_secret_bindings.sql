-- Where each secret may be injected (JSON array of destinations; NULL: unbound) and the
-- role of whoever wrote its value; the role of whoever last registered each MCP server.
-- Rows written before have no role: a secret then counts as written by an admin, a server
-- as registered by a developer, so an old secret reaches an old server only once it is
-- written again or bound to the server's host (fail closed).
ALTER TABLE secrets ADD COLUMN binding TEXT;
ALTER TABLE secrets ADD COLUMN writer_role TEXT;
ALTER TABLE mcp_servers ADD COLUMN registered_role TEXT;
