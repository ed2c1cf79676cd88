//! A connection's outgoing queue and the task that writes it.
//!
//! Everything a connection sends goes through its [`Outbox`]: bounded (a consumer that stops
//! reading cannot grow server memory), and never awaited by producers (`try_send`), so one
//! slow socket never delays the others. When the queue is full the connection is dropped as
//! a slow consumer. The writer drains everything queued and writes it with one flush, so a
//! burst of events costs one write per socket, not one per event.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::SplitSink;
use futures::SinkExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Close code for a consumer dropped because its queue overflowed (4000-4999 are for
/// applications; graphql-transport-ws uses 4400-4499 for protocol errors).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// One outgoing message.
#[derive(Debug)]
pub enum Out {
    /// An event for one operation: the payload is the group's JSON, shared by all members;
    /// `id_json` (the operation id, already a JSON string) is spliced in by the writer.
    Event {
        kind: &'static str,
        id_json: Arc<str>,
        payload: Arc<str>,
    },
    Text(String),
    Close(u16, String),
}

impl Out {
    fn into_message(self) -> Message {
        match self {
            Out::Event {
                kind,
                id_json,
                payload,
            } => {
                let mut frame = String::with_capacity(payload.len() + id_json.len() + 32);
                frame.push_str("{\"id\":");
                frame.push_str(&id_json);
                frame.push_str(",\"type\":\"");
                frame.push_str(kind);
                frame.push_str("\",\"payload\":");
                frame.push_str(&payload);
                frame.push('}');
                Message::Text(Utf8Bytes::from(frame))
            }
            Out::Text(text) => Message::Text(Utf8Bytes::from(text)),
            Out::Close(code, reason) => Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            })),
        }
    }
}

/// The sending side of a connection's queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Out>,
    slow: CancellationToken,
}

impl Outbox {
    /// Queues `out`; false when the connection is gone or was just dropped for being slow.
    pub fn push(&self, out: Out) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("triad_ws_slow_consumers_dropped_total").increment(1);
                self.slow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when this connection has been dropped as a slow consumer.
    pub async fn dropped(&self) {
        self.slow.cancelled().await
    }
}

/// Creates a connection's queue (holding at most `capacity` messages) and starts its writer.
pub fn start(
    sink: SplitSink<WebSocket, Message>,
    capacity: usize,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity);
    let slow = CancellationToken::new();
    let writer = tokio::spawn(write(sink, rx, slow.clone()));
    (Outbox { tx, slow }, writer)
}

async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Out>,
    slow: CancellationToken,
) {
    let mut batch = Vec::with_capacity(64);
    loop {
        tokio::select! {
            biased;
            _ = slow.cancelled() => {
                let frame = Message::Close(Some(CloseFrame {
                    code: CLOSE_SLOW_CONSUMER,
                    reason: Utf8Bytes::from_static("slow consumer: too many undelivered messages"),
                }));
                // The socket may be stuck; do not wait long for a polite close.
                let _ = tokio::time::timeout(Duration::from_millis(200), sink.send(frame)).await;
                return;
            }
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
                    return;
                }
                let mut closing = false;
                for out in batch.drain(..) {
                    closing |= matches!(out, Out::Close(..));
                    if sink.feed(out.into_message()).await.is_err() {
                        return;
                    }
                    if closing {
                        break;
                    }
                }
                let flushed = tokio::select! {
                    biased;
                    _ = slow.cancelled() => continue,
                    r = sink.flush() => r.is_ok(),
                };
                if !flushed || closing {
                    return;
                }
            }
        }
    }
}
