//! Assembles and runs `triad serve`.

use crate::auth::Auth;
use crate::graphql::{build_schema, Services};
use crate::http::{router, AppState};
use crate::scheduler;
use crate::ws::{engine::Engine, WsConfig};
use axum::serve::ListenerExt;
use futures::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use triad_domain::auction::Auction;
use triad_domain::donation::Donation;
use triad_domain::patient::PatientAlerts;
use triad_eventstore::{AggregateStore, EventStore, LogTail, StoreError, StoreUrl};
use triad_projections::alert_engine::AlertEngine;
use triad_projections::auctions::AuctionProjection;
use triad_projections::donations::{enable_postgis, DonationProjection};
use triad_projections::geo::GeoIndex;
use triad_projections::matcher::Matcher;
use triad_projections::patients::PatientProjection;
use triad_projections::{Projection, ProjectionError, ProjectionRunner};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub store: StoreUrl,
    pub listen: SocketAddr,
    pub jwt_secret: String,
    pub ws: WsConfig,
    /// SO_SNDBUF for accepted sockets; `None` leaves the kernel's autotuning alone. Tests set
    /// it small to make a stalled consumer's backlog reach the outbox quickly.
    pub tcp_send_buffer: Option<usize>,
    /// The ERP for integration events (TRIAD_ERP_URL); `None`: relay off.
    pub relay: Option<crate::relay::RelayConfig>,
    /// The push gateway for donation notifications (TRIAD_PUSH_URL); `None`: subscriptions only.
    pub push: Option<crate::push::PushConfig>,
    /// The digest's language-model provider (TRIAD_LLM_URL); `None`: built-in only.
    pub llm: Option<crate::digest::LlmConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    #[error(transparent)]
    Config(#[from] scheduler::GraceError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Every read model `triad serve` keeps (and `triad rebuild` can rebuild).
pub async fn projections(store: &EventStore) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(AuctionProjection),
        Arc::new(PatientProjection::new(store.is_postgres())),
        Arc::new(triad_projections::notifications::NotificationOutbox),
        Arc::new(DonationProjection {
            postgis: store.is_postgres() && enable_postgis(store.read_pool()).await,
        }),
    ]
}

/// Keeps the in-memory geo index up to date with the log (rebuilt from it at start).
fn spawn_geo_feed(store: EventStore, geo: Arc<GeoIndex>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let filter = triad_eventstore::store::LogFilter {
            aggregate_type: Some("Charity".into()),
            aggregate_id: None,
            event_types: vec!["CharityRegistered".into(), "CharityUpdated".into()],
        };
        let mut log = store.subscribe(1, filter);
        while let Some(next) = log.next().await {
            match next {
                Ok(e) => geo.apply(&e),
                Err(e) => tracing::warn!(error = %e, "geo index feed: log read failed"),
            }
        }
    })
}

/// One Prometheus recorder per process (the `metrics` facade is global).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A running server: its address, and the tasks that stop when it is dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub store: EventStore,
    pub auctions: Arc<AggregateStore<Auction>>,
    pub runner: Arc<ProjectionRunner>,
    pub engine: Arc<Engine>,
    pub charities: Arc<AggregateStore<triad_domain::donation::Charity>>,
    pub donations: Arc<AggregateStore<Donation>>,
    scheduler_settings: Arc<scheduler::SchedulerSettings>,
    demo: crate::web::DemoSwitch,
    http: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    alert_engine: JoinHandle<()>,
    matcher: JoinHandle<()>,
    geo_feed: JoinHandle<()>,
    push: Option<JoinHandle<()>>,
    relay: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.abort();
        self.scheduler.abort();
        self.alert_engine.abort();
        self.matcher.abort();
        self.geo_feed.abort();
        for task in [&self.push, &self.relay].into_iter().flatten() {
            task.abort();
        }
    }
}

impl Server {
    /// Connects to the store, starts projections, the log tail and the scheduler, and
    /// listens. Returns once the server accepts connections.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let scheduler_settings = Arc::new(scheduler::SchedulerSettings::new(
            scheduler::reservation_grace_from_env()?,
        ));
        let store = EventStore::connect(&config.store).await?;
        let runner =
            Arc::new(ProjectionRunner::start(store.clone(), projections(&store).await).await?);
        let alert_engine = AlertEngine::start(
            store.clone(),
            Arc::new(AggregateStore::<PatientAlerts>::new(store.clone())),
        )
        .await?;
        let donations = Arc::new(AggregateStore::<Donation>::new(store.clone()));
        let charities = Arc::new(AggregateStore::new(store.clone()));
        let matcher = Matcher::start(store.clone(), donations.clone()).await?;
        let geo = Arc::new(GeoIndex::default());
        let geo_feed = spawn_geo_feed(store.clone(), geo.clone());
        let push = config
            .push
            .clone()
            .map(|p| crate::push::spawn(store.clone(), p));
        let relay = match config.relay.clone() {
            Some(r) => Some(crate::relay::start(store.clone(), r).await?),
            None => None,
        };
        let tail = LogTail::start(store.clone()).await?;
        let auctions = Arc::new(AggregateStore::<Auction>::new(store.clone()));
        let schema = build_schema(Some(Services {
            store: store.clone(),
            auctions: auctions.clone(),
            patients: Arc::new(AggregateStore::new(store.clone())),
            vitals: Arc::new(AggregateStore::new(store.clone())),
            charities: charities.clone(),
            donations: donations.clone(),
            geo,
            tail: tail.clone(),
            llm: config.llm.clone(),
        }));
        let engine = Engine::new(schema.clone(), tail.clone(), config.ws.outbox_capacity);
        let demo = crate::web::DemoSwitch::default();
        let state = AppState {
            demo: demo.clone(),
            engine: engine.clone(),
            ws: config.ws.clone(),
            schema,
            auth: Arc::new(Auth::new(&config.jwt_secret)),
            store: store.clone(),
            tail,
            runner: runner.clone(),
            metrics: metrics_handle(),
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let app = router(state);
        // Small frames, latency-bound: never wait for Nagle.
        let send_buffer = config.tcp_send_buffer;
        let listener = listener.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(true);
            if let Some(size) = send_buffer {
                let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(size);
            }
        });
        let http = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http server stopped");
            }
        });
        let scheduler = scheduler::spawn(
            store.clone(),
            auctions.clone(),
            donations.clone(),
            charities.clone(),
            scheduler_settings.clone(),
        );
        tracing::info!(%addr, store = %config.store, "triad is serving");
        Ok(Server {
            addr,
            store,
            auctions,
            runner,
            engine,
            http,
            scheduler,
            alert_engine,
            charities,
            donations,
            scheduler_settings,
            demo,
            matcher,
            geo_feed,
            push,
            relay,
        })
    }

    /// A charity's current state (tests and tools).
    pub async fn charities_state(&self, id: &str) -> (triad_domain::donation::Charity, usize) {
        self.charities.load(id).await.unwrap_or_default()
    }

    /// A donation's current state (tests and tools).
    pub async fn donation_state(&self, id: &str) -> (Donation, usize) {
        self.donations.load(id).await.unwrap_or_default()
    }

    /// Changes how old an unclaimed reservation must be before the scheduler releases it
    /// (TRIAD_RESERVATION_GRACE at start; tests shorten it).
    pub fn set_reservation_grace(&self, grace: std::time::Duration) {
        self.scheduler_settings.set_reservation_grace(grace);
    }

    /// Opens `GET /demo/tokens` with these identities (`triad serve --demo`, once its data is
    /// loaded). Only the first call counts.
    pub fn enable_demo(&self, identities: Vec<crate::web::DemoIdentity>) {
        let _ = self.demo.set(identities);
    }

    /// Runs until the HTTP server stops.
    pub async fn wait(mut self) {
        let _ = (&mut self.http).await;
    }
}
