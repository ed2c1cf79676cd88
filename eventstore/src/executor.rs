//! The command executor: how a command becomes durable events.
//!
//! Per aggregate, commands queue up in a [`Slot`]; whoever holds the slot's lock drains the
//! queue, decides every queued command in order against the cached state (each accepted
//! command's events are applied before the next is decided), and appends all accepted events
//! in one transaction: group commit, so a hot auction is not capped at one commit per bid.
//! Nobody is answered before that transaction commits (a rejection may depend on an
//! earlier bid of the same batch).
//!
//! The cache keeps `(state, version)`; before each batch it reads only the events after
//! `version` (appended by other processes), so a command's cost does not grow with history.
//! A conflict with another process reloads and re-decides the batch, with jittered backoff,
//! bounded by [`MAX_ATTEMPTS`]: a valid bid is decided on its merits, never lost to a race.

use crate::error::StoreError;
use crate::record::EventMetadata;
use crate::store::EventStore;
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::DomainEvent;
use parking_lot::Mutex as SyncMutex;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Mutex};
use triad_domain::{Actor, Decider};
use uuid::Uuid;

pub const MAX_ATTEMPTS: u32 = 12;
/// Cached aggregates kept before idle ones are dropped.
const CACHE_SOFT_LIMIT: usize = 50_000;

/// Who asked, and why: becomes each event's metadata.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub command_id: String,
    pub correlation_id: String,
    pub causation_id: String,
    pub actor: Actor,
}

impl CommandContext {
    /// A new command issued by `actor` on behalf of request `correlation_id`.
    pub fn new(actor: Actor, correlation_id: impl Into<String>) -> Self {
        let correlation_id = correlation_id.into();
        CommandContext {
            command_id: Uuid::now_v7().to_string(),
            causation_id: correlation_id.clone(),
            correlation_id,
            actor,
        }
    }
}

/// An event as appended by a command.
#[derive(Debug, Clone)]
pub struct Committed<E> {
    pub sequence: usize,
    pub event: E,
    pub metadata: EventMetadata,
}

/// What a command's caller gets back once its events are durable.
#[derive(Debug, Clone)]
pub struct Outcome<A: Decider> {
    /// Empty for an idempotent repeat of a command already done.
    pub events: Vec<Committed<A::Event>>,
    /// The aggregate's version (last sequence) right after this command.
    pub version: usize,
    pub state: A::Summary,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    #[error(transparent)]
    Rejected(E),
    #[error("too much contention on this aggregate; try again")]
    Contention,
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Reply<A> = oneshot::Sender<Result<Outcome<A>, CommandError<<A as cqrs_es::Aggregate>::Error>>>;

struct Pending<A: Decider> {
    command: A::Command,
    context: CommandContext,
    reply: Reply<A>,
}

struct Cached<A> {
    state: A,
    version: usize,
    /// False until loaded, and again after a failed append left `state` ahead of the store.
    fresh: bool,
}

struct Slot<A: Decider> {
    queue: SyncMutex<Vec<Pending<A>>>,
    cached: Mutex<Cached<A>>,
}

/// Executes commands for one aggregate type.
pub struct AggregateStore<A: Decider> {
    store: EventStore,
    slots: SyncMutex<HashMap<String, Arc<Slot<A>>>>,
}

impl<A: Decider> AggregateStore<A>
where
    A::Command: Send,
    A::Error: Send + Clone,
{
    pub fn new(store: EventStore) -> Self {
        AggregateStore {
            store,
            slots: SyncMutex::new(HashMap::new()),
        }
    }

    pub fn event_store(&self) -> &EventStore {
        &self.store
    }

    fn slot(&self, id: &str) -> Arc<Slot<A>> {
        let mut slots = self.slots.lock();
        if slots.len() > CACHE_SOFT_LIMIT {
            // Only slots nobody is using (no queued command, no holder) are dropped.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    queue: SyncMutex::new(Vec::new()),
                    cached: Mutex::new(Cached {
                        state: A::default(),
                        version: 0,
                        fresh: false,
                    }),
                })
            })
            .clone()
    }

    /// Decides `command` against aggregate `id` and, when accepted, appends its events.
    /// Returns once the events are durable (or the command is refused).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        context: CommandContext,
    ) -> Result<Outcome<A>, CommandError<A::Error>> {
        let slot = self.slot(id);
        let (reply, mut answer) = oneshot::channel();
        slot.queue.lock().push(Pending {
            command,
            context,
            reply,
        });
        loop {
            {
                let mut cached = slot.cached.lock().await;
                let batch = std::mem::take(&mut *slot.queue.lock());
                if !batch.is_empty() {
                    self.run_batch(id, &mut cached, batch).await;
                }
            }
            // Our command was in that batch or an earlier holder's.
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Empty) => continue,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(CommandError::Store(StoreError::Persistence(
                        "command dropped before it was decided".into(),
                    )))
                }
            }
        }
    }

    /// The current state, caught up with the store.
    pub async fn load(&self, id: &str) -> Result<(A::Summary, usize), StoreError> {
        let slot = self.slot(id);
        let mut cached = slot.cached.lock().await;
        self.refresh(id, &mut cached).await?;
        Ok((cached.state.summary(), cached.version))
    }

    async fn refresh(&self, id: &str, cached: &mut Cached<A>) -> Result<(), StoreError> {
        if !cached.fresh {
            cached.state = A::default();
            cached.version = 0;
        }
        let newer = self.store.load::<A>(id, cached.version).await?;
        for e in newer {
            let sequence = e.sequence;
            let event: A::Event = serde_json::from_value(e.payload).map_err(|err| {
                StoreError::Persistence(format!(
                    "{} {id} #{sequence} ({} v{}) does not decode: {err}",
                    A::TYPE,
                    e.event_type,
                    e.event_version
                ))
            })?;
            cached.state.apply(event);
            cached.version = sequence;
        }
        cached.fresh = true;
        Ok(())
    }

    async fn run_batch(&self, id: &str, cached: &mut Cached<A>, batch: Vec<Pending<A>>) {
        metrics::histogram!("triad_command_batch_size", "aggregate" => A::TYPE)
            .record(batch.len() as f64);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_batch(id, cached, &batch).await {
                Ok(results) => {
                    for (pending, result) in batch.into_iter().zip(results) {
                        let _ = pending.reply.send(result);
                    }
                    return;
                }
                Err(StoreError::Conflict) if attempt < MAX_ATTEMPTS => {
                    metrics::counter!("triad_command_conflicts_total", "aggregate" => A::TYPE)
                        .increment(1);
                    cached.fresh = false;
                    // Full jitter over an exponential ceiling: competing processes spread out.
                    let ceiling = 2u64.pow(attempt.min(7));
                    let pause = rand::thread_rng().gen_range(0..=ceiling);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(err) => {
                    cached.fresh = false;
                    let conflict = matches!(err, StoreError::Conflict);
                    let message = err.to_string();
                    for pending in batch {
                        let _ = pending.reply.send(Err(if conflict {
                            CommandError::Contention
                        } else {
                            CommandError::Store(StoreError::Persistence(message.clone()))
                        }));
                    }
                    return;
                }
            }
        }
    }

    /// Decides the whole batch and appends its events; per-command results on success.
    async fn try_batch(
        &self,
        id: &str,
        cached: &mut Cached<A>,
        batch: &[Pending<A>],
    ) -> Result<Vec<Result<Outcome<A>, CommandError<A::Error>>>, StoreError> {
        // A cache this process kept current is trusted without a round trip: if another
        // process appended meanwhile, an accepted command's append hits the taken sequence
        // (a conflict: refresh and decide again), and rejections are confirmed below.
        let trusted = cached.fresh;
        if !trusted {
            self.refresh(id, cached).await?;
        }
        let now: DateTime<Utc> = Utc::now();
        let mut to_append: Vec<SerializedEvent> = vec![];
        let mut results = Vec::with_capacity(batch.len());
        let mut version = cached.version;
        for pending in batch {
            match cached.state.decide(&pending.command) {
                Err(rejection) => results.push(Err(CommandError::Rejected(rejection))),
                Ok(events) => {
                    let mut committed = Vec::with_capacity(events.len());
                    for event in events {
                        version += 1;
                        let metadata = EventMetadata {
                            event_id: Uuid::now_v7().to_string(),
                            command_id: pending.context.command_id.clone(),
                            correlation_id: pending.context.correlation_id.clone(),
                            causation_id: pending.context.causation_id.clone(),
                            actor_sub: pending.context.actor.sub.to_string(),
                            actor_role: pending.context.actor.role.as_str().to_string(),
                            recorded_at: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                        };
                        to_append.push(SerializedEvent::new(
                            id.to_string(),
                            version,
                            A::TYPE.to_string(),
                            event.event_type(),
                            event.event_version(),
                            serde_json::to_value(&event)?,
                            serde_json::to_value(&metadata)?,
                        ));
                        cached.state.apply(event.clone());
                        committed.push(Committed {
                            sequence: version,
                            event,
                            metadata,
                        });
                    }
                    results.push(Ok(Outcome {
                        events: committed,
                        version,
                        state: cached.state.summary(),
                    }));
                }
            }
        }
        // A refusal, or an acceptance with nothing to record (an idempotent repeat), leaves
        // nothing in the store to collide with, so a stale cache would go unnoticed there.
        let unanchored = results
            .iter()
            .any(|r| r.as_ref().map_or(true, |o| o.events.is_empty()));
        if trusted && unanchored {
            // Make sure no newer events exist (events only ever grow, so none now means none
            // when we decided). `cached.version` is still the stored version here.
            let newer = self.store.load::<A>(id, cached.version).await?;
            if !newer.is_empty() {
                cached.fresh = false;
                return Err(StoreError::Conflict);
            }
        }
        if !to_append.is_empty() {
            // The state now runs ahead of the store until the append commits.
            cached.fresh = false;
            self.store.persist::<A>(&to_append).await?;
            cached.fresh = true;
            cached.version = version;
        }
        Ok(results)
    }
}
