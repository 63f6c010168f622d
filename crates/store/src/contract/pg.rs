//! Throwaway PostgreSQL databases for tests, on the server `BERTH_TEST_PG_URL` names.

use berth_core::{Id, IdKind};

/// Where test databases are created: `BERTH_TEST_PG_URL`, else the local server.
pub fn pg_admin_url() -> String {
    std::env::var("BERTH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty PostgreSQL database for one test, or `None` when no server answers.
/// Under `CI=true` an unreachable server fails the test instead of skipping it.
pub async fn pg_test_database() -> Option<PgTestDb> {
    use sqlx::Connection;
    let admin_url = pg_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL at {admin_url} is required under CI=true: {e}");
            }
            eprintln!("skipping PostgreSQL test: {admin_url} unreachable: {e}");
            return None;
        }
    };
    let name = format!(
        "berth_test_{}",
        Id::new(IdKind::Event).as_str().trim_start_matches("evt_")
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap();
    Some(PgTestDb {
        admin_url,
        url: format!("{base}/{name}"),
        name,
    })
}

/// A throwaway database; [`PgTestDb::drop_now`] removes it.
pub struct PgTestDb {
    admin_url: String,
    pub url: String,
    pub name: String,
}

impl PgTestDb {
    pub async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
