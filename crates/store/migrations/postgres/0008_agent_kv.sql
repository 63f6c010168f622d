-- The key-value store of component agents, one namespace per tenant and agent.
CREATE TABLE agent_kv (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent       TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent, key)
);

ALTER TABLE agent_kv ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_kv FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agent_kv
    USING (tenant_id = current_setting('berth.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('berth.tenant_id', true));
