//! Closes auctions when `endsAt` passes, expires donations whose food has expired, and
//! sweeps capacity reservations left without their claim. Durable across restarts without
//! state of its own: each tick asks the read models what is due, and the aggregates decide
//! (an auction extended by a late bid answers NotDue and is simply asked again later; a
//! reservation already released is released again as a no-op).

use chrono::Utc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use triad_domain::auction::{Auction, AuctionCommand, AuctionError};
use triad_domain::donation::{Charity, CharityCommand, Donation, DonationCommand};
use triad_domain::Actor;
use triad_eventstore::{AggregateStore, CommandContext, CommandError, EventStore};
use triad_projections::auctions::due_auctions;
use triad_projections::donations::{expired_donations, unclaimed_reservations, OpenReservation};

pub const TICK: Duration = Duration::from_millis(500);

/// How long a reservation may stand without its charity's claim before it is swept.
///
/// A claim reserves, then claims a moment later (two commands, milliseconds apart; each
/// retries contention for at most a few seconds). A reservation younger than this may still
/// have its claim in flight, and sweeping it would let that claim land with no capacity
/// behind it; five minutes is far beyond any claim request, and short next to a pickup day.
/// (Should a claim ever be that slow, the saga and the sweeper each re-check the other after
/// acting and restore the reservation; see [`sweep_one`].)
pub const DEFAULT_RESERVATION_GRACE: Duration = Duration::from_secs(300);

/// The environment variable overriding [`DEFAULT_RESERVATION_GRACE`], in whole seconds.
pub const RESERVATION_GRACE_ENV: &str = "TRIAD_RESERVATION_GRACE";

/// Reservations looked at per tick: a backlog drains over a few ticks instead of one long one.
const SWEEP_BATCH: i64 = 100;

#[derive(Debug, thiserror::Error)]
#[error("{RESERVATION_GRACE_ENV} must be a whole number of seconds above 0 (got {0:?})")]
pub struct GraceError(String);

/// The grace period from [`RESERVATION_GRACE_ENV`], or the default when it is unset.
pub fn reservation_grace_from_env() -> Result<Duration, GraceError> {
    match std::env::var(RESERVATION_GRACE_ENV) {
        Err(_) => Ok(DEFAULT_RESERVATION_GRACE),
        Ok(raw) => match raw.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            _ => Err(GraceError(raw)),
        },
    }
}

/// The scheduler's settings that may change while it runs (tests shorten the grace).
#[derive(Debug)]
pub struct SchedulerSettings {
    reservation_grace_ms: AtomicU64,
}

impl SchedulerSettings {
    pub fn new(reservation_grace: Duration) -> Self {
        let settings = SchedulerSettings {
            reservation_grace_ms: AtomicU64::new(0),
        };
        settings.set_reservation_grace(reservation_grace);
        settings
    }

    pub fn reservation_grace(&self) -> Duration {
        Duration::from_millis(self.reservation_grace_ms.load(Ordering::Relaxed))
    }

    pub fn set_reservation_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.reservation_grace_ms.store(ms, Ordering::Relaxed);
    }
}

pub fn spawn(
    store: EventStore,
    auctions: Arc<AggregateStore<Auction>>,
    donations: Arc<AggregateStore<Donation>>,
    charities: Arc<AggregateStore<Charity>>,
    settings: Arc<SchedulerSettings>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let system = Actor::system("scheduler");
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            sweep_reservations(
                &store,
                &charities,
                &donations,
                &system,
                settings.reservation_grace(),
            )
            .await;
            match expired_donations(store.read_pool(), Utc::now(), 100).await {
                Ok(ids) => {
                    for id in ids {
                        let context = CommandContext::new(system.clone(), format!("expire:{id}"));
                        if let Err(e) = donations
                            .execute(&id, DonationCommand::Expire { now: Utc::now() }, context)
                            .await
                        {
                            tracing::warn!(donation = %id, error = %e, "scheduler could not expire donation");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler cannot read expired donations"),
            }
            let due = match due_auctions(store.read_pool(), Utc::now(), 100).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler cannot read due auctions");
                    continue;
                }
            };
            for id in due {
                let command = AuctionCommand::Close {
                    by: system.clone(),
                    now: Utc::now(),
                };
                let context = CommandContext::new(system.clone(), format!("close:{id}"));
                match auctions.execute(&id, command, context).await {
                    Ok(_) => tracing::info!(auction = %id, "auction closed at its end"),
                    // Extended, or already closed by someone else (another replica).
                    Err(CommandError::Rejected(
                        AuctionError::NotDue { .. } | AuctionError::Closed,
                    )) => {}
                    Err(e) => {
                        tracing::warn!(auction = %id, error = %e, "scheduler could not close auction")
                    }
                }
            }
        }
    })
}

/// Releases every reservation older than `grace` whose donation its charity has not claimed
/// (claimed by another charity, expired, cancelled, or still open long after the reservation).
async fn sweep_reservations(
    store: &EventStore,
    charities: &AggregateStore<Charity>,
    donations: &AggregateStore<Donation>,
    system: &Actor,
    grace: Duration,
) {
    let Ok(grace) = chrono::Duration::from_std(grace) else {
        return; // beyond chrono's range: nothing is that old
    };
    let due = match unclaimed_reservations(store.read_pool(), Utc::now() - grace, SWEEP_BATCH).await
    {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "scheduler cannot read unclaimed reservations");
            return;
        }
    };
    for reservation in due {
        let outcome = match sweep_one(charities, donations, system, &reservation).await {
            Ok(outcome) => outcome,
            // Another replica is releasing the same reservation: it is done either way, and
            // if not, the next tick sees it again.
            Err(SweepError::Charity(CommandError::Contention)) => continue,
            Err(e) => {
                metrics::counter!("triad_reservation_sweeps_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(charity = %reservation.charity_id, donation = %reservation.donation_id, error = %e, "could not sweep a reservation");
                continue;
            }
        };
        match outcome {
            Swept::Released => {
                metrics::counter!("triad_reservation_sweeps_total", "outcome" => "released")
                    .increment(1);
                tracing::info!(
                    charity = %reservation.charity_id,
                    donation = %reservation.donation_id,
                    day = %reservation.day,
                    kg = reservation.kg,
                    reserved_at = %reservation.reserved_at,
                    "released a reservation its donation's claim never took"
                );
            }
            Swept::Restored => {
                metrics::counter!("triad_reservation_sweeps_total", "outcome" => "restored")
                    .increment(1);
                tracing::warn!(charity = %reservation.charity_id, donation = %reservation.donation_id, "a claim landed while its reservation was swept: reserved again");
            }
            // The read model had not caught up with a claim or an earlier release (maybe by
            // another replica): nothing to do, and the row goes once it catches up.
            Swept::Backed | Swept::AlreadyReleased => {}
        }
    }
}

#[derive(Debug, PartialEq)]
enum Swept {
    Released,
    /// Released, but a claim of that charity landed meanwhile, so it was reserved again.
    Restored,
    /// The donation is claimed by this charity after all.
    Backed,
    AlreadyReleased,
}

#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error(transparent)]
    Store(#[from] triad_eventstore::StoreError),
    #[error(transparent)]
    Charity(#[from] CommandError<triad_domain::donation::DonationError>),
}

/// Releases one reservation unless its charity's claim backs it.
///
/// The donation is read from its aggregate, not the read model, so a lagging projection
/// cannot get a claimed donation's reservation released. The one race left is a claim that
/// lands between that read and the release (a retry of the crashed claim, which finds its old
/// reservation still held and goes on). So, as the claim saga does from its side, the sweeper
/// checks again after acting: it releases, then reads the donation; the saga claims, then
/// reads the charity. Whichever acts second sees the other's write and reserves again, so a
/// claim is never left without its capacity (both may; a second reserve is a no-op).
async fn sweep_one(
    charities: &AggregateStore<Charity>,
    donations: &AggregateStore<Donation>,
    system: &Actor,
    r: &OpenReservation,
) -> Result<Swept, SweepError> {
    let claimed_by_it = |d: &Donation| d.claimed_by.as_deref() == Some(r.charity_id.as_str());
    let (donation, _) = donations.load(&r.donation_id).await?;
    if claimed_by_it(&donation) {
        return Ok(Swept::Backed);
    }
    let context = || {
        CommandContext::new(
            system.clone(),
            format!("sweep:{}:{}:{}", r.charity_id, r.donation_id, r.day),
        )
    };
    let release = CharityCommand::Release {
        donation_id: r.donation_id.clone(),
        day: r.day,
    };
    let released = charities.execute(&r.charity_id, release, context()).await?;
    if released.events.is_empty() {
        return Ok(Swept::AlreadyReleased);
    }
    let (donation, _) = donations.load(&r.donation_id).await?;
    if !claimed_by_it(&donation) {
        return Ok(Swept::Released);
    }
    let Some(food_type) = donation.food_type else {
        return Ok(Swept::Released); // a claimed donation always has one
    };
    let reserve = CharityCommand::Reserve {
        donation_id: r.donation_id.clone(),
        day: r.day,
        kg: r.kg,
        food_type,
    };
    if let Err(e) = charities.execute(&r.charity_id, reserve, context()).await {
        // Capacity taken in the instant between: the charity is over-committed by this one
        // donation. Loud, because it needs a person.
        tracing::error!(charity = %r.charity_id, donation = %r.donation_id, error = %e, "a claim landed while its reservation was swept, and it could not be reserved again");
        return Err(e.into());
    }
    Ok(Swept::Restored)
}
