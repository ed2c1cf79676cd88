//! GraphQL over WebSocket (`graphql-transport-ws` and the legacy `graphql-ws`), served by
//! our own connection loop on top of the fan-out [`engine`].
//!
//! Why not async-graphql's `GraphQLWebSocket`: it executes every subscription once per
//! subscriber and writes one frame per event per socket, which measured at p99 1.6-3.6 s
//! for 10,000 watchers of one auction (../shared/notes/fanout.md). Here a group of identical
//! subscriptions executes once per event and each socket gets the same bytes through a
//! bounded, coalescing outbox. The protocol behaviour is kept: `connection_init` with the
//! token, `subscribe`/`start`, `next`/`data`, `complete`/`stop`, ping/pong, and the
//! graphql-transport-ws close codes (4400, 4401, 4403, 4408, 4409, 4429).

pub mod engine;
pub mod outbox;
pub mod protocol;

use crate::auth::Auth;
use crate::graphql::Caller;
use async_graphql::http::ClientMessage;
use axum::extract::ws::{Message, WebSocket};
use engine::{Engine, Subscription};
use futures::StreamExt;
use outbox::{Out, Outbox};
use protocol::Protocol;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Limits of one WebSocket connection.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Messages queued for a socket before it is dropped as a slow consumer.
    pub outbox_capacity: usize,
    /// Concurrent operations per connection.
    pub max_operations: usize,
    /// Time allowed between the upgrade and `connection_init`.
    pub init_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            outbox_capacity: 1_024,
            max_operations: 100,
            init_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves one upgraded connection until either side closes it.
pub async fn serve(
    socket: WebSocket,
    protocol: Protocol,
    engine: Arc<Engine>,
    auth: Arc<Auth>,
    config: WsConfig,
) {
    metrics::gauge!("triad_ws_connections").increment(1.0);
    let (sink, mut incoming) = socket.split();
    let (outbox, writer) = outbox::start(sink, config.outbox_capacity);
    let (finished_tx, mut finished_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut caller: Option<Caller> = None;
    let mut operations: HashMap<String, Subscription> = HashMap::new();
    let init_deadline = tokio::time::sleep(config.init_timeout);
    tokio::pin!(init_deadline);
    loop {
        tokio::select! {
            _ = outbox.dropped() => break,
            _ = &mut init_deadline, if caller.is_none() => {
                outbox.push(Out::Close(4408, "Connection initialisation timeout".into()));
                break;
            }
            Some(id) = finished_rx.recv() => {
                operations.remove(&id);
            }
            message = incoming.next() => {
                let text = match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        outbox.push(Out::Close(4400, "binary messages are not supported".into()));
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                let step = handle(&text, protocol, &engine, &auth, &config, &outbox, &finished_tx, &mut caller, &mut operations);
                if step == Step::Stop {
                    break;
                }
            }
        }
    }
    // Unsubscribe everything, then let the writer send what is queued and close.
    operations.clear();
    drop(outbox);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    metrics::gauge!("triad_ws_connections").decrement(1.0);
}

#[derive(PartialEq, Eq)]
enum Step {
    Continue,
    Stop,
}

#[allow(clippy::too_many_arguments)]
fn handle(
    text: &str,
    protocol: Protocol,
    engine: &Arc<Engine>,
    auth: &Auth,
    config: &WsConfig,
    outbox: &Outbox,
    finished: &engine::Finished,
    caller: &mut Option<Caller>,
    operations: &mut HashMap<String, Subscription>,
) -> Step {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            outbox.push(Out::Close(4400, format!("invalid message: {e}")));
            return Step::Stop;
        }
    };
    match message {
        ClientMessage::ConnectionInit { payload } => {
            if caller.is_some() {
                outbox.push(Out::Close(4429, "Too many initialisation requests".into()));
                return Step::Stop;
            }
            let payload = payload.unwrap_or_default();
            let header = payload
                .get("Authorization")
                .or_else(|| payload.get("authorization"))
                .and_then(|v| v.as_str());
            match auth.from_header(header) {
                Ok(actor) => {
                    *caller = Some(Caller {
                        actor,
                        request_id: uuid::Uuid::now_v7().to_string(),
                    });
                    outbox.push(Out::Text(r#"{"type":"connection_ack"}"#.into()));
                }
                Err(e) => {
                    if protocol == Protocol::LegacyWs {
                        let error = serde_json::json!({ "type": "connection_error", "payload": { "message": e.to_string(), "extensions": { "code": "UNAUTHENTICATED" } } });
                        outbox.push(Out::Text(error.to_string()));
                    }
                    outbox.push(Out::Close(4403, format!("Forbidden: {e}")));
                    return Step::Stop;
                }
            }
        }
        ClientMessage::Start { id, payload } => {
            let Some(who) = caller.as_ref() else {
                outbox.push(Out::Close(4401, "Unauthorized".into()));
                return Step::Stop;
            };
            if operations.contains_key(&id) {
                outbox.push(Out::Close(
                    4409,
                    format!("Subscriber for {id} already exists"),
                ));
                return Step::Stop;
            }
            if operations.len() >= config.max_operations {
                let error = serde_json::json!({
                    "id": id,
                    "type": "error",
                    "payload": [{ "message": format!("at most {} operations per connection", config.max_operations), "extensions": { "code": "TOO_MANY_SUBSCRIPTIONS" } }]
                });
                outbox.push(Out::Text(error.to_string()));
                return Step::Continue;
            }
            let subscription = engine.subscribe(
                protocol,
                who,
                id.clone(),
                payload,
                outbox.clone(),
                finished.clone(),
            );
            operations.insert(id, subscription);
        }
        ClientMessage::Stop { id } => {
            if operations.remove(&id).is_some() && protocol == Protocol::LegacyWs {
                let id_json = serde_json::to_string(&id).unwrap_or_default();
                outbox.push(Out::Text(protocol.complete(&id_json)));
            }
        }
        ClientMessage::ConnectionTerminate => return Step::Stop,
        ClientMessage::Ping { .. } => {
            outbox.push(Out::Text(r#"{"type":"pong"}"#.into()));
        }
        ClientMessage::Pong { .. } => {}
    }
    Step::Continue
}
