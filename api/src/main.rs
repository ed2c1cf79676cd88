//! `triad`: the server and its tools. A thin shell over the library crates.

mod demo;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use triad_api::auth::{parse_ttl, Auth, DEV_SECRET};
use triad_api::{Server, ServerConfig};
use triad_domain::{Role, UserId};
use triad_eventstore::StoreUrl;

#[derive(Parser)]
#[command(
    name = "triad",
    version,
    about = "Triad: one event store, three real-time businesses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve GraphQL (HTTP and WebSocket), run projections and the auction scheduler.
    Serve {
        /// sqlite://PATH, postgres://... or esdb://...
        #[arg(long, env = "TRIAD_STORE", default_value = triad_eventstore::url::DEFAULT_STORE_URL)]
        store: String,
        #[arg(long, env = "TRIAD_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Load a small demo data set into an empty store and print dev tokens.
        #[arg(long)]
        demo: bool,
    },
    /// Mint a signed dev token (HS256 with TRIAD_JWT_SECRET).
    Token {
        #[arg(long)]
        sub: String,
        /// dealer, seller, doctor, patient, donor, charity or admin
        #[arg(long)]
        role: String,
        /// Lifetime: 30s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Print the GraphQL SDL (schemas/schema.graphql must equal it).
    Schema {
        /// Also write the event catalog (one JSON Schema per event type and version) here.
        #[arg(long)]
        events_dir: Option<std::path::PathBuf>,
    },
    /// Print events from the global log in order (position, time, aggregate, type, payload).
    Replay {
        #[arg(long, env = "TRIAD_STORE", default_value = triad_eventstore::url::DEFAULT_STORE_URL)]
        store: String,
        /// First position to print.
        #[arg(long, default_value_t = 1)]
        from: i64,
        #[arg(long)]
        limit: Option<i64>,
        /// Only one aggregate: TYPE/ID (or just TYPE).
        #[arg(long)]
        aggregate: Option<String>,
        /// Only these event types (repeatable).
        #[arg(long = "type")]
        event_types: Vec<String>,
        #[arg(long, default_value = "table")]
        format: triad_api::tools::Format,
        /// Keep printing new events as they arrive.
        #[arg(long)]
        follow: bool,
    },
    /// Rebuild read models from the log while servers keep running (swapped in atomically).
    Rebuild {
        #[arg(long, env = "TRIAD_STORE", default_value = triad_eventstore::url::DEFAULT_STORE_URL)]
        store: String,
        /// Projections by name (auctions, patients, donations).
        projections: Vec<String>,
        /// Every replayable projection.
        #[arg(long, conflicts_with_all = ["projections", "outdated"])]
        all: bool,
        /// Those whose code version differs from the version their rows were built with.
        #[arg(long, conflicts_with = "projections")]
        outdated: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Relay sold/unsold auctions to the ERP (TRIAD_ERP_URL) on its own, or manage its dead letters.
    Relay {
        #[arg(long, env = "TRIAD_STORE", default_value = triad_eventstore::url::DEFAULT_STORE_URL)]
        store: String,
        /// The ERP endpoint.
        #[arg(long, env = "TRIAD_ERP_URL")]
        erp_url: Option<String>,
        /// List dead-lettered messages (and those held behind them).
        #[arg(long)]
        dead_letters: bool,
        /// Deliver dead-lettered messages again, in order per auction.
        #[arg(long, conflicts_with = "dead_letters")]
        redrive: bool,
    },
    /// Check the store (positions, sequences, hash chain, decryptability); exit 1 on a fault.
    Verify {
        #[arg(long, env = "TRIAD_STORE", default_value = triad_eventstore::url::DEFAULT_STORE_URL)]
        store: String,
    },
    /// Donation notifications for the push gateway: list dead letters, or redrive them.
    Notifications {
        #[arg(long, env = "TRIAD_STORE", default_value = triad_eventstore::url::DEFAULT_STORE_URL)]
        store: String,
        /// List notifications that exhausted their attempts.
        #[arg(long)]
        dead_letters: bool,
        /// Put every dead-lettered notification back in line.
        #[arg(long, conflicts_with = "dead_letters")]
        redrive: bool,
    },
    /// An aggregate's history and state (as of a moment), or who read a subject's data.
    Audit {
        #[arg(long, env = "TRIAD_STORE", default_value = triad_eventstore::url::DEFAULT_STORE_URL)]
        store: String,
        /// TYPE/ID, e.g. Auction/demo-auction-1 or Patient/<id>.
        #[arg(required_unless_present = "reads", conflicts_with = "reads")]
        target: Option<String>,
        /// RFC 3339: the state as it was then (events recorded up to that moment).
        #[arg(long)]
        as_of: Option<String>,
        /// List the access records about this subject (a patient id) and check the chain.
        #[arg(long)]
        reads: Option<String>,
        #[arg(long, default_value = "table")]
        format: triad_api::tools::Format,
    },
}

/// Opens the store for a tool subcommand (connection errors exit with code 2).
async fn open_store(url: &str) -> anyhow::Result<triad_eventstore::EventStore> {
    let url: StoreUrl = url.parse()?;
    // StoreUrl's Display hides credentials.
    triad_eventstore::EventStore::connect(&url)
        .await
        .with_context(|| format!("opening the store {url}"))
}

fn jwt_secret() -> String {
    std::env::var("TRIAD_JWT_SECRET").unwrap_or_else(|_| DEV_SECRET.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            store,
            listen,
            demo,
        } => {
            let store: StoreUrl = store.parse()?;
            if std::env::var("TRIAD_JWT_SECRET").is_err() {
                tracing::warn!("TRIAD_JWT_SECRET is unset: using the built-in development secret");
            }
            let secret = jwt_secret();
            let server = Server::start(ServerConfig {
                store,
                listen,
                jwt_secret: secret.clone(),
                ws: Default::default(),
                tcp_send_buffer: None,
                llm: triad_api::digest::LlmConfig::from_env(),
                push: triad_api::push::PushConfig::from_env(),
                relay: triad_api::relay::RelayConfig::from_env(),
            })
            .await
            .context("starting the server")?;
            if demo {
                demo::load(&server, &Auth::new(&secret))
                    .await
                    .context("loading demo data")?;
            }
            eprintln!(
                "triad: serving on http://{0}/graphql (web console at http://{0}/)",
                server.addr
            );
            tokio::select! {
                _ = server.wait() => {}
                _ = tokio::signal::ctrl_c() => eprintln!("triad: stopping"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { sub, role, ttl } => {
            let sub = UserId::parse(sub)?;
            let role = Role::parse_token_role(&role)
                .with_context(|| format!("unknown role {role:?}: use dealer, seller, doctor, patient, donor, charity or admin"))?;
            let ttl = parse_ttl(&ttl).map_err(anyhow::Error::msg)?;
            println!("{}", Auth::new(&jwt_secret()).mint(&sub, role, ttl)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            store,
            target,
            as_of,
            reads,
            format,
        } => {
            let store = open_store(&store).await?;
            let mut out = std::io::stdout().lock();
            if let Some(subject) = reads {
                let intact =
                    triad_api::tools::audit_reads(&store, &subject, format, &mut out).await?;
                return Ok(if intact {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            let as_of = as_of
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&chrono::Utc))
                })
                .transpose()
                .context("--as-of must be an RFC 3339 time, e.g. 2026-12-04T12:00:00Z")?;
            let target = target.unwrap_or_default();
            triad_api::tools::audit_aggregate(&store, &target, as_of, format, &mut out).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Notifications {
            store,
            dead_letters,
            redrive,
        } => {
            let store = open_store(&store).await?;
            let pool = store.read_pool();
            if redrive {
                let n = triad_projections::notifications::redrive(pool).await?;
                println!("{n} notification(s) put back in line");
            } else {
                let status = if dead_letters { "dead" } else { "pending" };
                for n in triad_projections::notifications::with_status(pool, status, 10_000).await?
                {
                    println!(
                        "{}\t{}\tattempts={}\t{}",
                        n.key,
                        n.charity_id,
                        n.attempts,
                        n.last_error.unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            store,
            from,
            limit,
            aggregate,
            event_types,
            format,
            follow,
        } => {
            let store = open_store(&store).await?;
            let (aggregate_type, aggregate_id) = match aggregate
                .as_deref()
                .map(|a| a.split_once('/').map_or((a, None), |(t, i)| (t, Some(i))))
            {
                Some((t, i)) => (Some(t.to_string()), i.map(str::to_string)),
                None => (None, None),
            };
            let filter = triad_eventstore::store::LogFilter {
                aggregate_type,
                aggregate_id,
                event_types,
            };
            let mut out = std::io::stdout().lock();
            triad_api::tools::replay(&store, from, limit, &filter, format, follow, &mut out)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild {
            store,
            projections,
            all,
            outdated,
            quiet,
        } => {
            let store = open_store(&store).await?;
            let known = triad_api::server::projections(&store).await;
            let mut chosen = vec![];
            for p in &known {
                let wanted = if all {
                    p.replayable()
                } else if outdated {
                    p.replayable()
                        && triad_projections::runner::stored_version(store.read_pool(), p.name())
                            .await?
                            != Some(p.version())
                } else {
                    projections.iter().any(|n| n == p.name())
                };
                if wanted {
                    chosen.push(p.clone());
                }
            }
            for name in &projections {
                if !known.iter().any(|p| p.name() == name) {
                    let names: Vec<&str> = known.iter().map(|p| p.name()).collect();
                    anyhow::bail!(
                        "unknown projection {name:?}: choose from {}",
                        names.join(", ")
                    );
                }
            }
            if chosen.is_empty() && !outdated {
                anyhow::bail!("name projections to rebuild, or use --all or --outdated");
            }
            if chosen.is_empty() {
                println!("nothing to rebuild: every projection is at its code's version");
                return Ok(ExitCode::SUCCESS);
            }
            let bar = if quiet {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::new(0)
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let names: Vec<&str> = chosen.iter().map(|p| p.name()).collect();
            bar.set_prefix(names.join(", "));
            let started = std::time::Instant::now();
            // One pass over the log feeds every chosen projection.
            let refs: Vec<&dyn triad_projections::Projection> =
                chosen.iter().map(|p| p.as_ref()).collect();
            let head = triad_projections::rebuild::rebuild_all(&store, &refs, &|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?;
            bar.finish_and_clear();
            let took = started.elapsed();
            println!(
                "{}: rebuilt to position {head} in {took:.1?} ({:.0} events/s)",
                names.join(", "),
                head as f64 / took.as_secs_f64().max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Relay {
            store,
            erp_url,
            dead_letters,
            redrive,
        } => {
            let store = open_store(&store).await?;
            let mut config = triad_api::relay::RelayConfig::from_env().unwrap_or(
                triad_api::relay::RelayConfig {
                    url: String::new(),
                    auth_header: std::env::var("TRIAD_ERP_AUTH").ok(),
                    max_attempts: 8,
                    base_backoff: std::time::Duration::from_millis(200),
                    max_backoff: std::time::Duration::from_secs(60),
                    timeout: std::time::Duration::from_secs(10),
                },
            );
            if let Some(url) = erp_url {
                config.url = url;
            }
            if let Ok(n) = std::env::var("TRIAD_ERP_MAX_ATTEMPTS") {
                config.max_attempts = n.parse().context("TRIAD_ERP_MAX_ATTEMPTS")?;
            }
            if let Ok(ms) = std::env::var("TRIAD_ERP_BACKOFF_MS") {
                let ms: u64 = ms.parse().context("TRIAD_ERP_BACKOFF_MS")?;
                config.base_backoff = std::time::Duration::from_millis(ms);
                config.max_backoff = std::time::Duration::from_millis(ms * 8);
            }
            if let Ok(ms) = std::env::var("TRIAD_ERP_TIMEOUT_MS") {
                config.timeout =
                    std::time::Duration::from_millis(ms.parse().context("TRIAD_ERP_TIMEOUT_MS")?);
            }
            if config.url.is_empty() && !dead_letters {
                anyhow::bail!("set TRIAD_ERP_URL or --erp-url");
            }
            let relay = triad_api::relay::Relay::new(store, config).await?;
            if dead_letters {
                for (key, auction, position, status, error) in relay.dead_letters().await? {
                    println!(
                        "{position}\t{auction}\t{status}\t{key}\t{}",
                        error.unwrap_or_default()
                    );
                }
            } else if redrive {
                println!("{} message(s) delivered", relay.redrive().await?);
            } else {
                relay.run().await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { store } => {
            let store = open_store(&store).await?;
            let mut out = std::io::stdout().lock();
            let sound = triad_api::tools::verify(&store, &mut out).await?;
            Ok(if sound {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Schema { events_dir } => {
            if let Some(dir) = events_dir {
                for (aggregate, event_type, version, schema) in triad_domain::catalog::schemas() {
                    let path = dir
                        .join(aggregate)
                        .join(format!("{event_type}.v{version}.json"));
                    std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
                    std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")?;
                }
            }
            print!("{}", triad_api::graphql::sdl());
            Ok(ExitCode::SUCCESS)
        }
    }
}
