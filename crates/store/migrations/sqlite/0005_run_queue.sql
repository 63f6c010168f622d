-- Asynchronous and resumable runs: what a queued run was asked, where a paused run stands,
-- and the lease that tells a live run from one whose process died.
ALTER TABLE runs ADD COLUMN request TEXT;
ALTER TABLE runs ADD COLUMN checkpoint TEXT;
ALTER TABLE runs ADD COLUMN lease_until BIGINT;
CREATE INDEX runs_tenant_status ON runs(tenant_id, status, created_at);

-- Tool calls waiting for (or given) a human decision.
CREATE TABLE approvals (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    run_id      TEXT NOT NULL,
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
CREATE INDEX approvals_tenant_status ON approvals(tenant_id, status, created_at);
CREATE INDEX approvals_tenant_run ON approvals(tenant_id, run_id);

-- Model calls made by runs name the run and the agent version.
ALTER TABLE usage_events ADD COLUMN run_id TEXT;
ALTER TABLE usage_events ADD COLUMN agent_version BIGINT;
