-- Each tenant's MCP servers: where they are, which vault secrets become which request
-- headers (names only, never values), the tools last discovered and the last health check.
CREATE TABLE mcp_servers (
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    url              TEXT NOT NULL,
    headers          TEXT NOT NULL,
    tools            TEXT NOT NULL,
    status           TEXT NOT NULL,
    protocol_version TEXT,
    last_error       TEXT,
    checked_at       BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

ALTER TABLE mcp_servers ENABLE ROW LEVEL SECURITY;
ALTER TABLE mcp_servers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON mcp_servers
    USING (tenant_id = current_setting('berth.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('berth.tenant_id', true));

-- Approvals of calls made through the tenant's /mcp endpoint belong to no run.
ALTER TABLE approvals ALTER COLUMN run_id DROP NOT NULL;
