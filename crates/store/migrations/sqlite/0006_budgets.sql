-- Budgets: per tenant, scope and period, what was spent and what in-flight calls hold.
-- Reservations change `reserved` with a conditional update, so concurrent calls can never
-- together hold more than a hard budget allows.
CREATE TABLE budget_counters (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    budget      TEXT NOT NULL,      -- "<scope>|<period>", e.g. "agent:support|2026-12"
    spent_nano  BIGINT NOT NULL DEFAULT 0,
    reserved_nano BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, budget)
);

-- One row per budget a call holds; released when the call settles or its time runs out.
CREATE TABLE budget_holds (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    budget      TEXT NOT NULL,
    amount_nano BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id, budget),
    FOREIGN KEY (tenant_id, budget) REFERENCES budget_counters(tenant_id, budget) ON DELETE CASCADE
);
CREATE INDEX budget_holds_expiry ON budget_holds(tenant_id, expires_at);
