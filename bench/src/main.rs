//! `triad-bench`: load numbers for the real `triad` server.
//!
//! Builds `target/release/triad`, creates a fresh PostgreSQL database on
//! TRIAD_TEST_DATABASE_URL's server, starts the server as a child process (pinned to one CPU,
//! this process to another), and measures:
//!
//! 1. "hot auction": 200 dealers bidding on one auction;
//! 2. "1,000 auctions": 200 dealers bidding on random auctions of 1,000;
//! 3. "baseline INSERT": single-row INSERT transactions from 32 connections, same PostgreSQL;
//! 4. "fan-out": N graphql-transport-ws subscribers of one auction, spaced and burst bids;
//! 5. "vitals": recordVitals ingest against a COPY baseline, alert latency over
//!    graphql-transport-ws, and vitals queries over N patients x 30 days loaded into the
//!    read model.
//!
//! Prints one table and writes target/bench/<UTC timestamp>.json and target/bench/latest.json.
//! Run with `make bench` (BENCH_ARGS="--quick" for a smoke run).

mod baseline;
mod bids;
mod extra;
mod fanout;
mod geo;
mod rebuild;
mod relay;
mod report;
mod server;
mod sys;
mod vitals;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use report::Row;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Default of --vitals-patients: loading 1,000 takes over 3 minutes on 2 cores.
const VITALS_PATIENTS: usize = 500;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Section {
    Hot,
    Many,
    Baseline,
    Fanout,
    Vitals,
    Geo,
    Rebuild,
    Relay,
}

#[derive(Parser, Debug)]
#[command(name = "triad-bench", about = "Load benchmark for the triad server")]
struct Args {
    /// Seconds each throughput section (hot, many, baseline) runs.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Subscriber counts for the fan-out section, comma separated.
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    fanout: Vec<usize>,
    /// Sections to leave out (hot, many, baseline, fanout, vitals, geo, rebuild, relay); repeatable or comma separated.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1..)]
    skip: Vec<Section>,
    /// Smoke run: 3 s per section, 200 subscribers, 10 alert episodes, 20 vitals patients.
    #[arg(long)]
    quick: bool,
    /// Concurrent dealer tasks in the bid sections.
    #[arg(long, default_value_t = 200)]
    dealers: usize,
    /// Auctions in the "many" section.
    #[arg(long, default_value_t = 1000)]
    auctions: usize,
    /// Connections in the baseline section.
    #[arg(long, default_value_t = 32)]
    baseline_connections: usize,
    /// Patients loaded with 30 days of minute data for the vitals query measurements
    /// [default: 500; 20 with --quick].
    #[arg(long)]
    vitals_patients: Option<usize>,
    /// Concurrent recordVitals tasks in the vitals ingest measurement.
    #[arg(long, default_value_t = 32)]
    vitals_ingest_tasks: usize,
    /// Alert episodes measured in the vitals section [default: 30; 10 with --quick].
    #[arg(long)]
    vitals_episodes: Option<usize>,
    /// Charities in the geo section's in-memory/brute-force/PostGIS measurements
    /// [default: 1,000,000; 10,000 with --quick].
    #[arg(long)]
    geo_charities: Option<usize>,
    /// CharityRegistered events the server builds its geo index from at restart
    /// [default: 100,000; 2,000 with --quick].
    #[arg(long)]
    geo_log_charities: Option<usize>,
    /// Auction events appended for the rebuild section [default: 1,000,000; 20,000 with --quick].
    #[arg(long)]
    rebuild_events: Option<usize>,
    /// Leave out the SQLite half of the rebuild section.
    #[arg(long)]
    no_rebuild_sqlite: bool,
    /// Auctions closed in the relay section [default: 200; 30 with --quick].
    #[arg(long)]
    relay_auctions: Option<usize>,
    /// Admin database of the PostgreSQL server to use.
    #[arg(
        long,
        env = "TRIAD_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

/// What was set up before the runtime started.
struct Machine {
    nproc: usize,
    server_cpu: Option<usize>,
    bench_cpu: Option<usize>,
    nofile: Option<u64>,
    notes: Vec<String>,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if !args.quick {
        args.vitals_patients.get_or_insert(VITALS_PATIENTS);
        args.vitals_episodes.get_or_insert(30);
        args.geo_charities.get_or_insert(1_000_000);
        args.geo_log_charities.get_or_insert(100_000);
        args.rebuild_events.get_or_insert(1_000_000);
        args.relay_auctions.get_or_insert(200);
    }
    if args.quick {
        args.duration_secs = 3;
        args.fanout = vec![200];
        args.vitals_patients.get_or_insert(20);
        args.vitals_episodes.get_or_insert(10);
        args.geo_charities.get_or_insert(10_000);
        args.geo_log_charities.get_or_insert(2_000);
        args.rebuild_events.get_or_insert(20_000);
        args.relay_auctions.get_or_insert(30);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ lives in the workspace")
        .to_path_buf();
    let bin_dir = match std::env::current_exe() {
        Ok(exe) => exe.parent().map(Path::to_path_buf).unwrap_or_default(),
        Err(e) => {
            eprintln!("triad-bench: cannot locate this executable: {e}");
            return ExitCode::from(2);
        }
    };
    let triad = bin_dir.join("triad");

    // Before pinning: the build may use every core.
    if let Err(e) = build_server(&workspace) {
        eprintln!("triad-bench: {e:#}");
        return ExitCode::from(2);
    }

    let mut machine = Machine {
        nproc: sys::online_cpus(),
        server_cpu: None,
        bench_cpu: None,
        nofile: None,
        notes: Vec::new(),
    };
    match sys::raise_nofile_limit() {
        Ok(n) => machine.nofile = Some(n),
        Err(e) => machine.notes.push(format!("RLIMIT_NOFILE not raised: {e}")),
    }
    let allowed = sys::allowed_cpus();
    if allowed.len() >= 2 {
        match sys::pin_current_thread(allowed[1]) {
            Ok(()) => {
                machine.server_cpu = Some(allowed[0]);
                machine.bench_cpu = Some(allowed[1]);
            }
            Err(e) => machine.notes.push(format!("not pinned: {e}")),
        }
    } else {
        machine
            .notes
            .push("fewer than 2 CPUs: server and load client share".into());
    }

    // One core for the load client: a single-threaded runtime has no cross-thread wake-ups.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("triad-bench: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report_dir = bin_dir
        .parent()
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| workspace.join("target/bench"));
    runtime.block_on(run(args, machine, triad, report_dir))
}

fn build_server(workspace: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("triad-bench: cargo build --release -p triad-api --bin triad");
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "triad-api", "--bin", "triad"])
        .current_dir(workspace)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        anyhow::bail!("cargo build of the triad server failed ({status})");
    }
    Ok(())
}

async fn run(args: Args, machine: Machine, triad: PathBuf, report_dir: PathBuf) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&report_dir) {
        eprintln!("triad-bench: cannot create {}: {e}", report_dir.display());
        return ExitCode::from(2);
    }
    let db = match server::BenchDb::create(&args.database_url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("triad-bench: {e:#}");
            return ExitCode::from(1);
        }
    };
    eprintln!("triad-bench: database {}", db.name);
    let log = report_dir.join("server.log");
    let srv = match server::ServerProcess::start(&triad, &db.url, machine.server_cpu, &log).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("triad-bench: the server failed to start: {e:#}");
            if let Err(e) = db.drop_db().await {
                eprintln!("triad-bench: dropping {}: {e:#}", db.name);
            }
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "triad-bench: server pid {} on http://{} (log {})",
        srv.pid,
        srv.addr,
        srv.log.display()
    );

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let ctx = extra::Ctx {
        admin_url: args.database_url.clone(),
        triad: triad.clone(),
        server_cpu: machine.server_cpu,
        report_dir: report_dir.clone(),
    };
    let interrupted = tokio::select! {
        _ = sections(&args, &db, &srv, &ctx, &mut rows, &mut notes) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let server_alive = sys::cpu_ticks(srv.pid).is_some();
    srv.stop().await;
    if let Err(e) = db.drop_db().await {
        eprintln!("triad-bench: dropping {}: {e:#}", db.name);
    }
    if interrupted {
        eprintln!("triad-bench: interrupted; cleaned up");
        return ExitCode::from(130);
    }

    let table = report::table(&rows);
    let mut ratios = ratio_lines(&rows);
    ratios.extend(notes);
    let machine_line = format!(
        "machine: nproc={}, PostgreSQL {}, server on CPU {}, bench on CPU {}, RLIMIT_NOFILE={}{}",
        machine.nproc,
        db.server_version,
        machine.server_cpu.map_or("any".into(), |c| c.to_string()),
        machine.bench_cpu.map_or("any".into(), |c| c.to_string()),
        machine.nofile.map_or("?".into(), |n| n.to_string()),
        if machine.notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", machine.notes.join("; "))
        }
    );
    println!();
    print!("{table}");
    for line in &ratios {
        println!("{line}");
    }
    println!(
        "ops/s = decided bids/s (accepted + BID_TOO_LOW) | INSERT tx/s | fan-out deliveries/s; latencies: placeBid round trip | INSERT | bid accepted -> frame received"
    );
    if rows.iter().any(|r| r.section.starts_with("vitals")) {
        println!(
            "vitals: ingest ops/s = readings/s, latency = 100-reading recordVitals round trip | COPY rows/s | alert: recordVitals response -> alertRaised frame (expected/lost/dup = episodes) | load rows/s | query queries/s, round trip as the doctor"
        );
    }
    println!("{machine_line}");
    if !server_alive {
        println!(
            "warning: the server process was gone at the end; see {}",
            log.display()
        );
    }

    let now = chrono::Utc::now();
    let report = json!({
        "timestamp": now.to_rfc3339(),
        "args": {
            "duration_secs": args.duration_secs,
            "fanout": args.fanout,
            "skip": args.skip.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>(),
            "quick": args.quick,
            "dealers": args.dealers,
            "auctions": args.auctions,
            "baseline_connections": args.baseline_connections,
            "vitals_patients": args.vitals_patients,
            "vitals_ingest_tasks": args.vitals_ingest_tasks,
            "vitals_episodes": args.vitals_episodes,
            "geo_charities": args.geo_charities,
            "geo_log_charities": args.geo_log_charities,
            "rebuild_events": args.rebuild_events,
            "rebuild_sqlite": !args.no_rebuild_sqlite,
            "relay_auctions": args.relay_auctions,
        },
        "machine": {
            "nproc": machine.nproc,
            "postgres_version": db.server_version,
            "server_cpu": machine.server_cpu,
            "bench_cpu": machine.bench_cpu,
            "rlimit_nofile": machine.nofile,
            "notes": machine.notes,
        },
        "sections": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "ratios": ratios,
        "table": table,
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    let stamped = report_dir.join(format!("{}.json", now.format("%Y%m%dT%H%M%SZ")));
    for path in [&stamped, &report_dir.join("latest.json")] {
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("triad-bench: writing {}: {e}", path.display());
        }
    }
    println!("report: {}", stamped.display());
    ExitCode::SUCCESS
}

async fn sections(
    args: &Args,
    db: &server::BenchDb,
    srv: &server::ServerProcess,
    ctx: &extra::Ctx,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let duration = Duration::from_secs(args.duration_secs);
    let gql = match bids::Gql::new(srv.addr) {
        Ok(g) => g,
        Err(e) => {
            rows.push(Row::failed("http client", &e));
            return;
        }
    };
    let run = |s: Section| !args.skip.contains(&s);
    if run(Section::Hot) {
        eprintln!(
            "triad-bench: hot auction ({} dealers, {duration:?})",
            args.dealers
        );
        let row = async {
            let auctions = bids::open_auctions(&gql, 1, 1).await?;
            bids::run("hot auction", &gql, auctions, args.dealers, duration).await
        }
        .await
        .unwrap_or_else(|e| Row::failed("hot auction", &e));
        rows.push(row);
    }
    if run(Section::Many) {
        let name = format!("{} auctions", fanout::thousands(args.auctions));
        eprintln!(
            "triad-bench: {name} ({} dealers, {duration:?})",
            args.dealers
        );
        let row = async {
            let auctions = bids::open_auctions(&gql, args.auctions, 32).await?;
            bids::run(&name, &gql, auctions, args.dealers, duration).await
        }
        .await
        .unwrap_or_else(|e| Row::failed(&name, &e));
        rows.push(row);
    }
    if run(Section::Baseline) {
        eprintln!(
            "triad-bench: baseline INSERT ({} connections, {duration:?})",
            args.baseline_connections
        );
        let row = baseline::run(&db.url, args.baseline_connections, duration)
            .await
            .unwrap_or_else(|e| Row::failed("baseline INSERT", &e));
        rows.push(row);
    }
    if run(Section::Fanout) {
        for &n in &args.fanout {
            eprintln!("triad-bench: fan-out to {n} subscribers");
            rows.extend(fanout::run(&gql, srv.addr, srv.pid, n).await);
        }
    }
    if run(Section::Vitals) {
        let cfg = vitals::Config {
            ingest_duration: duration,
            ingest_tasks: args.vitals_ingest_tasks,
            episodes: args.vitals_episodes.unwrap_or(30),
            query_patients: args.vitals_patients.unwrap_or(VITALS_PATIENTS),
        };
        let (more, lines) = vitals::run(&gql, srv.addr, &db.url, &cfg).await;
        rows.extend(more);
        notes.extend(lines);
    }
    if run(Section::Geo) {
        let cfg = geo::Config {
            charities: args.geo_charities.unwrap_or(1_000_000),
            log_charities: args.geo_log_charities.unwrap_or(100_000),
        };
        let (more, lines) = geo::run(ctx, &cfg).await;
        rows.extend(more);
        notes.extend(lines);
    }
    if run(Section::Rebuild) {
        let n = args.rebuild_events.unwrap_or(1_000_000);
        eprintln!("triad-bench: rebuild ({n} events)");
        let (more, lines) = rebuild::run(ctx, n, !args.no_rebuild_sqlite).await;
        rows.extend(more);
        notes.extend(lines);
    }
    if run(Section::Relay) {
        let m = args.relay_auctions.unwrap_or(200);
        eprintln!("triad-bench: relay ({m} auctions)");
        rows.push(relay::run(ctx, m).await);
        notes.push("relay: ops/s = ERP messages/s (first to last receipt); latency = closeAuction response -> ERP receipt".into());
    }
}

/// Bid throughput relative to the raw INSERT baseline.
fn ratio_lines(rows: &[Row]) -> Vec<String> {
    let Some(base) = rows
        .iter()
        .find(|r| r.section == "baseline INSERT")
        .and_then(|r| r.rate)
        .filter(|r| *r > 0.0)
    else {
        return Vec::new();
    };
    rows.iter()
        .filter(|r| r.accepted.is_some())
        .map(|r| {
            format!(
                "vs baseline INSERT ({base:.0} tx/s): {}: accepted {:.3}x, decided {:.3}x",
                r.section,
                r.accepted.unwrap_or(0.0) / base,
                r.rate.unwrap_or(0.0) / base
            )
        })
        .collect()
}
