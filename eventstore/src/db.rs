//! Connection pools for the two embedded backends.

use crate::error::StoreError;
use crate::url::StoreUrl;
use sqlx::any::AnyPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AnyPool, PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// The event store's own pool, typed per backend (cqrs-es repositories need the concrete type).
#[derive(Clone, Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Pool sizes: PostgreSQL scales with clients; SQLite has one writer whatever we do.
const PG_MAX_CONNECTIONS: u32 = 24;
const SQLITE_MAX_CONNECTIONS: u32 = 8;

pub(crate) async fn connect(url: &StoreUrl) -> Result<(Db, AnyPool), StoreError> {
    sqlx::any::install_default_drivers();
    match url {
        StoreUrl::Postgres { url } => {
            let pool = PgPoolOptions::new()
                .max_connections(PG_MAX_CONNECTIONS)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            let any = AnyPoolOptions::new()
                .max_connections(PG_MAX_CONNECTIONS / 2)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Ok((Db::Postgres(pool), any))
        }
        StoreUrl::Sqlite { path } => {
            if let Some(parent) = std::path::Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)?;
                }
            }
            // WAL lets readers run beside the writer; FULL sync makes every acknowledged
            // command durable across power loss.
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .connect_with(opts)
                .await?;
            let any = AnyPoolOptions::new()
                .max_connections(SQLITE_MAX_CONNECTIONS)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::query("PRAGMA busy_timeout = 30000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(&format!("sqlite://{path}"))
                .await?;
            Ok((Db::Sqlite(pool), any))
        }
        StoreUrl::EventStoreDb { .. } => Err(StoreError::EventStoreDbDisabled),
    }
}
