//! Delivers donation notifications to the push gateway (TRIAD_PUSH_URL): each POST carries
//! its idempotency key (`Idempotency-Key` header and in the body), failures are retried with
//! exponential backoff and full jitter, and after `max_attempts` a notification is
//! dead-lettered (`triad notifications --dead-letters`, `--redrive`). At least once, in
//! effect exactly once for a receiver that deduplicates by key.

use rand::Rng;
use std::time::Duration;
use triad_eventstore::EventStore;
use triad_projections::notifications;

#[derive(Debug, Clone)]
pub struct PushConfig {
    pub url: String,
    pub max_attempts: i64,
    /// First retry waits up to this; each further one doubles the ceiling, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl PushConfig {
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("TRIAD_PUSH_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        Some(PushConfig {
            url,
            max_attempts: 10,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        })
    }

    /// Full jitter: a uniform pause up to base * 2^(attempt - 1), capped.
    fn backoff(&self, attempt: i64) -> Duration {
        let doublings = attempt.clamp(1, 16) as u32 - 1;
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let ms = rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64);
        Duration::from_millis(ms.max(1))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn spawn(store: EventStore, config: PushConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().timeout(config.timeout).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "push client cannot start");
                return;
            }
        };
        loop {
            let due = match notifications::due(store.read_pool(), now_ms(), 50).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "push worker cannot read the outbox");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            for n in due {
                // Several replicas may run a worker: only the one that leases it sends.
                let lease = now_ms() + config.timeout.as_millis() as i64 + 1_000;
                if !notifications::lease(store.read_pool(), &n, lease)
                    .await
                    .unwrap_or(false)
                {
                    continue;
                }
                let sent = client
                    .post(&config.url)
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", &n.key)
                    .body(n.payload.clone())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
                let recorded = match sent {
                    Ok(_) => {
                        metrics::counter!("triad_push_delivered_total").increment(1);
                        notifications::delivered(store.read_pool(), &n.key).await
                    }
                    Err(e) => {
                        let attempt = n.attempts + 1;
                        let next = (attempt < config.max_attempts)
                            .then(|| now_ms() + config.backoff(attempt).as_millis() as i64);
                        let outcome = if next.is_some() {
                            "retry"
                        } else {
                            "dead_letter"
                        };
                        metrics::counter!("triad_push_failures_total", "outcome" => outcome)
                            .increment(1);
                        notifications::failed(store.read_pool(), &n.key, &e.to_string(), next).await
                    }
                };
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, key = %n.key, "push worker cannot record an attempt");
                }
            }
        }
    })
}
