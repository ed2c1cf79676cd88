//! The bench database and the real `triad` server as a child process.

use anyhow::{bail, Context as _};
use sqlx::Connection as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The JWT secret the child server is started with (and the bench signs tokens with).
pub const JWT_SECRET: &str = "bench-secret";
const DB_PREFIX: &str = "triad_bench_";

/// Mints an HS256 token like `triad token --sub SUB --role ROLE --ttl 2h`.
pub fn token(sub: &str, role: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({ "sub": sub, "role": role, "iat": now, "exp": now + 7_200 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Replaces the database name in a postgres URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A uniquely named database, created on the admin server; call [`BenchDb::drop_db`].
pub struct BenchDb {
    pub admin_url: String,
    pub name: String,
    pub url: String,
    pub server_version: String,
}

impl BenchDb {
    pub async fn create(admin_url: &str) -> anyhow::Result<BenchDb> {
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin_url}"))?;
        sweep_stale(&mut conn).await;
        let server_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|_| "?".into());
        let name = format!(
            "{DB_PREFIX}{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = conn.close().await;
        Ok(BenchDb {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
            server_version,
        })
    }

    pub async fn drop_db(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(())
    }
}

/// Drops bench databases left by runs that died before cleaning up.
async fn sweep_stale(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT datname FROM pg_database WHERE datname LIKE '{DB_PREFIX}%'"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let pid: Option<u32> = name
            .strip_prefix(DB_PREFIX)
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

pub struct ServerProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl ServerProcess {
    /// Starts `bin serve` over `store_url` on a free port, pinned to `cpu` when given, and
    /// waits until GET /healthz answers.
    pub async fn start(
        bin: &Path,
        store_url: &str,
        cpu: Option<usize>,
        log: &Path,
    ) -> anyhow::Result<ServerProcess> {
        Self::start_with_env(bin, store_url, cpu, log, &[]).await
    }

    /// [`ServerProcess::start`] with extra environment variables (e.g. TRIAD_ERP_URL).
    pub async fn start_with_env(
        bin: &Path,
        store_url: &str,
        cpu: Option<usize>,
        log: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<ServerProcess> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = match cpu {
            Some(c) if crate::sys::on_path("taskset") => {
                let mut cmd = tokio::process::Command::new("taskset");
                cmd.arg("-c").arg(c.to_string()).arg(bin);
                cmd
            }
            Some(c) => {
                let mut cmd = tokio::process::Command::new(bin);
                // SAFETY: only an async-signal-safe system call runs between fork and exec.
                unsafe {
                    cmd.pre_exec(move || {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(c, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                        Ok(())
                    });
                }
                cmd
            }
            None => tokio::process::Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--store")
            .arg(store_url)
            .arg("--listen")
            .arg(addr.to_string())
            .env("TRIAD_JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().context("server pid")?;
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/healthz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited ({status}) before answering /healthz; see {}",
                    log.display()
                );
            }
            let ok = http
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                bail!(
                    "the server did not answer {url} within 60 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ServerProcess {
            child,
            pid,
            addr,
            log: log.to_path_buf(),
        })
    }

    /// SIGINT (the server stops gracefully), then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGINT);
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
