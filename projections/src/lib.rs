//! Read models and the runner that feeds them from the global log.
//!
//! Architecture invariant: a projection's rows and its checkpoint change in the same
//! transaction, so after a crash it resumes exactly where its last commit left off: every event
//! takes effect exactly once. Projections only read the log; they never append to it.

pub mod alert_engine;
pub mod auctions;
pub mod donations;
pub mod geo;
pub mod matcher;
pub mod notifications;
pub mod patients;
pub mod rebuild;
pub mod runner;
pub mod sql;

pub use runner::{Projection, ProjectionError, ProjectionRunner};
