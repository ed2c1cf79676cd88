//! A graphql-transport-ws client (tokio-tungstenite).

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Subscription {
    socket: Socket,
    pub id: String,
}

#[derive(Debug)]
pub enum Frame {
    Next(Value),
    Error(Value),
    Complete,
    Closed(Option<u16>),
}

/// Connects, authenticates in `connection_init`, and subscribes.
pub async fn subscribe(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Subscription, String> {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws"
            .parse()
            .map_err(|_| "header".to_string())?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| e.to_string())?;
    let payload = match token {
        Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
        None => json!({}),
    };
    socket
        .send(Message::text(
            json!({ "type": "connection_init", "payload": payload }).to_string(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                match v["type"].as_str() {
                    Some("connection_ack") => break,
                    Some("ping") => continue,
                    _ => return Err(format!("unexpected {v}")),
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("closed: {frame:?}")),
            Ok(Some(Ok(_))) => continue,
            other => return Err(format!("no ack: {other:?}")),
        }
    }
    let id = "1".to_string();
    socket
        .send(Message::text(
            json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }).to_string(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Subscription { socket, id })
}

impl Subscription {
    /// The next frame for this subscription, or `None` after `timeout` of silence.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        loop {
            let msg = match tokio::time::timeout(timeout, self.socket.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Frame::Closed(None)),
                Ok(Some(Err(_))) => return Some(Frame::Closed(None)),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("next") => return Some(Frame::Next(v["payload"].clone())),
                        Some("error") => return Some(Frame::Error(v["payload"].clone())),
                        Some("complete") => return Some(Frame::Complete),
                        Some("ping") => {
                            let _ = self
                                .socket
                                .send(Message::text(json!({"type": "pong"}).to_string()))
                                .await;
                        }
                        _ => {}
                    }
                }
                Message::Close(frame) => {
                    return Some(Frame::Closed(frame.map(|f| u16::from(f.code))))
                }
                _ => {}
            }
        }
    }

    /// Collects `n` `next` payloads (panics on anything else or on silence).
    pub async fn take(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next(timeout).await {
                Some(Frame::Next(v)) => out.push(v),
                other => panic!("expected {} more events, got {other:?}", n - out.len()),
            }
        }
        out
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// A raw connection for protocol-level tests: any subprotocol, any number of operations,
/// and optionally a tiny receive buffer (to play a consumer that stalls).
pub struct Conn {
    socket: Socket,
}

impl Conn {
    pub async fn open(
        addr: std::net::SocketAddr,
        subprotocol: &str,
        recv_buffer: Option<u32>,
    ) -> Conn {
        let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            tcp.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = tcp.connect(addr).await.expect("connect");
        let mut request = format!("ws://{addr}/graphql/ws")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            subprotocol.parse().expect("header"),
        );
        let (socket, _) = tokio_tungstenite::client_async(
            request,
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("upgrade");
        Conn { socket }
    }

    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    pub async fn init(&mut self, token: Option<&str>) {
        let payload = token.map_or(
            json!({}),
            |t| json!({ "Authorization": format!("Bearer {t}") }),
        );
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
    }

    /// The next text message as JSON, or the close code (`Err`), or `None` after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Result<Value, Option<u16>>> {
        loop {
            match tokio::time::timeout(timeout, self.socket.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Err(None)),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Some(Ok(serde_json::from_str(&t).unwrap_or(Value::Null)))
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Some(Err(frame.map(|f| u16::from(f.code))))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
