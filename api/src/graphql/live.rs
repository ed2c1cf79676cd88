//! What subscription resolvers share with the fan-out engine (`crate::ws`).
//!
//! The engine runs one execution of a subscription per *group* of identical subscriptions
//! and tells the resolver, through context data, where that execution starts
//! ([`GroupFeed`]); the resolver reports the log position of each event it yields back
//! through the same value, so the engine knows how far each group has got. For one
//! subscriber resuming from `after`, the engine replays the gap with a bounded execution
//! ([`ReplayUpTo`]) and then attaches it to the group.

use crate::errors;
use async_graphql::Context;
use futures::stream::{BoxStream, StreamExt};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use triad_eventstore::store::LogFilter;
use triad_eventstore::{LogTail, Position, RecordedEvent};

/// Who may share one execution of a subscription field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The field's events and every field below them read the same for every caller.
    Public,
    /// The outcome depends on the caller: share only among connections of the same actor.
    PerActor,
}

/// Subscription fields the engine groups, and how. Fields not listed run one execution per
/// subscriber (correct, just not shared).
pub const LIVE_FIELDS: &[(&str, Sharing)] = &[
    ("bidPlaced", Sharing::Public),
    ("outbid", Sharing::PerActor),
    ("alertRaised", Sharing::PerActor),
    ("donationMatched", Sharing::PerActor),
];

/// The argument that resumes a subscription from a log position.
pub const RESUME_ARGUMENT: &str = "after";

/// Set by the engine on a group's execution.
#[derive(Debug, Clone)]
pub struct GroupFeed {
    /// Position after which the group's execution starts.
    pub start: Position,
    /// Position of the event behind the response most recently yielded.
    pub last: Arc<AtomicI64>,
}

impl GroupFeed {
    pub fn new(start: Position) -> Self {
        GroupFeed {
            start,
            last: Arc::new(AtomicI64::new(start)),
        }
    }

    pub fn last(&self) -> Position {
        self.last.load(Ordering::Acquire)
    }
}

/// Set by the engine on a joining subscriber's replay: deliver stored events after the
/// subscriber's `after` up to and including this position, then end.
#[derive(Debug, Clone, Copy)]
pub struct ReplayUpTo(pub Position);

/// Which part of the log a subscription execution covers, as the engine asked (or, without
/// the engine, from `after` or from now on).
#[derive(Debug, Clone)]
pub struct Window {
    /// Events after this position are delivered.
    pub from: Position,
    upto: Option<Position>,
    feed: Option<GroupFeed>,
}

pub fn window(
    ctx: &Context<'_>,
    tail: &Arc<LogTail>,
    after: Option<Position>,
) -> async_graphql::Result<Window> {
    if after.is_some_and(|a| a < 0) {
        return Err(errors::invalid_input("after must not be negative"));
    }
    if let Some(ReplayUpTo(upto)) = ctx.data_opt::<ReplayUpTo>().copied() {
        return Ok(Window {
            from: after.unwrap_or(upto),
            upto: Some(upto),
            feed: None,
        });
    }
    if let Some(feed) = ctx.data_opt::<GroupFeed>().cloned() {
        return Ok(Window {
            from: feed.start,
            upto: None,
            feed: Some(feed),
        });
    }
    Ok(Window {
        from: after.unwrap_or_else(|| tail.head()),
        upto: None,
        feed: None,
    })
}

impl Window {
    /// The window's events matching `filter`, in order.
    pub fn stream(
        self,
        tail: &Arc<LogTail>,
        filter: LogFilter,
    ) -> BoxStream<'static, async_graphql::Result<Arc<RecordedEvent>>> {
        match (self.upto, self.feed) {
            (Some(upto), _) => tail
                .events_between(self.from, upto, filter)
                .map(|e| e.map_err(errors::internal))
                .boxed(),
            (None, Some(feed)) => tail
                .events_after(self.from, filter)
                .map(move |e| {
                    let e = e.map_err(errors::internal)?;
                    feed.last.store(e.position, Ordering::Release);
                    Ok(e)
                })
                .boxed(),
            (None, None) => tail
                .events_after(self.from, filter)
                .map(|e| e.map_err(errors::internal))
                .boxed(),
        }
    }
}

/// The events a subscription resolver should turn into items (see [`window`]).
pub fn events(
    ctx: &Context<'_>,
    tail: &Arc<LogTail>,
    after: Option<Position>,
    filter: LogFilter,
) -> async_graphql::Result<BoxStream<'static, async_graphql::Result<Arc<RecordedEvent>>>> {
    Ok(window(ctx, tail, after)?.stream(tail, filter))
}
