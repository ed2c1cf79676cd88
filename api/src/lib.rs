//! Triad's API: the axum + async-graphql server and everything `triad serve` runs beside it
//! (projections, the log tail, the auction scheduler).
//!
//! API boundary: this crate is the only one that knows about HTTP, WebSocket, GraphQL and
//! tokens. It turns requests into commands and queries and never holds business rules.

pub mod access;
pub mod auth;
pub mod digest;
pub mod errors;
pub mod graphql;
pub mod http;
pub mod push;
pub mod relay;
pub mod scheduler;
pub mod server;
pub mod tools;
pub mod web;
pub mod ws;

pub use server::{Server, ServerConfig};
