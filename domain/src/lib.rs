//! Triad's domain: aggregates, commands, events and the invariants that guard them.
//!
//! Architecture invariant: this crate is pure. No I/O, no clock, no async runtime; every
//! command carries the time it was issued (`now`), so deciding is deterministic and replayable.
//! Aggregates keep the cqrs-es shape (`handle` emits events, `apply` mutates) and add
//! [`Decider::decide`], a synchronous `&self` decision the command executor uses to batch
//! commands without cloning state.

pub mod actor;
pub mod alerting;
pub mod auction;
pub mod catalog;
pub mod decider;
pub mod donation;
pub mod geo;
pub mod ids;
pub mod money;
pub mod patient;
pub mod personal;
pub mod upcasters;
pub mod vitals;

pub use actor::{Actor, Role};
pub use decider::Decider;
pub use ids::{AuctionId, ClientBidId, UserId};
pub use money::Cents;
