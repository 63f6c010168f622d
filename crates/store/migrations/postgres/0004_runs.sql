-- Runs, their trace steps, and conversation threads.
CREATE TABLE threads (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    agent       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE thread_messages (
    tenant_id   TEXT NOT NULL,
    thread_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    message     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, thread_id, seq),
    FOREIGN KEY (tenant_id, thread_id) REFERENCES threads(tenant_id, id) ON DELETE CASCADE
);

-- Runs stay when their agent is deleted: they are what usage and bills refer to.
CREATE TABLE runs (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    agent       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    thread_id   TEXT,
    key_id      TEXT,
    status      TEXT NOT NULL,
    output      TEXT,
    error       TEXT,
    usage       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX runs_tenant_created ON runs(tenant_id, created_at);

CREATE TABLE run_steps (
    tenant_id   TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs(tenant_id, id) ON DELETE CASCADE
);

ALTER TABLE threads ENABLE ROW LEVEL SECURITY;
ALTER TABLE threads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON threads
    USING (tenant_id = current_setting('berth.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('berth.tenant_id', true));

ALTER TABLE thread_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE thread_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON thread_messages
    USING (tenant_id = current_setting('berth.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('berth.tenant_id', true));

ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON runs
    USING (tenant_id = current_setting('berth.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('berth.tenant_id', true));

ALTER TABLE run_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON run_steps
    USING (tenant_id = current_setting('berth.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('berth.tenant_id', true));
