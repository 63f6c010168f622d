//! The SQL both backends share, written once and expanded for each driver by a macro.
//!
//! SQLite and PostgreSQL accept the same statements here (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`); what differs (how a transaction is opened and scoped, how the audit
//! chain is locked and appended to) is supplied by each backend as inherent methods
//! `begin`, `lock_audit_chain` and `append_after_head`.

/// Implements every storage trait for `$store`, whose driver is `$db`.
macro_rules! impl_store {
    ($store:ident, $db:ty) => {
        mod sql {
        #[allow(unused_imports)]
        use super::*;
        use super::$store;
        use async_trait::async_trait;
        use berth_audit::{Entry, NewEntry};
        use berth_core::clock::now_ms;
        use berth_core::{Role, TenantId, TenantScope};
        use sqlx::Row;
        use $crate::model::*;
        use $crate::shared::TxKind;
        use $crate::{
            AgentStore, AuditHead, AuditStore, BudgetStore, KeyStore, KvStore, McpServerStore, PolicyStore, ProviderStore, Result, RunStore, SecretStore,
            StoreError, TenantRegistry, UsageStore,
        };

        type Tx = sqlx::Transaction<'static, $db>;

        fn tenant_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Tenant> {
            let id: String = row.try_get("id")?;
            Ok(Tenant {
                id: TenantId::parse(&id)
                    .ok_or_else(|| StoreError::Corrupt(format!("tenant id {id:?}")))?,
                name: row.try_get("name")?,
                plan: row.try_get("plan")?,
                suspended: row.try_get("suspended")?,
                created_at_ms: row.try_get("created_at")?,
            })
        }

        fn key_from_row(row: &<$db as sqlx::Database>::Row) -> Result<ApiKey> {
            let role: String = row.try_get("role")?;
            Ok(ApiKey {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                role: role
                    .parse::<Role>()
                    .map_err(StoreError::Corrupt)?,
                agent: row.try_get("agent")?,
                prefix: row.try_get("prefix")?,
                expires_at_ms: row.try_get("expires_at")?,
                revoked_at_ms: row.try_get("revoked_at")?,
                created_at_ms: row.try_get("created_at")?,
            })
        }

        fn audit_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Entry> {
            let details: String = row.try_get("details")?;
            Ok(Entry {
                seq: row.try_get("seq")?,
                at_ms: row.try_get("at")?,
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                details: serde_json::from_str(&details)
                    .map_err(|e| StoreError::Corrupt(format!("audit details: {e}")))?,
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        }

        const TENANT_COLS: &str = "id, name, plan, suspended, created_at";
        const KEY_COLS: &str =
            "id, name, role, agent, prefix, expires_at, revoked_at, created_at";

        /// Appends `entry` to the tenant's chain inside `tx`, so a change and its audit
        /// entry commit or roll back together.
        async fn append_in_tx(tx: &mut Tx, tenant: &str, entry: &NewEntry) -> Result<Entry> {
            append_many_in_tx(tx, tenant, std::slice::from_ref(entry))
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("an appended audit entry was not returned".into()))
        }

        /// Appends `entries`, in order, to the tenant's chain inside `tx`: one chain lock,
        /// one read of the head and one `INSERT` per hundred entries, however many there are.
        async fn append_many_in_tx(tx: &mut Tx, tenant: &str, entries: &[NewEntry]) -> Result<Vec<Entry>> {
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            <$store>::lock_audit_chain(tx, tenant).await?;
            let head = sqlx::query(
                "SELECT seq, hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(tenant)
            .fetch_optional(&mut **tx)
            .await?;
            let head = match head {
                Some(row) => AuditHead { seq: row.try_get("seq")?, hash: row.try_get("hash")? },
                None => AuditHead::genesis(),
            };
            let stored = chain_after(tenant, &head, entries);
            for chunk in stored.chunks(INSERT_ROWS) {
                insert_audit_rows(&mut **tx, tenant, chunk).await?;
            }
            Ok(stored)
        }

        /// Nine parameters a row: this many rows stay far below either driver's limit.
        pub(super) const INSERT_ROWS: usize = 100;

        /// `entries` hashed into the tenant's chain after `head`.
        pub(super) fn chain_after(tenant: &str, head: &AuditHead, entries: &[NewEntry]) -> Vec<Entry> {
            let (mut seq, mut prev_hash) = (head.seq, head.hash.clone());
            let now = now_ms();
            let mut stored = Vec::with_capacity(entries.len());
            for entry in entries {
                seq += 1;
                let at = entry.at_ms.unwrap_or(now);
                let hash = berth_audit::entry_hash(tenant, seq, at, entry, &prev_hash);
                stored.push(Entry {
                    seq,
                    at_ms: at,
                    actor: entry.actor.clone(),
                    action: entry.action.clone(),
                    target: entry.target.clone(),
                    details: entry.details.clone(),
                    prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                    hash,
                });
            }
            stored
        }

        /// One multi-row `INSERT` of at most `INSERT_ROWS` chained entries. A row whose
        /// `seq` is taken fails the whole statement (the primary key is `(tenant_id, seq)`).
        pub(super) async fn insert_audit_rows(
            conn: &mut <$db as sqlx::Database>::Connection,
            tenant: &str,
            rows: &[Entry],
        ) -> std::result::Result<(), sqlx::Error> {
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO audit_log (tenant_id, seq, at, actor, action, target, details, prev_hash, hash) ",
            );
            qb.push_values(rows, |mut b, e| {
                b.push_bind(tenant)
                    .push_bind(e.seq)
                    .push_bind(e.at_ms)
                    .push_bind(&e.actor)
                    .push_bind(&e.action)
                    .push_bind(&e.target)
                    .push_bind(e.details.to_string())
                    .push_bind(&e.prev_hash)
                    .push_bind(&e.hash);
            });
            qb.build().execute(conn).await?;
            Ok(())
        }

        /// The `(created_at, id)` a newest-first page continues below: from the cursor
        /// `"<created_at>:<id>"`, or above everything for the first page.
        fn newest_first_cursor(page: &PageRequest) -> (i64, String) {
            page.cursor
                .as_deref()
                .and_then(|c| c.split_once(':'))
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
                .unwrap_or((i64::MAX, "\u{10FFFF}".to_owned()))
        }

        fn limit_plus_one(page: &PageRequest) -> i64 {
            page.limit.clamp(1, PageRequest::MAX_LIMIT) + 1
        }

        #[async_trait]
        impl TenantRegistry for $store {
            async fn create_tenant(&self, tenant: &Tenant, audit: &NewEntry) -> Result<()> {
                let mut tx = self.begin(TxKind::OperatorOn(tenant.id.as_str()), true).await?;
                sqlx::query(
                    "INSERT INTO tenants (id, name, plan, suspended, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(tenant.id.as_str())
                .bind(&tenant.name)
                .bind(&tenant.plan)
                .bind(tenant.suspended)
                .bind(tenant.created_at_ms)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::from_write(e, "a tenant with this name exists"))?;
                append_in_tx(&mut tx, tenant.id.as_str(), audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
                let mut tx = self.begin(TxKind::Operator, false).await?;
                let rows = sqlx::query(&format!(
                    "SELECT {TENANT_COLS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(page.cursor.as_deref().unwrap_or(""))
                .bind(limit_plus_one(page))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let tenants = rows.iter().map(tenant_from_row).collect::<Result<Vec<_>>>()?;
                Ok(Page::from_rows(tenants, page.limit, |t| t.id.to_string()))
            }

            async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
                let mut tx = self.begin(TxKind::OperatorOn(id.as_str()), false).await?;
                let row = sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.as_ref().map(tenant_from_row).transpose()
            }

            async fn find_tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
                let mut tx = self.begin(TxKind::Operator, false).await?;
                let row =
                    sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE name = $1"))
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.commit().await?;
                row.as_ref().map(tenant_from_row).transpose()
            }

            async fn update_tenant(
                &self,
                scope: &TenantScope,
                patch: &TenantPatch,
                audit: &NewEntry,
            ) -> Result<Tenant> {
                let mut tx = self.begin(TxKind::OperatorOn(scope.tenant_str()), true).await?;
                let row = sqlx::query(&format!(
                    "UPDATE tenants SET name = COALESCE($1, name), plan = COALESCE($2, plan), \
                     suspended = COALESCE($3, suspended) WHERE id = $4 RETURNING {TENANT_COLS}"
                ))
                .bind(patch.name.as_deref())
                .bind(patch.plan.as_deref())
                .bind(patch.suspended)
                .bind(scope.tenant_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| StoreError::from_write(e, "a tenant with this name exists"))?
                .ok_or(StoreError::NotFound)?;
                let tenant = tenant_from_row(&row)?;
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(tenant)
            }

            async fn delete_tenant(&self, scope: &TenantScope) -> Result<()> {
                let mut tx = self.begin(TxKind::OperatorOn(scope.tenant_str()), true).await?;
                // Children first, explicitly, so nothing depends on cascade behaviour.
                for table in [
                    "agent_kv",
                    "usage_rollups",
                    "budget_holds",
                    "budget_counters",
                    "approvals",
                    "run_steps",
                    "runs",
                    "thread_messages",
                    "threads",
                    "agent_traffic",
                    "agent_versions",
                    "agents",
                    "usage_events",
                    "providers",
                    "mcp_servers",
                    "policies",
                    "key_index",
                    "audit_log",
                    "secrets",
                    "tenant_data_keys",
                    "api_keys",
                ] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                        .bind(scope.tenant_str())
                        .execute(&mut *tx)
                        .await?;
                }
                let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
                    .bind(scope.tenant_str())
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait]
        impl KeyStore for $store {
            async fn create_key(
                &self,
                scope: &TenantScope,
                key: &NewApiKey,
                audit: &NewEntry,
            ) -> Result<ApiKey> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let row = sqlx::query(&format!(
                    "INSERT INTO api_keys (id, tenant_id, name, role, agent, prefix, expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLS}"
                ))
                .bind(&key.id)
                .bind(scope.tenant_str())
                .bind(&key.name)
                .bind(key.role.as_str())
                .bind(key.agent.as_deref())
                .bind(&key.prefix)
                .bind(key.expires_at_ms)
                .bind(key.created_at_ms)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| StoreError::from_write(e, "key id collision"))?;
                sqlx::query("INSERT INTO key_index (hash, tenant_id, key_id) VALUES ($1, $2, $3)")
                    .bind(&key.hash)
                    .bind(scope.tenant_str())
                    .bind(&key.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| StoreError::from_write(e, "key hash collision"))?;
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                key_from_row(&row)
            }

            async fn list_keys(
                &self,
                scope: &TenantScope,
                page: &PageRequest,
            ) -> Result<Page<ApiKey>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(&format!(
                    "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(scope.tenant_str())
                .bind(page.cursor.as_deref().unwrap_or(""))
                .bind(limit_plus_one(page))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>>>()?;
                Ok(Page::from_rows(keys, page.limit, |k| k.id.clone()))
            }

            async fn revoke_key(
                &self,
                scope: &TenantScope,
                key_id: &str,
                audit: &NewEntry,
            ) -> Result<ApiKey> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let row = sqlx::query(&format!(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE tenant_id = $2 AND id = $3 RETURNING {KEY_COLS}"
                ))
                .bind(now_ms())
                .bind(scope.tenant_str())
                .bind(key_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
                sqlx::query("DELETE FROM key_index WHERE tenant_id = $1 AND key_id = $2")
                    .bind(scope.tenant_str())
                    .bind(key_id)
                    .execute(&mut *tx)
                    .await?;
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                key_from_row(&row)
            }

            async fn lookup_key_hash(&self, hash: &str) -> Result<Option<KeyGrant>> {
                let mut tx = self.begin(TxKind::Auth, false).await?;
                let Some(index) =
                    sqlx::query("SELECT tenant_id, key_id FROM key_index WHERE hash = $1")
                        .bind(hash)
                        .fetch_optional(&mut *tx)
                        .await?
                else {
                    return Ok(None);
                };
                let tenant_id: String = index.try_get("tenant_id")?;
                let key_id: String = index.try_get("key_id")?;
                // From here on the transaction is scoped to the tenant the hash names.
                <$store>::scope_tx(&mut tx, &tenant_id).await?;
                let tenant_row =
                    sqlx::query(&format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1"))
                        .bind(&tenant_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let key_row = sqlx::query(&format!(
                    "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(&tenant_id)
                .bind(&key_id)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                match (tenant_row, key_row) {
                    (Some(t), Some(k)) => Ok(Some(KeyGrant {
                        tenant: tenant_from_row(&t)?,
                        key: key_from_row(&k)?,
                    })),
                    _ => Ok(None),
                }
            }
        }

        #[async_trait]
        impl SecretStore for $store {
            async fn data_key(&self, scope: &TenantScope) -> Result<Option<WrappedKey>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let row = sqlx::query(
                    "SELECT nonce, wrapped FROM tenant_data_keys WHERE tenant_id = $1",
                )
                .bind(scope.tenant_str())
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row.map(|r| {
                    Ok(WrappedKey {
                        nonce: r.try_get("nonce")?,
                        wrapped: r.try_get("wrapped")?,
                    })
                })
                .transpose()
            }

            async fn insert_data_key(
                &self,
                scope: &TenantScope,
                key: &WrappedKey,
            ) -> Result<WrappedKey> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query(
                    "INSERT INTO tenant_data_keys (tenant_id, nonce, wrapped, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
                )
                .bind(scope.tenant_str())
                .bind(&key.nonce)
                .bind(&key.wrapped)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                let row = sqlx::query(
                    "SELECT nonce, wrapped FROM tenant_data_keys WHERE tenant_id = $1",
                )
                .bind(scope.tenant_str())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(WrappedKey {
                    nonce: row.try_get("nonce")?,
                    wrapped: row.try_get("wrapped")?,
                })
            }

            async fn put_secret(
                &self,
                scope: &TenantScope,
                secret: &SealedSecret,
                audit: &NewEntry,
            ) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query(
                    "INSERT INTO secrets (tenant_id, name, nonce, ciphertext, created_at, updated_at, binding, writer_role) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (tenant_id, name) DO UPDATE SET nonce = excluded.nonce, \
                     ciphertext = excluded.ciphertext, updated_at = excluded.updated_at, \
                     binding = excluded.binding, writer_role = excluded.writer_role",
                )
                .bind(scope.tenant_str())
                .bind(&secret.name)
                .bind(&secret.nonce)
                .bind(&secret.ciphertext)
                .bind(secret.created_at_ms)
                .bind(secret.updated_at_ms)
                .bind(secret.binding.as_deref())
                .bind(secret.writer_role.as_deref())
                .execute(&mut *tx)
                .await?;
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_secret(
                &self,
                scope: &TenantScope,
                name: &str,
            ) -> Result<Option<SealedSecret>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let row = sqlx::query(
                    "SELECT name, nonce, ciphertext, binding, writer_role, created_at, updated_at FROM secrets \
                     WHERE tenant_id = $1 AND name = $2",
                )
                .bind(scope.tenant_str())
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row.map(|r| {
                    Ok(SealedSecret {
                        name: r.try_get("name")?,
                        nonce: r.try_get("nonce")?,
                        ciphertext: r.try_get("ciphertext")?,
                        binding: r.try_get("binding")?,
                        writer_role: r.try_get("writer_role")?,
                        created_at_ms: r.try_get("created_at")?,
                        updated_at_ms: r.try_get("updated_at")?,
                    })
                })
                .transpose()
            }

            async fn list_secrets(
                &self,
                scope: &TenantScope,
                page: &PageRequest,
            ) -> Result<Page<SecretMeta>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(
                    "SELECT name, binding, writer_role, created_at, updated_at FROM secrets \
                     WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3",
                )
                .bind(scope.tenant_str())
                .bind(page.cursor.as_deref().unwrap_or(""))
                .bind(limit_plus_one(page))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let metas = rows
                    .iter()
                    .map(|r| {
                        Ok(SecretMeta {
                            name: r.try_get("name")?,
                            binding: r.try_get("binding")?,
                            writer_role: r.try_get("writer_role")?,
                            created_at_ms: r.try_get("created_at")?,
                            updated_at_ms: r.try_get("updated_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_rows(metas, page.limit, |m| m.name.clone()))
            }

            async fn delete_secret(
                &self,
                scope: &TenantScope,
                name: &str,
                audit: &NewEntry,
            ) -> Result<bool> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
                    .bind(scope.tenant_str())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn set_secret_binding(
                &self,
                scope: &TenantScope,
                name: &str,
                binding: Option<&str>,
                audit: &NewEntry,
            ) -> Result<bool> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let done = sqlx::query("UPDATE secrets SET binding = $1 WHERE tenant_id = $2 AND name = $3")
                    .bind(binding)
                    .bind(scope.tenant_str())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(true)
            }
        }

        #[async_trait]
        impl PolicyStore for $store {
            async fn get_policy(&self, scope: &TenantScope) -> Result<Option<StoredPolicy>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let row = sqlx::query("SELECT revision, document, updated_at FROM policies WHERE tenant_id = $1")
                    .bind(scope.tenant_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.map(|r| {
                    Ok(StoredPolicy {
                        revision: r.try_get("revision")?,
                        document: r.try_get("document")?,
                        updated_at_ms: r.try_get("updated_at")?,
                    })
                })
                .transpose()
            }

            async fn put_policy(
                &self,
                scope: &TenantScope,
                document: &str,
                expected: Option<i64>,
                audit: &NewEntry,
            ) -> Result<StoredPolicy> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let current: i64 = sqlx::query_scalar("SELECT revision FROM policies WHERE tenant_id = $1")
                    .bind(scope.tenant_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .unwrap_or(0);
                if let Some(want) = expected
                    && want != current
                {
                    return Err(StoreError::Conflict(format!(
                        "the policy is at revision {current}, not {want}"
                    )));
                }
                let now = now_ms();
                let revision = current + 1;
                // The WHERE on the update makes a concurrent writer that read the same
                // revision lose instead of silently overwriting.
                let done = sqlx::query(
                    "INSERT INTO policies (tenant_id, revision, document, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id) DO UPDATE SET revision = excluded.revision, \
                     document = excluded.document, updated_at = excluded.updated_at \
                     WHERE policies.revision = $5",
                )
                .bind(scope.tenant_str())
                .bind(revision)
                .bind(document)
                .bind(now)
                .bind(current)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Conflict("the policy changed concurrently".to_owned()));
                }
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(StoredPolicy { revision, document: document.to_owned(), updated_at_ms: now })
            }
        }

        fn mcp_server_from_row(r: &<$db as sqlx::Database>::Row) -> Result<McpServerRecord> {
            Ok(McpServerRecord {
                name: r.try_get("name")?,
                url: r.try_get("url")?,
                headers: r.try_get("headers")?,
                tools: r.try_get("tools")?,
                status: r.try_get("status")?,
                protocol_version: r.try_get("protocol_version")?,
                last_error: r.try_get("last_error")?,
                checked_at_ms: r.try_get("checked_at")?,
                registered_role: r.try_get("registered_role")?,
                created_at_ms: r.try_get("created_at")?,
                updated_at_ms: r.try_get("updated_at")?,
            })
        }

        const MCP_SERVER_COLS: &str = "name, url, headers, tools, status, protocol_version, last_error, checked_at, created_at, updated_at, registered_role";

        #[async_trait]
        impl McpServerStore for $store {
            async fn put_mcp_server(&self, scope: &TenantScope, m: &McpServerRecord, audit: &NewEntry) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query(&format!(
                    "INSERT INTO mcp_servers (tenant_id, {MCP_SERVER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (tenant_id, name) DO UPDATE SET url = excluded.url, headers = excluded.headers, \
                     registered_role = excluded.registered_role, \
                     tools = excluded.tools, status = excluded.status, protocol_version = excluded.protocol_version, \
                     last_error = excluded.last_error, checked_at = excluded.checked_at, updated_at = excluded.updated_at"
                ))
                .bind(scope.tenant_str())
                .bind(&m.name)
                .bind(&m.url)
                .bind(&m.headers)
                .bind(&m.tools)
                .bind(&m.status)
                .bind(m.protocol_version.as_deref())
                .bind(m.last_error.as_deref())
                .bind(m.checked_at_ms)
                .bind(m.created_at_ms)
                .bind(m.updated_at_ms)
                .bind(m.registered_role.as_deref())
                .execute(&mut *tx)
                .await?;
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_mcp_server(&self, scope: &TenantScope, name: &str) -> Result<Option<McpServerRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let row = sqlx::query(&format!("SELECT {MCP_SERVER_COLS} FROM mcp_servers WHERE tenant_id = $1 AND name = $2"))
                    .bind(scope.tenant_str())
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.as_ref().map(mcp_server_from_row).transpose()
            }

            async fn list_mcp_servers(&self, scope: &TenantScope) -> Result<Vec<McpServerRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(&format!("SELECT {MCP_SERVER_COLS} FROM mcp_servers WHERE tenant_id = $1 ORDER BY name"))
                    .bind(scope.tenant_str())
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter().map(mcp_server_from_row).collect()
            }

            async fn record_mcp_check(&self, scope: &TenantScope, name: &str, c: &McpServerCheck) -> Result<bool> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let done = sqlx::query(
                    "UPDATE mcp_servers SET status = $1, tools = COALESCE($2, tools), \
                     protocol_version = COALESCE($3, protocol_version), last_error = $4, checked_at = $5 \
                     WHERE tenant_id = $6 AND name = $7",
                )
                .bind(&c.status)
                .bind(c.tools.as_deref())
                .bind(c.protocol_version.as_deref())
                .bind(c.last_error.as_deref())
                .bind(c.checked_at_ms)
                .bind(scope.tenant_str())
                .bind(name)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_mcp_server(&self, scope: &TenantScope, name: &str, audit: &NewEntry) -> Result<bool> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let done = sqlx::query("DELETE FROM mcp_servers WHERE tenant_id = $1 AND name = $2")
                    .bind(scope.tenant_str())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(true)
            }
        }

        fn provider_from_row(r: &<$db as sqlx::Database>::Row) -> Result<TenantProvider> {
            Ok(TenantProvider {
                name: r.try_get("name")?,
                kind: r.try_get("kind")?,
                base_url: r.try_get("base_url")?,
                api_key_secret: r.try_get("api_key_secret")?,
                created_at_ms: r.try_get("created_at")?,
                updated_at_ms: r.try_get("updated_at")?,
            })
        }

        const PROVIDER_COLS: &str = "name, kind, base_url, api_key_secret, created_at, updated_at";

        #[async_trait]
        impl ProviderStore for $store {
            async fn put_provider(&self, scope: &TenantScope, p: &TenantProvider, audit: &NewEntry) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query(
                    "INSERT INTO providers (tenant_id, name, kind, base_url, api_key_secret, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, name) DO UPDATE SET \
                     kind = excluded.kind, base_url = excluded.base_url, \
                     api_key_secret = excluded.api_key_secret, updated_at = excluded.updated_at",
                )
                .bind(scope.tenant_str())
                .bind(&p.name)
                .bind(&p.kind)
                .bind(p.base_url.as_deref())
                .bind(&p.api_key_secret)
                .bind(p.created_at_ms)
                .bind(p.updated_at_ms)
                .execute(&mut *tx)
                .await?;
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_provider(&self, scope: &TenantScope, name: &str) -> Result<Option<TenantProvider>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let row = sqlx::query(&format!("SELECT {PROVIDER_COLS} FROM providers WHERE tenant_id = $1 AND name = $2"))
                    .bind(scope.tenant_str())
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.as_ref().map(provider_from_row).transpose()
            }

            async fn list_providers(&self, scope: &TenantScope) -> Result<Vec<TenantProvider>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(&format!("SELECT {PROVIDER_COLS} FROM providers WHERE tenant_id = $1 ORDER BY name"))
                    .bind(scope.tenant_str())
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter().map(provider_from_row).collect()
            }

            async fn delete_provider(&self, scope: &TenantScope, name: &str, audit: &NewEntry) -> Result<bool> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let done = sqlx::query("DELETE FROM providers WHERE tenant_id = $1 AND name = $2")
                    .bind(scope.tenant_str())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                append_in_tx(&mut tx, scope.tenant_str(), audit).await?;
                tx.commit().await?;
                Ok(true)
            }
        }

        #[async_trait]
        impl UsageStore for $store {
            async fn insert_usage(&self, scope: &TenantScope, events: &[UsageEvent]) -> Result<u64> {
                if events.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let mut inserted = 0;
                // Chunks keep each statement under the drivers' bind-parameter limits.
                for chunk in events.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO usage_events (tenant_id, id, at, kind, key_id, agent, tags, provider, model, \
                         input_tokens, output_tokens, cached_input_tokens, cost_nano, latency_ms, status, streamed, estimated, run_id, agent_version) ",
                    );
                    qb.push_values(chunk, |mut b, e| {
                        b.push_bind(scope.tenant_str())
                            .push_bind(&e.id)
                            .push_bind(e.at_ms)
                            .push_bind(&e.kind)
                            .push_bind(e.key_id.as_deref())
                            .push_bind(e.agent.as_deref())
                            .push_bind(e.tags.as_deref())
                            .push_bind(e.provider.as_deref())
                            .push_bind(e.model.as_deref())
                            .push_bind(e.input_tokens)
                            .push_bind(e.output_tokens)
                            .push_bind(e.cached_input_tokens)
                            .push_bind(e.cost_nano)
                            .push_bind(e.latency_ms)
                            .push_bind(&e.status)
                            .push_bind(e.streamed)
                            .push_bind(e.estimated)
                            .push_bind(e.run_id.as_deref())
                            .push_bind(e.agent_version);
                    });
                    qb.push(" ON CONFLICT (tenant_id, id) DO NOTHING RETURNING id");
                    let fresh: std::collections::HashSet<String> = qb
                        .build_query_scalar::<String>()
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .collect();
                    inserted += fresh.len() as u64;
                    // Only events stored just now are added to their minute: a retried
                    // event is counted once in the rollups too.
                    type Group = (i64, String, String, String, String, String);
                    let mut groups: std::collections::BTreeMap<Group, [i64; 5]> = std::collections::BTreeMap::new();
                    for e in chunk.iter().filter(|e| fresh.contains(&e.id)) {
                        let key = (
                            e.at_ms.div_euclid(60_000) * 60_000,
                            e.kind.clone(),
                            e.key_id.clone().unwrap_or_default(),
                            e.agent.clone().unwrap_or_default(),
                            e.provider.clone().unwrap_or_default(),
                            e.model.clone().unwrap_or_default(),
                        );
                        let g = groups.entry(key).or_insert([0; 5]);
                        g[0] += 1;
                        g[1] += e.input_tokens;
                        g[2] += e.output_tokens;
                        g[3] += e.cost_nano;
                        g[4] += e.latency_ms;
                    }
                    if groups.is_empty() {
                        continue;
                    }
                    let mut up = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO usage_rollups (tenant_id, minute, kind, key_id, agent, provider, model, \
                         events, input_tokens, output_tokens, cost_nano, latency_ms) ",
                    );
                    up.push_values(groups.iter(), |mut b, (k, v)| {
                        b.push_bind(scope.tenant_str())
                            .push_bind(k.0)
                            .push_bind(k.1.clone())
                            .push_bind(k.2.clone())
                            .push_bind(k.3.clone())
                            .push_bind(k.4.clone())
                            .push_bind(k.5.clone())
                            .push_bind(v[0])
                            .push_bind(v[1])
                            .push_bind(v[2])
                            .push_bind(v[3])
                            .push_bind(v[4]);
                    });
                    up.push(
                        " ON CONFLICT (tenant_id, minute, kind, key_id, agent, provider, model) DO UPDATE SET \
                         events = usage_rollups.events + excluded.events, \
                         input_tokens = usage_rollups.input_tokens + excluded.input_tokens, \
                         output_tokens = usage_rollups.output_tokens + excluded.output_tokens, \
                         cost_nano = usage_rollups.cost_nano + excluded.cost_nano, \
                         latency_ms = usage_rollups.latency_ms + excluded.latency_ms",
                    );
                    up.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }

            async fn query_usage(&self, scope: &TenantScope, q: &UsageQuery) -> Result<Vec<UsageRow>> {
                // Whole minutes are read from the rollups; a range that cuts a minute reads
                // the events themselves.
                let aligned = |t: Option<i64>| t.is_none_or(|t| t.rem_euclid(60_000) == 0);
                let rollups = aligned(q.from_ms) && aligned(q.to_ms);
                let (table, at, count) = if rollups {
                    ("usage_rollups", "minute", "events")
                } else {
                    ("usage_events", "at", "1")
                };
                let dims: Vec<String> = q
                    .group_by
                    .iter()
                    .enumerate()
                    .map(|(i, d)| format!("{} AS d{i}", if rollups { d.rollup_column() } else { d.column() }))
                    .collect();
                let group: Vec<String> = (0..q.group_by.len()).map(|i| format!("d{i}")).collect();
                let sum = |expr: &str| format!("CAST(COALESCE(SUM({expr}), 0) AS BIGINT)");
                let mut select = dims.clone();
                select.push(format!("{} AS events", sum(count)));
                // Requests are calls made (model and embedding calls); a run is counted as a run.
                select.push(format!("{} AS requests", sum(&format!("CASE WHEN kind = 'llm' OR kind = 'embedding' THEN {count} ELSE 0 END"))));
                select.push(format!("{} AS input_tokens", sum("input_tokens")));
                select.push(format!("{} AS output_tokens", sum("output_tokens")));
                select.push(format!("{} AS llm_calls", sum(&format!("CASE WHEN kind = 'llm' OR kind = 'embedding' THEN {count} ELSE 0 END"))));
                select.push(format!("{} AS tool_calls", sum(&format!("CASE WHEN kind = 'tool' THEN {count} ELSE 0 END"))));
                select.push(format!("{} AS runs", sum(&format!("CASE WHEN kind = 'run' THEN {count} ELSE 0 END"))));
                select.push(format!("{} AS compute_ms", sum("CASE WHEN kind = 'compute' THEN latency_ms ELSE 0 END")));
                select.push(format!("{} AS cost_nano", sum("cost_nano")));
                let mut sql = format!(
                    "SELECT {} FROM {table} WHERE tenant_id = $1 AND {at} >= $2 AND {at} < $3",
                    select.join(", ")
                );
                if !group.is_empty() {
                    sql.push_str(&format!(" GROUP BY {g} ORDER BY {g}", g = group.join(", ")));
                }
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(&sql)
                    .bind(scope.tenant_str())
                    .bind(q.from_ms.unwrap_or(i64::MIN))
                    .bind(q.to_ms.unwrap_or(i64::MAX))
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let events: i64 = r.try_get("events")?;
                    if events == 0 {
                        continue; // an ungrouped query over no events
                    }
                    let mut dims = Vec::with_capacity(q.group_by.len());
                    for (i, d) in q.group_by.iter().enumerate() {
                        dims.push((*d, r.try_get::<Option<String>, _>(format!("d{i}").as_str())?));
                    }
                    out.push(UsageRow {
                        dims,
                        requests: r.try_get("requests")?,
                        input_tokens: r.try_get("input_tokens")?,
                        output_tokens: r.try_get("output_tokens")?,
                        llm_calls: r.try_get("llm_calls")?,
                        tool_calls: r.try_get("tool_calls")?,
                        runs: r.try_get("runs")?,
                        compute_ms: r.try_get("compute_ms")?,
                        cost_nano: r.try_get("cost_nano")?,
                    });
                }
                Ok(out)
            }
        }

        fn traffic_from_row(r: &<$db as sqlx::Database>::Row) -> Result<Traffic> {
            let split: String = r.try_get("split")?;
            let pins: String = r.try_get("pins")?;
            Ok(Traffic {
                split: serde_json::from_str(&split).map_err(|e| StoreError::Corrupt(format!("traffic split: {e}")))?,
                pins: serde_json::from_str(&pins).map_err(|e| StoreError::Corrupt(format!("traffic pins: {e}")))?,
                previous_full: r.try_get("previous_full")?,
            })
        }

        fn version_from_row(r: &<$db as sqlx::Database>::Row) -> Result<AgentVersion> {
            Ok(AgentVersion {
                agent: r.try_get("agent")?,
                version: r.try_get("version")?,
                digest: r.try_get("digest")?,
                manifest: r.try_get("manifest")?,
                created_at_ms: r.try_get("created_at")?,
                created_by: r.try_get("created_by")?,
            })
        }

        const VERSION_COLS: &str = "agent, version, digest, manifest, created_at, created_by";

        fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
            serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
        }

        /// Writes the traffic of `agent` inside `tx`, remembering which version held all of
        /// it before (the default rollback target).
        async fn write_traffic(tx: &mut Tx, tenant: &str, agent: &str, split: &[SplitEntry], pins: &[Pin]) -> Result<Traffic> {
            let current = sqlx::query("SELECT split, pins, previous_full FROM agent_traffic WHERE tenant_id = $1 AND agent = $2")
                .bind(tenant)
                .bind(agent)
                .fetch_optional(&mut **tx)
                .await?
                .as_ref()
                .map(traffic_from_row)
                .transpose()?
                .unwrap_or_default();
            let new = Traffic { split: split.to_vec(), pins: pins.to_vec(), previous_full: None };
            let previous_full = match current.full_version() {
                Some(v) if new.full_version() != Some(v) => Some(v),
                _ => current.previous_full,
            };
            sqlx::query(
                "INSERT INTO agent_traffic (tenant_id, agent, split, pins, previous_full, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id, agent) DO UPDATE SET split = excluded.split, pins = excluded.pins, \
                 previous_full = excluded.previous_full, updated_at = excluded.updated_at",
            )
            .bind(tenant)
            .bind(agent)
            .bind(to_json(&new.split)?)
            .bind(to_json(&new.pins)?)
            .bind(previous_full)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
            Ok(Traffic { previous_full, ..new })
        }

        async fn summaries(tx: &mut Tx, tenant: &str, only: Option<&str>) -> Result<Vec<AgentSummary>> {
            let rows = sqlx::query(
                "SELECT a.name, a.description, a.created_at, \
                 (SELECT MAX(v.version) FROM agent_versions v WHERE v.tenant_id = a.tenant_id AND v.agent = a.name) AS latest, \
                 t.split, t.pins, t.previous_full \
                 FROM agents a LEFT JOIN agent_traffic t ON t.tenant_id = a.tenant_id AND t.agent = a.name \
                 WHERE a.tenant_id = $1 AND ($2 = '' OR a.name = $2) ORDER BY a.name",
            )
            .bind(tenant)
            .bind(only.unwrap_or(""))
            .fetch_all(&mut **tx)
            .await?;
            rows.iter()
                .map(|r| {
                    let has_traffic: Option<String> = r.try_get("split")?;
                    Ok(AgentSummary {
                        name: r.try_get("name")?,
                        description: r.try_get("description")?,
                        latest_version: r.try_get::<Option<i64>, _>("latest")?.unwrap_or(0),
                        traffic: if has_traffic.is_some() { traffic_from_row(r)? } else { Traffic::default() },
                        created_at_ms: r.try_get("created_at")?,
                    })
                })
                .collect()
        }

        #[async_trait]
        impl AgentStore for $store {
            async fn create_version(&self, scope: &TenantScope, v: &NewVersion<'_>, audit: &NewEntry) -> Result<(AgentVersion, bool)> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                <$store>::lock_agent(&mut tx, tenant, v.agent).await?;
                let existing = sqlx::query(&format!(
                    "SELECT {VERSION_COLS} FROM agent_versions WHERE tenant_id = $1 AND agent = $2 AND digest = $3"
                ))
                .bind(tenant)
                .bind(v.agent)
                .bind(v.digest)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = existing {
                    tx.commit().await?;
                    return Ok((version_from_row(&row)?, false));
                }
                let now = now_ms();
                sqlx::query(
                    "INSERT INTO agents (tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description",
                )
                .bind(tenant)
                .bind(v.agent)
                .bind(v.description)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM agent_versions WHERE tenant_id = $1 AND agent = $2")
                    .bind(tenant)
                    .bind(v.agent)
                    .fetch_one(&mut *tx)
                    .await?;
                let version = latest.unwrap_or(0) + 1;
                sqlx::query(
                    "INSERT INTO agent_versions (tenant_id, agent, version, digest, manifest, bundle, created_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(tenant)
                .bind(v.agent)
                .bind(version)
                .bind(v.digest)
                .bind(v.manifest)
                .bind(v.bundle)
                .bind(now)
                .bind(v.created_by)
                .execute(&mut *tx)
                .await?;
                if v.promote {
                    write_traffic(&mut tx, tenant, v.agent, &[SplitEntry { version, weight: 100 }], &[]).await?;
                }
                append_in_tx(&mut tx, tenant, audit).await?;
                tx.commit().await?;
                Ok((
                    AgentVersion {
                        agent: v.agent.to_owned(),
                        version,
                        digest: v.digest.to_owned(),
                        manifest: v.manifest.to_owned(),
                        created_at_ms: now,
                        created_by: v.created_by.to_owned(),
                    },
                    true,
                ))
            }

            async fn list_agents(&self, scope: &TenantScope) -> Result<Vec<AgentSummary>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let out = summaries(&mut tx, scope.tenant_str(), None).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn get_agent(&self, scope: &TenantScope, name: &str) -> Result<Option<AgentSummary>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let out = summaries(&mut tx, scope.tenant_str(), Some(name)).await?;
                tx.commit().await?;
                Ok(out.into_iter().next())
            }

            async fn delete_agent(&self, scope: &TenantScope, name: &str, audit: &NewEntry) -> Result<bool> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                for table in ["agent_traffic", "agent_versions"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND agent = $2"))
                        .bind(tenant)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
                let done = sqlx::query("DELETE FROM agents WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                append_in_tx(&mut tx, tenant, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn list_versions(&self, scope: &TenantScope, agent: &str) -> Result<Vec<AgentVersion>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(&format!(
                    "SELECT {VERSION_COLS} FROM agent_versions WHERE tenant_id = $1 AND agent = $2 ORDER BY version"
                ))
                .bind(scope.tenant_str())
                .bind(agent)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows.iter().map(version_from_row).collect()
            }

            async fn get_version(&self, scope: &TenantScope, agent: &str, version: i64) -> Result<Option<AgentVersion>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let row = sqlx::query(&format!(
                    "SELECT {VERSION_COLS} FROM agent_versions WHERE tenant_id = $1 AND agent = $2 AND version = $3"
                ))
                .bind(scope.tenant_str())
                .bind(agent)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                row.as_ref().map(version_from_row).transpose()
            }

            async fn set_traffic(&self, scope: &TenantScope, agent: &str, split: &[SplitEntry], pins: &[Pin], audit: &NewEntry) -> Result<Traffic> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                <$store>::lock_agent(&mut tx, tenant, agent).await?;
                let mut named: Vec<i64> = split.iter().map(|s| s.version).chain(pins.iter().map(|p| p.version)).collect();
                named.sort_unstable();
                named.dedup();
                for v in named {
                    let found: Option<i64> = sqlx::query_scalar(
                        "SELECT version FROM agent_versions WHERE tenant_id = $1 AND agent = $2 AND version = $3",
                    )
                    .bind(tenant)
                    .bind(agent)
                    .bind(v)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound);
                    }
                }
                let traffic = write_traffic(&mut tx, tenant, agent, split, pins).await?;
                append_in_tx(&mut tx, tenant, audit).await?;
                tx.commit().await?;
                Ok(traffic)
            }
        }

        const RUN_COLS: &str = "id, agent, version, thread_id, key_id, status, output, error, usage, created_at, finished_at, request, checkpoint, lease_until, started_by";
        const APPROVAL_COLS: &str = "id, run_id, agent, tool, call_id, arguments, key_id, status, reason, decided_by, created_at, expires_at, decided_at, started_by";

        fn run_from_row(r: &<$db as sqlx::Database>::Row) -> Result<RunRecord> {
            Ok(RunRecord {
                id: r.try_get("id")?,
                agent: r.try_get("agent")?,
                version: r.try_get("version")?,
                thread_id: r.try_get("thread_id")?,
                key_id: r.try_get("key_id")?,
                status: r.try_get("status")?,
                output: r.try_get("output")?,
                error: r.try_get("error")?,
                usage: r.try_get("usage")?,
                created_at_ms: r.try_get("created_at")?,
                finished_at_ms: r.try_get("finished_at")?,
                request: r.try_get("request")?,
                checkpoint: r.try_get("checkpoint")?,
                lease_until_ms: r.try_get("lease_until")?,
                started_by: r.try_get("started_by")?,
            })
        }

        fn approval_from_row(r: &<$db as sqlx::Database>::Row) -> Result<ApprovalRecord> {
            Ok(ApprovalRecord {
                id: r.try_get("id")?,
                run_id: r.try_get("run_id")?,
                agent: r.try_get("agent")?,
                tool: r.try_get("tool")?,
                call_id: r.try_get("call_id")?,
                arguments: r.try_get("arguments")?,
                key_id: r.try_get("key_id")?,
                status: r.try_get("status")?,
                reason: r.try_get("reason")?,
                decided_by: r.try_get("decided_by")?,
                created_at_ms: r.try_get("created_at")?,
                expires_at_ms: r.try_get("expires_at")?,
                decided_at_ms: r.try_get("decided_at")?,
                started_by: r.try_get("started_by")?,
            })
        }

        async fn insert_approval(tx: &mut Tx, tenant: &str, a: &ApprovalRecord) -> Result<()> {
            sqlx::query(&format!("INSERT INTO approvals (tenant_id, {APPROVAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"))
                .bind(tenant)
                .bind(&a.id)
                .bind(a.run_id.as_deref())
                .bind(&a.agent)
                .bind(&a.tool)
                .bind(&a.call_id)
                .bind(&a.arguments)
                .bind(a.key_id.as_deref())
                .bind(&a.status)
                .bind(a.reason.as_deref())
                .bind(a.decided_by.as_deref())
                .bind(a.created_at_ms)
                .bind(a.expires_at_ms)
                .bind(a.decided_at_ms)
                .bind(a.started_by.as_deref())
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn insert_steps(tx: &mut Tx, tenant: &str, run_id: &str, steps: &[RunStep]) -> Result<()> {
            for s in steps {
                sqlx::query("INSERT INTO run_steps (tenant_id, run_id, seq, kind, at, data) VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT (tenant_id, run_id, seq) DO NOTHING")
                    .bind(tenant)
                    .bind(run_id)
                    .bind(s.seq)
                    .bind(&s.kind)
                    .bind(s.at_ms)
                    .bind(&s.data)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(())
        }

        async fn fetch_run(tx: &mut Tx, tenant: &str, id: &str) -> Result<Option<RunRecord>> {
            let row = sqlx::query(&format!("SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant)
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            row.as_ref().map(run_from_row).transpose()
        }

        #[async_trait]
        impl RunStore for $store {
            async fn create_thread(&self, scope: &TenantScope, t: &ThreadRecord) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query("INSERT INTO threads (tenant_id, id, agent, version, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(scope.tenant_str())
                    .bind(&t.id)
                    .bind(&t.agent)
                    .bind(t.version)
                    .bind(t.created_at_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_thread(&self, scope: &TenantScope, id: &str) -> Result<Option<ThreadRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let Some(row) = sqlx::query("SELECT id, agent, version, created_at FROM threads WHERE tenant_id = $1 AND id = $2")
                    .bind(scope.tenant_str())
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(None);
                };
                let messages: Vec<String> = sqlx::query_scalar(
                    "SELECT message FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2 ORDER BY seq",
                )
                .bind(scope.tenant_str())
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(ThreadRecord {
                    id: row.try_get("id")?,
                    agent: row.try_get("agent")?,
                    version: row.try_get("version")?,
                    created_at_ms: row.try_get("created_at")?,
                    messages,
                }))
            }

            async fn delete_thread(&self, scope: &TenantScope, id: &str) -> Result<bool> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query("DELETE FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2")
                    .bind(scope.tenant_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query("DELETE FROM threads WHERE tenant_id = $1 AND id = $2")
                    .bind(scope.tenant_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_run(&self, scope: &TenantScope, r: &RunRecord) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query(&format!("INSERT INTO runs (tenant_id, {RUN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"))
                    .bind(scope.tenant_str())
                    .bind(&r.id)
                    .bind(&r.agent)
                    .bind(r.version)
                    .bind(r.thread_id.as_deref())
                    .bind(r.key_id.as_deref())
                    .bind(&r.status)
                    .bind(r.output.as_deref())
                    .bind(r.error.as_deref())
                    .bind(&r.usage)
                    .bind(r.created_at_ms)
                    .bind(r.finished_at_ms)
                    .bind(r.request.as_deref())
                    .bind(r.checkpoint.as_deref())
                    .bind(r.lease_until_ms)
                    .bind(r.started_by.as_deref())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_run(&self, scope: &TenantScope, id: &str, lease_until_ms: i64) -> Result<Option<RunRecord>> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let done = sqlx::query("UPDATE runs SET status = 'running', lease_until = $1 WHERE tenant_id = $2 AND id = $3 AND status = 'queued'")
                    .bind(lease_until_ms)
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let run = if done.rows_affected() == 1 { fetch_run(&mut tx, tenant, id).await? } else { None };
                tx.commit().await?;
                Ok(run)
            }

            async fn renew_lease(&self, scope: &TenantScope, id: &str, lease_until_ms: i64, usage: &str, steps: &[RunStep]) -> Result<()> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let renewed = sqlx::query("UPDATE runs SET lease_until = $1, usage = $2 WHERE tenant_id = $3 AND id = $4 AND status = 'running'")
                    .bind(lease_until_ms)
                    .bind(usage)
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if renewed > 0 {
                    insert_steps(&mut tx, tenant, id, steps).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn finish_run(&self, scope: &TenantScope, r: &RunRecord, steps: &[RunStep], thread_messages: &[String]) -> Result<String> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                // A cancel that landed while the run was finishing wins: the caller asked
                // for it, and was told so.
                sqlx::query("UPDATE runs SET status = CASE WHEN status = 'cancelled' THEN status ELSE $1 END, \
                             output = $2, error = CASE WHEN status = 'cancelled' THEN error ELSE $3 END, usage = $4, \
                             finished_at = COALESCE(finished_at, $5), checkpoint = NULL, lease_until = NULL \
                             WHERE tenant_id = $6 AND id = $7")
                    .bind(&r.status)
                    .bind(r.output.as_deref())
                    .bind(r.error.as_deref())
                    .bind(&r.usage)
                    .bind(r.finished_at_ms)
                    .bind(tenant)
                    .bind(&r.id)
                    .execute(&mut *tx)
                    .await?;
                insert_steps(&mut tx, tenant, &r.id, steps).await?;
                if let Some(thread) = &r.thread_id {
                    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM thread_messages WHERE tenant_id = $1 AND thread_id = $2")
                        .bind(tenant)
                        .bind(thread)
                        .fetch_one(&mut *tx)
                        .await?;
                    let mut seq = last.unwrap_or(0);
                    for m in thread_messages {
                        seq += 1;
                        sqlx::query("INSERT INTO thread_messages (tenant_id, thread_id, seq, message, created_at) VALUES ($1, $2, $3, $4, $5)")
                            .bind(tenant)
                            .bind(thread)
                            .bind(seq)
                            .bind(m)
                            .bind(now_ms())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant)
                    .bind(&r.id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(status)
            }

            async fn pause_run(&self, scope: &TenantScope, r: &RunRecord, steps: &[RunStep], approvals: &[ApprovalRecord]) -> Result<bool> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let done = sqlx::query("UPDATE runs SET status = 'waiting_approval', checkpoint = $1, usage = $2, lease_until = NULL \
                                        WHERE tenant_id = $3 AND id = $4 AND status = 'running'")
                    .bind(r.checkpoint.as_deref())
                    .bind(&r.usage)
                    .bind(tenant)
                    .bind(&r.id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                insert_steps(&mut tx, tenant, &r.id, steps).await?;
                for a in approvals {
                    insert_approval(&mut tx, tenant, a).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn cancel_run(&self, scope: &TenantScope, id: &str, audit: &NewEntry) -> Result<Option<(RunRecord, bool)>> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let error = serde_json::json!({"type": "cancelled", "code": "cancelled", "message": "the run was cancelled"}).to_string();
                let done = sqlx::query("UPDATE runs SET status = 'cancelled', error = $1, finished_at = $2, checkpoint = NULL, lease_until = NULL \
                                        WHERE tenant_id = $3 AND id = $4 AND status IN ('queued', 'running', 'waiting_approval')")
                    .bind(&error)
                    .bind(now_ms())
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let changed = done.rows_affected() == 1;
                if changed {
                    sqlx::query("UPDATE approvals SET status = 'cancelled', decided_at = $1 WHERE tenant_id = $2 AND run_id = $3 AND status = 'pending'")
                        .bind(now_ms())
                        .bind(tenant)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    append_in_tx(&mut tx, tenant, audit).await?;
                }
                let run = fetch_run(&mut tx, tenant, id).await?;
                tx.commit().await?;
                Ok(run.map(|r| (r, changed)))
            }

            async fn queued_runs(&self, scope: &TenantScope, limit: i64) -> Result<Vec<RunRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(&format!("SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 AND status = 'queued' ORDER BY created_at, id LIMIT $2"))
                    .bind(scope.tenant_str())
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter().map(run_from_row).collect()
            }

            async fn fail_expired_leases(&self, scope: &TenantScope, now: i64, error: &str) -> Result<Vec<String>> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE runs SET status = 'failed', error = $1, finished_at = $2, lease_until = NULL, checkpoint = NULL \
                     WHERE tenant_id = $3 AND status = 'running' AND (lease_until IS NULL OR lease_until < $2) RETURNING id",
                )
                .bind(error)
                .bind(now)
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(ids)
            }

            async fn get_approval(&self, scope: &TenantScope, id: &str) -> Result<Option<ApprovalRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let row = sqlx::query(&format!("SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND id = $2"))
                    .bind(scope.tenant_str())
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.as_ref().map(approval_from_row).transpose()
            }

            async fn list_approvals(&self, scope: &TenantScope, f: &ApprovalFilter, page: &PageRequest) -> Result<Page<ApprovalRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                // Newest first; the cursor is "<created_at>:<id>" of the last one seen.
                let (c_at, c_id) = newest_first_cursor(page);
                let rows = sqlx::query(&format!(
                    "SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 \
                     AND ($2 = '' OR status = $2) AND ($3 = '' OR agent = $3) AND ($4 = '' OR run_id = $4) \
                     AND (created_at < $5 OR (created_at = $5 AND id < $6)) \
                     ORDER BY created_at DESC, id DESC LIMIT $7"
                ))
                .bind(scope.tenant_str())
                .bind(f.status.as_deref().unwrap_or(""))
                .bind(f.agent.as_deref().unwrap_or(""))
                .bind(f.run_id.as_deref().unwrap_or(""))
                .bind(c_at)
                .bind(c_id)
                .bind(limit_plus_one(page))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let items = rows.iter().map(approval_from_row).collect::<Result<Vec<_>>>()?;
                Ok(Page::from_rows(items, page.limit, |a| format!("{}:{}", a.created_at_ms, a.id)))
            }

            async fn decide_approval(&self, scope: &TenantScope, id: &str, status: &str, reason: Option<&str>, decided_by: &str, audit: &NewEntry) -> Result<Option<ApprovalRecord>> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let done = sqlx::query("UPDATE approvals SET status = $1, reason = $2, decided_by = $3, decided_at = $4 \
                                        WHERE tenant_id = $5 AND id = $6 AND status = 'pending'")
                    .bind(status)
                    .bind(reason)
                    .bind(decided_by)
                    .bind(now_ms())
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                let row = sqlx::query(&format!("SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND id = $2"))
                    .bind(tenant)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                let approval = approval_from_row(&row)?;
                if let Some(run_id) = approval.run_id.as_deref() {
                    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE tenant_id = $1 AND run_id = $2 AND status = 'pending'")
                        .bind(tenant)
                        .bind(run_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    if pending == 0 {
                        sqlx::query("UPDATE runs SET status = 'queued' WHERE tenant_id = $1 AND id = $2 AND status = 'waiting_approval'")
                            .bind(tenant)
                            .bind(run_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                append_in_tx(&mut tx, tenant, audit).await?;
                tx.commit().await?;
                Ok(Some(approval))
            }

            async fn expired_approvals(&self, scope: &TenantScope, now: i64) -> Result<Vec<ApprovalRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(&format!("SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND status = 'pending' AND expires_at < $2 ORDER BY expires_at"))
                    .bind(scope.tenant_str())
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter().map(approval_from_row).collect()
            }

            async fn create_call_approval(&self, scope: &TenantScope, a: &ApprovalRecord, audit: &NewEntry) -> Result<()> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                insert_approval(&mut tx, tenant, a).await?;
                append_in_tx(&mut tx, tenant, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn use_call_approval(&self, scope: &TenantScope, key_id: Option<&str>, started_by: &str, tool: &str, arguments: &str, now: i64) -> Result<Option<ApprovalRecord>> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let id: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM approvals WHERE tenant_id = $1 AND run_id IS NULL AND status = 'approved' \
                     AND tool = $2 AND arguments = $3 AND expires_at >= $4 \
                     AND ((key_id IS NULL AND $5 IS NULL) OR key_id = $5) \
                     AND (started_by IS NULL OR started_by = $6) ORDER BY created_at LIMIT 1",
                )
                .bind(tenant)
                .bind(tool)
                .bind(arguments)
                .bind(now)
                .bind(key_id)
                .bind(started_by)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    return Ok(None);
                };
                // The status guard makes two concurrent uses of one approval end with one winner.
                let done = sqlx::query("UPDATE approvals SET status = 'used' WHERE tenant_id = $1 AND id = $2 AND status = 'approved'")
                    .bind(tenant)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                let row = sqlx::query(&format!("SELECT {APPROVAL_COLS} FROM approvals WHERE tenant_id = $1 AND id = $2"))
                    .bind(tenant)
                    .bind(&id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(approval_from_row(&row)?))
            }

            async fn get_run(&self, scope: &TenantScope, id: &str) -> Result<Option<RunRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let run = fetch_run(&mut tx, scope.tenant_str(), id).await?;
                tx.commit().await?;
                Ok(run)
            }

            async fn list_runs(&self, scope: &TenantScope, f: &RunFilter, page: &PageRequest) -> Result<Page<RunRecord>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                // Newest first; the cursor is "<created_at>:<id>" of the last one seen.
                let (c_at, c_id) = newest_first_cursor(page);
                let rows = sqlx::query(&format!(
                    "SELECT {RUN_COLS} FROM runs WHERE tenant_id = $1 \
                     AND ($2 = '' OR agent = $2) AND ($3 = '' OR status = $3) AND ($4 = '' OR thread_id = $4) \
                     AND created_at >= $5 AND ($6 = '' OR key_id = $6) \
                     AND (created_at < $7 OR (created_at = $7 AND id < $8)) \
                     ORDER BY created_at DESC, id DESC LIMIT $9"
                ))
                .bind(scope.tenant_str())
                .bind(f.agent.as_deref().unwrap_or(""))
                .bind(f.status.as_deref().unwrap_or(""))
                .bind(f.thread.as_deref().unwrap_or(""))
                .bind(f.since_ms.unwrap_or(0))
                .bind(f.key_id.as_deref().unwrap_or(""))
                .bind(c_at)
                .bind(c_id)
                .bind(limit_plus_one(page))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                let runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
                Ok(Page::from_rows(runs, page.limit, |r| format!("{}:{}", r.created_at_ms, r.id)))
            }

            async fn run_steps(&self, scope: &TenantScope, run_id: &str) -> Result<Vec<RunStep>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query("SELECT seq, kind, at, data FROM run_steps WHERE tenant_id = $1 AND run_id = $2 ORDER BY seq")
                    .bind(scope.tenant_str())
                    .bind(run_id)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                rows.iter()
                    .map(|r| Ok(RunStep { seq: r.try_get("seq")?, kind: r.try_get("kind")?, at_ms: r.try_get("at")?, data: r.try_get("data")? }))
                    .collect()
            }
        }

        #[async_trait]
        impl KvStore for $store {
            async fn kv_get(&self, scope: &TenantScope, agent: &str, key: &str) -> Result<Option<Vec<u8>>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM agent_kv WHERE tenant_id = $1 AND agent = $2 AND key = $3")
                    .bind(scope.tenant_str())
                    .bind(agent)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(v)
            }

            async fn kv_set(&self, scope: &TenantScope, agent: &str, key: &str, value: &[u8]) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query("INSERT INTO agent_kv (tenant_id, agent, key, value, updated_at) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (tenant_id, agent, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
                    .bind(scope.tenant_str())
                    .bind(agent)
                    .bind(key)
                    .bind(value)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn kv_delete(&self, scope: &TenantScope, agent: &str, key: &str) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query("DELETE FROM agent_kv WHERE tenant_id = $1 AND agent = $2 AND key = $3")
                    .bind(scope.tenant_str())
                    .bind(agent)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn stored_bytes(&self, scope: &TenantScope) -> Result<i64> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let mut total = 0i64;
                for (table, col) in [("agent_versions", "bundle"), ("agent_versions", "manifest"), ("agent_kv", "value"),
                                     ("thread_messages", "message"), ("run_steps", "data")] {
                    let n: i64 = sqlx::query_scalar(&format!(
                        "SELECT CAST(COALESCE(SUM(octet_length({col})), 0) AS BIGINT) FROM {table} WHERE tenant_id = $1"
                    ))
                    .bind(scope.tenant_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    total += n;
                }
                tx.commit().await?;
                Ok(total)
            }

            async fn version_bundle(&self, scope: &TenantScope, agent: &str, version: i64) -> Result<Option<Vec<u8>>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let v: Option<Option<Vec<u8>>> = sqlx::query_scalar("SELECT bundle FROM agent_versions WHERE tenant_id = $1 AND agent = $2 AND version = $3")
                    .bind(scope.tenant_str())
                    .bind(agent)
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(v.flatten())
            }
        }

        #[async_trait]
        impl BudgetStore for $store {
            async fn reserve_budget(&self, scope: &TenantScope, hold_id: &str, budgets: &[BudgetLimit], want: i64, floor: i64, expires_at_ms: i64) -> Result<Option<i64>> {
                let tenant = scope.tenant_str();
                // A concurrent reservation may take the headroom between the read and the
                // conditional update; the update then changes nothing and we look again.
                for _attempt in 0..8 {
                    let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                    let mut amount = want.max(floor);
                    for b in budgets {
                        sqlx::query("INSERT INTO budget_counters (tenant_id, budget) VALUES ($1, $2) ON CONFLICT (tenant_id, budget) DO NOTHING")
                            .bind(tenant)
                            .bind(&b.budget)
                            .execute(&mut *tx)
                            .await?;
                        if let Some(limit) = b.limit_nano {
                            let row = sqlx::query("SELECT spent_nano, reserved_nano FROM budget_counters WHERE tenant_id = $1 AND budget = $2")
                                .bind(tenant)
                                .bind(&b.budget)
                                .fetch_one(&mut *tx)
                                .await?;
                            let spent: i64 = row.try_get("spent_nano")?;
                            let reserved: i64 = row.try_get("reserved_nano")?;
                            amount = amount.min(limit - spent - reserved);
                        }
                    }
                    if amount < floor || amount <= 0 {
                        return Ok(None);
                    }
                    let mut lost_race = false;
                    for b in budgets {
                        let done = sqlx::query("UPDATE budget_counters SET reserved_nano = reserved_nano + $1 \
                                                WHERE tenant_id = $2 AND budget = $3 AND ($4 < 0 OR spent_nano + reserved_nano + $1 <= $4)")
                            .bind(amount)
                            .bind(tenant)
                            .bind(&b.budget)
                            .bind(b.limit_nano.unwrap_or(-1))
                            .execute(&mut *tx)
                            .await?;
                        if done.rows_affected() == 0 {
                            lost_race = true;
                            break;
                        }
                        sqlx::query("INSERT INTO budget_holds (tenant_id, id, budget, amount_nano, expires_at) VALUES ($1, $2, $3, $4, $5)")
                            .bind(tenant)
                            .bind(hold_id)
                            .bind(&b.budget)
                            .bind(amount)
                            .bind(expires_at_ms)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if lost_race {
                        tx.rollback().await?;
                        continue;
                    }
                    tx.commit().await?;
                    return Ok(Some(amount));
                }
                Ok(None)
            }

            async fn settle_budget(&self, scope: &TenantScope, hold_id: &str, actual: i64, budgets: &[String]) -> Result<Vec<Settled>> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                let first = sqlx::query("INSERT INTO budget_settlements (tenant_id, id, settled_at) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, id) DO NOTHING")
                    .bind(tenant)
                    .bind(hold_id)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                if first.rows_affected() == 0 {
                    return Ok(Vec::new()); // settled before (a retry whose answer was lost)
                }
                let holds = sqlx::query("DELETE FROM budget_holds WHERE tenant_id = $1 AND id = $2 RETURNING budget, amount_nano")
                    .bind(tenant)
                    .bind(hold_id)
                    .fetch_all(&mut *tx)
                    .await?;
                if holds.is_empty() {
                    // The hold expired (and gave its room back) before the call ended: the
                    // spend is still the tenant's.
                    let mut out = Vec::with_capacity(budgets.len());
                    for budget in budgets {
                        sqlx::query("INSERT INTO budget_counters (tenant_id, budget) VALUES ($1, $2) ON CONFLICT (tenant_id, budget) DO NOTHING")
                            .bind(tenant)
                            .bind(budget)
                            .execute(&mut *tx)
                            .await?;
                        let after: i64 = sqlx::query_scalar("UPDATE budget_counters SET spent_nano = spent_nano + $1 WHERE tenant_id = $2 AND budget = $3 RETURNING spent_nano")
                            .bind(actual)
                            .bind(tenant)
                            .bind(budget)
                            .fetch_one(&mut *tx)
                            .await?;
                        out.push(Settled { budget: budget.clone(), spent_before_nano: after - actual, spent_after_nano: after });
                    }
                    tx.commit().await?;
                    return Ok(out);
                }
                let mut out = Vec::with_capacity(holds.len());
                for h in &holds {
                    let budget: String = h.try_get("budget")?;
                    let amount: i64 = h.try_get("amount_nano")?;
                    let after: i64 = sqlx::query_scalar("UPDATE budget_counters SET reserved_nano = reserved_nano - $1, spent_nano = spent_nano + $2 \
                                                         WHERE tenant_id = $3 AND budget = $4 RETURNING spent_nano")
                        .bind(amount)
                        .bind(actual)
                        .bind(tenant)
                        .bind(&budget)
                        .fetch_one(&mut *tx)
                        .await?;
                    out.push(Settled { budget, spent_before_nano: after - actual, spent_after_nano: after });
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn init_budget(&self, scope: &TenantScope, budget: &str, spent: i64) -> Result<()> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                sqlx::query("INSERT INTO budget_counters (tenant_id, budget, spent_nano) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, budget) DO NOTHING")
                    .bind(scope.tenant_str())
                    .bind(budget)
                    .bind(spent)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn release_expired_holds(&self, scope: &TenantScope, now: i64) -> Result<u64> {
                let tenant = scope.tenant_str();
                let mut tx = self.begin(TxKind::Tenant(tenant), true).await?;
                // A settlement is retried for minutes at most; a day of them is plenty.
                sqlx::query("DELETE FROM budget_settlements WHERE tenant_id = $1 AND settled_at < $2")
                    .bind(tenant)
                    .bind(now - 86_400_000)
                    .execute(&mut *tx)
                    .await?;
                let holds = sqlx::query("DELETE FROM budget_holds WHERE tenant_id = $1 AND expires_at < $2 RETURNING budget, amount_nano")
                    .bind(tenant)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                for h in &holds {
                    sqlx::query("UPDATE budget_counters SET reserved_nano = reserved_nano - $1 WHERE tenant_id = $2 AND budget = $3")
                        .bind(h.try_get::<i64, _>("amount_nano")?)
                        .bind(tenant)
                        .bind(h.try_get::<String, _>("budget")?)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(holds.len() as u64)
            }

            async fn budget_states(&self, scope: &TenantScope, budgets: &[String]) -> Result<Vec<BudgetState>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let mut out = Vec::with_capacity(budgets.len());
                for b in budgets {
                    let row = sqlx::query("SELECT spent_nano, reserved_nano FROM budget_counters WHERE tenant_id = $1 AND budget = $2")
                        .bind(scope.tenant_str())
                        .bind(b)
                        .fetch_optional(&mut *tx)
                        .await?;
                    out.push(match row {
                        Some(r) => BudgetState { spent_nano: r.try_get("spent_nano")?, reserved_nano: r.try_get("reserved_nano")? },
                        None => BudgetState::default(),
                    });
                }
                tx.commit().await?;
                Ok(out)
            }
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn append_audit(&self, scope: &TenantScope, entry: &NewEntry) -> Result<Entry> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let stored = append_in_tx(&mut tx, scope.tenant_str(), entry).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn append_audit_batch(&self, scope: &TenantScope, entries: &[NewEntry]) -> Result<Vec<Entry>> {
                if entries.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), true).await?;
                let stored = append_many_in_tx(&mut tx, scope.tenant_str(), entries).await?;
                tx.commit().await?;
                Ok(stored)
            }

            async fn append_audit_after(
                &self,
                scope: &TenantScope,
                head: &AuditHead,
                entries: &[NewEntry],
            ) -> Result<Option<Vec<Entry>>> {
                <$store>::append_after_head(self, scope, head, entries).await
            }

            async fn list_audit(
                &self,
                scope: &TenantScope,
                after: i64,
                limit: i64,
            ) -> Result<Vec<Entry>> {
                let mut tx = self.begin(TxKind::Tenant(scope.tenant_str()), false).await?;
                let rows = sqlx::query(
                    "SELECT seq, at, actor, action, target, details, prev_hash, hash FROM audit_log \
                     WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(scope.tenant_str())
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                rows.iter().map(audit_from_row).collect()
            }
        }
        }
    };
}

pub(crate) use impl_store;

/// What a transaction is opened for; PostgreSQL turns it into session settings that its
/// row-level security policies read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TxKind<'a> {
    /// Work on one tenant's data.
    Tenant(&'a str),
    /// The operator's view of the tenant registry.
    Operator,
    /// The operator acting on one tenant (create, update, delete it).
    OperatorOn(&'a str),
    /// The authentication lookup, before any tenant is known.
    Auth,
}
