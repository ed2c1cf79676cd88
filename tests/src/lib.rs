//! The shared test harness: fresh databases, the real server on a random port, and real
//! HTTP and WebSocket clients.

pub mod db;
pub mod erp;
pub mod gql;
pub mod ws;

pub use db::{Backend, TestDb};
pub use gql::Client;

use std::sync::Arc;
use triad_api::auth::{Auth, DEV_SECRET};
use triad_api::{Server, ServerConfig};
use triad_domain::{Role, UserId};

pub const JWT_SECRET: &str = DEV_SECRET;

/// Starts the real server (HTTP on 127.0.0.1, random port) over `db`.
pub async fn start_server(db: &TestDb) -> Arc<Server> {
    start_server_with(db, Default::default(), None).await
}

/// The test server's configuration over `db`: 127.0.0.1 on a random port, the test secret, no
/// relay, push or language model. Tests that need one set it with `..server_config(&db)`.
pub fn server_config(db: &TestDb) -> ServerConfig {
    ServerConfig {
        store: db.url.parse().expect("test store url"),
        listen: "127.0.0.1:0".parse().expect("listen address"),
        jwt_secret: JWT_SECRET.to_string(),
        ws: Default::default(),
        tcp_send_buffer: None,
        llm: None,
        push: None,
        relay: None,
    }
}

/// [`start_server`] with WebSocket limits and a socket send buffer of the test's choosing.
pub async fn start_server_with(
    db: &TestDb,
    ws: triad_api::ws::WsConfig,
    tcp_send_buffer: Option<usize>,
) -> Arc<Server> {
    Arc::new(
        Server::start(ServerConfig {
            ws,
            tcp_send_buffer,
            ..server_config(db)
        })
        .await
        .expect("server starts"),
    )
}

pub fn token(sub: &str, role: Role) -> String {
    Auth::new(JWT_SECRET)
        .mint(
            &UserId::parse(sub).expect("test user id"),
            role,
            std::time::Duration::from_secs(3_600),
        )
        .expect("mint")
}

/// Polls `check` until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Waits until every committed event has its log position (the sequencer runs just after
/// commits on PostgreSQL), so a log read sees everything acknowledged so far.
pub async fn settled(store: &triad_eventstore::EventStore) {
    eventually(10, "the log to be sequenced", || async {
        (store.unsequenced().await.ok() == Some(0)).then_some(())
    })
    .await;
}
