//! [`LogTail`]: one reader of the global log per process, shared by every live consumer
//! (subscriptions), so N subscribers cost one query per batch, not N.

use crate::record::{Position, RecordedEvent};
use crate::store::{EventStore, LogFilter};
use crate::StoreError;
use futures::stream::{self, BoxStream, StreamExt};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Events buffered per receiver before a slow one lags (and falls back to reading the store).
const CHANNEL_CAPACITY: usize = 16_384;
const CATCH_UP_PAGE: i64 = 1_000;

pub struct LogTail {
    store: EventStore,
    sender: broadcast::Sender<Arc<RecordedEvent>>,
    head: watch::Receiver<Position>,
    task: JoinHandle<()>,
}

impl Drop for LogTail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LogTail {
    /// Starts tailing after the current head.
    pub async fn start(store: EventStore) -> Result<Arc<Self>, StoreError> {
        let head = store.head().await?;
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (head_tx, head_rx) = watch::channel(head);
        let mut log = store.subscribe_all(head + 1);
        let fanout = sender.clone();
        let task = tokio::spawn(async move {
            while let Some(next) = log.next().await {
                match next {
                    Ok(event) => {
                        let position = event.position;
                        // No receivers is fine: nobody is watching right now.
                        let _ = fanout.send(Arc::new(event));
                        head_tx.send_replace(position);
                    }
                    Err(e) => tracing::warn!(error = %e, "log tail read failed; retrying"),
                }
            }
        });
        Ok(Arc::new(LogTail {
            store,
            sender,
            head: head_rx,
            task,
        }))
    }

    /// The last position this tail has published.
    pub fn head(&self) -> Position {
        *self.head.borrow()
    }

    pub fn head_watch(&self) -> watch::Receiver<Position> {
        self.head.clone()
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Stored events matching `filter` with `after < position <= upto`, in order; then the
    /// stream ends.
    pub fn events_between(
        &self,
        after: Position,
        upto: Position,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<Arc<RecordedEvent>, StoreError>> {
        let store = self.store.clone();
        stream::unfold(
            (store, after, std::collections::VecDeque::new(), false),
            move |(store, mut next_after, mut page, mut exhausted)| {
                let filter = filter.clone();
                async move {
                    loop {
                        if let Some(e) = page.pop_front() {
                            return Some((Ok(e), (store, next_after, page, exhausted)));
                        }
                        if exhausted || next_after >= upto {
                            return None;
                        }
                        match store.read(next_after + 1, CATCH_UP_PAGE, &filter).await {
                            Ok(events) => {
                                exhausted = (events.len() as i64) < CATCH_UP_PAGE;
                                next_after = events.last().map_or(upto, |e| e.position);
                                page.extend(
                                    events
                                        .into_iter()
                                        .filter(|e| e.position <= upto)
                                        .map(Arc::new),
                                );
                            }
                            Err(e) => return Some((Err(e), (store, next_after, page, true))),
                        }
                    }
                }
            },
        )
        .boxed()
    }

    /// Every event matching `filter` with a position greater than `after`, in order, without
    /// gaps or duplicates: stored events first (read from the store), then live ones from the
    /// shared tail. A receiver that falls behind the shared buffer re-reads the store.
    pub fn events_after(
        self: &Arc<Self>,
        after: Position,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<Arc<RecordedEvent>, StoreError>> {
        struct State {
            tail: Arc<LogTail>,
            live: broadcast::Receiver<Arc<RecordedEvent>>,
            last: Position,
            backlog: std::collections::VecDeque<Arc<RecordedEvent>>,
            filter: LogFilter,
            catching_up: bool,
        }
        let state = State {
            tail: self.clone(),
            // Subscribe before reading the store, so nothing falls between the two.
            live: self.sender.subscribe(),
            last: after,
            backlog: Default::default(),
            filter,
            catching_up: true,
        };
        stream::unfold(state, |mut s| async move {
            loop {
                if let Some(event) = s.backlog.pop_front() {
                    s.last = event.position;
                    return Some((Ok(event), s));
                }
                if s.catching_up {
                    // Read stored events up to what the tail has already published.
                    let upto = s.tail.head();
                    if s.last >= upto {
                        s.catching_up = false;
                        continue;
                    }
                    match s
                        .tail
                        .store
                        .read(s.last + 1, CATCH_UP_PAGE, &s.filter)
                        .await
                    {
                        Ok(events) => {
                            let page_full = events.len() as i64 == CATCH_UP_PAGE;
                            let last_read = events.last().map(|e| e.position);
                            // Events past `upto` will arrive live: the receiver subscribed
                            // before `upto` was read.
                            s.backlog.extend(
                                events
                                    .into_iter()
                                    .filter(|e| e.position <= upto)
                                    .map(Arc::new),
                            );
                            s.catching_up = page_full && last_read.is_some_and(|p| p <= upto);
                        }
                        Err(e) => return Some((Err(e), s)),
                    }
                    continue;
                }
                match s.live.recv().await {
                    Ok(event) if event.position > s.last && s.filter.matches(&event) => {
                        s.last = event.position;
                        return Some((Ok(event), s));
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        metrics::counter!("triad_tail_lagged_total").increment(1);
                        s.live = s.live.resubscribe();
                        s.catching_up = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}
