-- The key-value store of component agents, one namespace per tenant and agent.
CREATE TABLE agent_kv (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    agent       TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent, key)
);
