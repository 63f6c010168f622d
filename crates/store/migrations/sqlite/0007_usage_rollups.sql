-- One-minute rollups of usage events, kept in the same transaction as the events they sum,
-- so reports over whole minutes (days, months, invoices) read rollups instead of events.
-- Absent dimensions are '' (key columns cannot be NULL).
CREATE TABLE usage_rollups (
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    minute        BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    agent         TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    events        BIGINT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nano     BIGINT NOT NULL,
    latency_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute, kind, key_id, agent, provider, model)
);

INSERT INTO usage_rollups (tenant_id, minute, kind, key_id, agent, provider, model,
                           events, input_tokens, output_tokens, cost_nano, latency_ms)
SELECT tenant_id, (at / 60000) * 60000, kind, COALESCE(key_id, ''), COALESCE(agent, ''),
       COALESCE(provider, ''), COALESCE(model, ''), COUNT(*), SUM(input_tokens),
       SUM(output_tokens), SUM(cost_nano), SUM(latency_ms)
FROM usage_events
GROUP BY tenant_id, (at / 60000) * 60000, kind, COALESCE(key_id, ''), COALESCE(agent, ''),
         COALESCE(provider, ''), COALESCE(model, '');
