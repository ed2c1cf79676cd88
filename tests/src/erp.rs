//! The reference ERP for tests: applies each integration event once (deduplicating by
//! idempotency key) and can be told to misbehave: refuse connections (not listening yet),
//! answer 500, hang past the sender's timeout, or apply and then drop the connection.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// Per key, in turn: apply then drop the connection, 500, hang, then 200.
    EveryFailureOnce,
    /// Always 500.
    Failing,
}

pub struct Erp {
    pub applied: Mutex<HashMap<String, Value>>,
    pub applied_twice: Mutex<Vec<String>>,
    pub receipts: Mutex<HashMap<String, usize>>,
    pub mode: Mutex<Mode>,
    /// Messages of these auctions always fail (to force a dead letter).
    pub poisoned: Mutex<Vec<String>>,
    pub delay: Mutex<Duration>,
    stopped: AtomicBool,
}

impl Erp {
    pub fn new(mode: Mode) -> Arc<Erp> {
        Arc::new(Erp {
            applied: Default::default(),
            applied_twice: Default::default(),
            receipts: Default::default(),
            mode: Mutex::new(mode),
            poisoned: Default::default(),
            delay: Mutex::new(Duration::ZERO),
            stopped: AtomicBool::new(false),
        })
    }

    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        while !self.stopped.load(Ordering::SeqCst) {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move { me.handle(socket).await });
        }
    }

    pub fn applied_count(&self) -> usize {
        self.applied.lock().unwrap().len()
    }

    fn apply(&self, key: &str, body: Value) {
        let mut applied = self.applied.lock().unwrap();
        if applied.contains_key(key) {
            return; // deduplicated: the same message again changes nothing
        }
        applied.insert(key.to_string(), body);
    }

    async fn handle(&self, mut socket: tokio::net::TcpStream) {
        let Some((_, body)) = read_request(&mut socket).await else {
            return;
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let key = body["idempotencyKey"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let attempt = {
            let mut r = self.receipts.lock().unwrap();
            let n = r.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let poisoned = self
            .poisoned
            .lock()
            .unwrap()
            .iter()
            .any(|a| body["auctionId"] == a.as_str());
        let mode = *self.mode.lock().unwrap();
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let error =
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        if poisoned || mode == Mode::Failing {
            let _ = socket.write_all(error).await;
            return;
        }
        match (mode, attempt) {
            (Mode::EveryFailureOnce, 1) => self.apply(&key, body), // applied, then dropped unanswered
            (Mode::EveryFailureOnce, 2) => {
                let _ = socket.write_all(error).await;
            }
            (Mode::EveryFailureOnce, 3) => tokio::time::sleep(Duration::from_secs(3)).await,
            _ => {
                self.apply(&key, body);
                let _ = socket.write_all(ok).await;
            }
        }
    }
}

/// Reads one HTTP/1.1 request (head and body by Content-Length) from a test server's socket.
pub async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            break (i + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    Some((head, buf[head_end..head_end + length].to_vec()))
}
