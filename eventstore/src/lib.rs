//! The event store: one global, ordered, append-only log shared by every aggregate type.
//!
//! - [`StoreUrl`] selects the backend: `sqlite://` (embedded default, through sqlite-es) or
//!   `postgres://` (through postgres-es). [`EventStore::connect`] creates and migrates the
//!   schema idempotently; the cqrs-es crates create no tables.
//! - Appends go through [`AggregateStore`]: commands for one aggregate are serialized inside the
//!   process and decided in batches against a cached state (group commit); conflicts with other
//!   processes are retried with jittered backoff.
//! - Reads: [`EventStore::read_all`] and [`EventStore::subscribe_all`] (catch-up, then tail) in
//!   global position order; [`tail::LogTail`] shares one reader among all live consumers.
//!
//! Architecture invariant: a reader never skips an event. Positions are assigned at commit time
//! under a lock (see `schema.rs`), so position order is commit order and the visible log is
//! always a gap-free prefix.

pub mod audit;
pub mod chain;
pub mod crypto;
pub mod db;
pub mod error;
pub mod executor;
pub mod record;
mod schema;
pub mod store;
pub mod tail;
pub mod upcast;
pub mod url;
pub mod verify;

pub use error::StoreError;
pub use executor::{AggregateStore, CommandContext, CommandError, Committed, Outcome};
pub use record::{EventMetadata, Position, RecordedEvent};
pub use store::{EventStore, StoreOptions};
pub use tail::LogTail;
pub use url::StoreUrl;
