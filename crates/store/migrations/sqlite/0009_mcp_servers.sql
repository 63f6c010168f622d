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

-- Approvals of calls made through the tenant's /mcp endpoint belong to no run: run_id
-- becomes nullable (SQLite changes a column's constraint only by rebuilding the table).
CREATE TABLE approvals_new (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    run_id      TEXT,
    agent       TEXT NOT NULL,
    tool        TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    key_id      TEXT,
    status      TEXT NOT NULL,
    reason      TEXT,
    decided_by  TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs(tenant_id, id) ON DELETE CASCADE
);
INSERT INTO approvals_new SELECT tenant_id, id, run_id, agent, tool, call_id, arguments, key_id,
    status, reason, decided_by, created_at, expires_at, decided_at FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_new RENAME TO approvals;
CREATE INDEX approvals_tenant_status ON approvals(tenant_id, status, created_at);
CREATE INDEX approvals_tenant_run ON approvals(tenant_id, run_id);
