//! The two GraphQL-over-WebSocket protocols and their message names.

use async_graphql::http::{WebSocketProtocols, ALL_WEBSOCKET_PROTOCOLS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// `graphql-ws` (the legacy subscriptions-transport-ws library).
    LegacyWs,
}

pub const SUBPROTOCOLS: [&str; 2] = ALL_WEBSOCKET_PROTOCOLS;

impl Protocol {
    pub fn from_header(value: Option<&str>) -> Protocol {
        match value.and_then(|v| v.parse::<WebSocketProtocols>().ok()) {
            Some(WebSocketProtocols::SubscriptionsTransportWS) => Protocol::LegacyWs,
            // No subprotocol requested: speak the current one.
            _ => Protocol::TransportWs,
        }
    }

    /// The message type carrying an execution result.
    pub fn next_type(self) -> &'static str {
        match self {
            Protocol::TransportWs => "next",
            Protocol::LegacyWs => "data",
        }
    }

    /// `complete` for an operation id already encoded as a JSON string.
    pub fn complete(self, id_json: &str) -> String {
        format!("{{\"id\":{id_json},\"type\":\"complete\"}}")
    }
}
