//! The synchronous decision half of an aggregate.

use cqrs_es::Aggregate;

/// An aggregate whose decisions are a pure function of its state and a command.
///
/// The command executor decides a queue of commands against one in-memory state, applying
/// each accepted command's events before deciding the next, and appends all of them in one
/// transaction (group commit). `decide` returning `Ok(vec![])` means "already done"
/// (an idempotent repeat): nothing is appended and the caller gets the current state.
pub trait Decider: Aggregate {
    /// What a caller needs to see of the state right after its command (kept small: it is
    /// computed once per command while the aggregate is locked).
    type Summary: Clone + Send + Sync + std::fmt::Debug + 'static;

    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    fn summary(&self) -> Self::Summary;
}

/// `Aggregate::handle` for every decider: decide, then write each event to the sink (which
/// applies it). One body for all aggregates.
pub async fn handle<A: Decider>(
    aggregate: &mut A,
    command: A::Command,
    sink: &cqrs_es::event_sink::EventSink<A>,
) -> Result<(), A::Error> {
    for event in aggregate.decide(&command)? {
        sink.write(event, aggregate).await;
    }
    Ok(())
}
