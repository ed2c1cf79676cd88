//! Shared plumbing for the geo, rebuild and relay sections: each runs on its own fresh
//! database with its own server process, so it neither disturbs nor is disturbed by the
//! other sections.

use crate::server::{BenchDb, ServerProcess};
use std::path::PathBuf;

/// What a section needs to start its own server.
pub struct Ctx {
    pub admin_url: String,
    pub triad: PathBuf,
    pub server_cpu: Option<usize>,
    pub report_dir: PathBuf,
}

impl Ctx {
    /// Starts `triad serve` on `db` (log in target/bench/<name>.log).
    pub async fn start(
        &self,
        db: &BenchDb,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<ServerProcess> {
        let log = self.report_dir.join(format!("{name}.log"));
        ServerProcess::start_with_env(&self.triad, &db.url, self.server_cpu, &log, env).await
    }
}

/// A random UUID-shaped string (event ids in metadata).
pub fn uuid_like() -> String {
    let a: u128 = rand::random();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-7{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Event metadata as in eventstore/src/record.rs (flat strings).
pub fn metadata(sub: &str, role: &str, at: &str) -> String {
    let id = uuid_like();
    format!(
        r#"{{"event_id":"{id}","command_id":"{id}","correlation_id":"{id}","causation_id":"{id}","actor_sub":"{sub}","actor_role":"{role}","recorded_at":"{at}"}}"#
    )
}

/// One row of `COPY events (aggregate_type, aggregate_id, sequence, event_type,
/// event_version, payload, metadata) FROM STDIN` (text format; the JSON has no tabs,
/// newlines or backslashes).
pub fn copy_line(out: &mut String, fields: [&str; 7]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        out.push_str(f);
    }
    out.push('\n');
}

pub const COPY_EVENTS: &str = "COPY events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) FROM STDIN";

/// Waits until the server's sequencer has numbered every row.
pub async fn wait_sequenced(
    pool: &sqlx::PgPool,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position IS NULL")
            .fetch_one(pool)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{n} events still unsequenced after {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
