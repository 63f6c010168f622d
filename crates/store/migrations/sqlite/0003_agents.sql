-- Agents: immutable, content-addressed versions and the traffic pointer over them.
CREATE TABLE agents (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE agent_versions (
    tenant_id   TEXT NOT NULL,
    agent       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    digest      TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    bundle      BLOB,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent, version),
    UNIQUE (tenant_id, agent, digest),
    FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name) ON DELETE CASCADE
);

-- split: JSON [{"version": 3, "weight": 90}, ...]; pins: JSON [{"key": "key_…", "version": 4}];
-- previous_full: the version that held 100% before the current traffic (rollback target).
CREATE TABLE agent_traffic (
    tenant_id     TEXT NOT NULL,
    agent         TEXT NOT NULL,
    split         TEXT NOT NULL,
    pins          TEXT NOT NULL,
    previous_full BIGINT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent),
    FOREIGN KEY (tenant_id, agent) REFERENCES agents(tenant_id, name) ON DELETE CASCADE
);
