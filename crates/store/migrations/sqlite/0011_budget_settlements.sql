-- Holds already settled, so a settlement retried after a lost answer charges once, and a
-- call whose hold expired before it finished is still charged (its hold row is gone, this
-- one says whether it was settled). Kept for a day.
CREATE TABLE budget_settlements (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    settled_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX budget_settlements_age ON budget_settlements(tenant_id, settled_at);
