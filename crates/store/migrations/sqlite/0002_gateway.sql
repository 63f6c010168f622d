-- Gateway: tenant policy documents, tenant providers (bring your own key), usage events.
CREATE TABLE policies (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    revision    BIGINT NOT NULL,
    document    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE providers (
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    base_url        TEXT,
    api_key_secret  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- One row per billable event; `id` is the idempotency key, so a retried write counts once.
CREATE TABLE usage_events (
    tenant_id           TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    id                  TEXT NOT NULL,
    at                  BIGINT NOT NULL,
    kind                TEXT NOT NULL,
    key_id              TEXT,
    agent               TEXT,
    tags                TEXT,
    provider            TEXT,
    model               TEXT,
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    cached_input_tokens BIGINT NOT NULL DEFAULT 0,
    cost_nano           BIGINT NOT NULL DEFAULT 0,
    latency_ms          BIGINT NOT NULL DEFAULT 0,
    status              TEXT NOT NULL,
    streamed            BOOLEAN NOT NULL DEFAULT FALSE,
    estimated           BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX usage_events_tenant_at ON usage_events(tenant_id, at);
