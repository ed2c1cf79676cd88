//! The GraphQL schema: one merged Query/Mutation/Subscription, a module per domain.
//!
//! API boundary: resolvers parse input into domain types at the edge (invalid input never
//! reaches a command), check roles, call the executor or a read-model query, and map every
//! failure through `crate::errors`. They hold no business rules.

pub mod auctions;
pub mod donations;
pub mod history;
pub mod live;
pub mod patients;

use crate::errors;
use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, MergedObject, MergedSubscription, OutputType, Schema};
use base64::Engine as _;
use std::sync::Arc;
use triad_domain::auction::Auction;
use triad_domain::{Actor, Role};
use triad_eventstore::{AggregateStore, EventStore, LogTail};

pub type TriadSchema = Schema<Query, Mutation, Subscription>;

#[derive(MergedObject, Default)]
pub struct Query(
    auctions::AuctionQuery,
    patients::PatientQuery,
    donations::DonationQuery,
    history::HistoryQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    auctions::AuctionMutation,
    patients::PatientMutation,
    donations::DonationMutation,
);

#[derive(MergedSubscription, Default)]
pub struct Subscription(
    auctions::AuctionSubscription,
    patients::PatientSubscription,
    donations::DonationSubscription,
);

/// What resolvers reach through the context.
#[derive(Clone)]
pub struct Services {
    pub store: EventStore,
    pub auctions: Arc<AggregateStore<Auction>>,
    pub patients: Arc<AggregateStore<triad_domain::patient::Patient>>,
    pub vitals: Arc<AggregateStore<triad_domain::patient::PatientVitals>>,
    pub charities: Arc<AggregateStore<triad_domain::donation::Charity>>,
    pub donations: Arc<AggregateStore<triad_domain::donation::Donation>>,
    /// The in-memory geo index of charities, fed from the log.
    pub geo: Arc<triad_projections::geo::GeoIndex>,
    pub tail: Arc<LogTail>,
    /// The digest's language-model provider, when configured.
    pub llm: Option<crate::digest::LlmConfig>,
}

/// Who is asking (per request, or per WebSocket connection).
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub actor: Option<Actor>,
    pub request_id: String,
}

/// Depth and complexity bounds: a hostile query cannot make the server do unbounded work.
pub const MAX_DEPTH: usize = 12;
pub const MAX_COMPLEXITY: usize = 2_000;

pub fn build_schema(services: Option<Services>) -> TriadSchema {
    let builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY);
    match services {
        Some(s) => builder.data(s).finish(),
        None => builder.finish(),
    }
}

/// The SDL `triad schema` prints and schemas/schema.graphql holds.
pub fn sdl() -> String {
    build_schema(None).sdl()
}

pub fn services<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Services> {
    ctx.data::<Services>()
        .map_err(|e| errors::internal(e.message))
}

pub fn caller<'a>(ctx: &'a Context<'_>) -> Option<&'a Actor> {
    ctx.data_opt::<Caller>().and_then(|c| c.actor.as_ref())
}

pub(crate) fn correlation_id(ctx: &Context<'_>) -> String {
    ctx.data_opt::<Caller>()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The caller, if their role is one of `roles`; FORBIDDEN otherwise (also without a token).
pub(crate) fn require<'a>(
    ctx: &'a Context<'_>,
    roles: &[Role],
) -> async_graphql::Result<&'a Actor> {
    match caller(ctx) {
        Some(actor) if roles.contains(&actor.role) => Ok(actor),
        Some(actor) => Err(errors::forbidden(format!(
            "role {} may not do this",
            actor.role.as_str()
        ))),
        None => Err(errors::forbidden("this operation needs a bearer token")),
    }
}

/// Connections keyed by log position (auctions, a donor's donations, a manager's charities),
/// newest first. Cursors are opaque (base64url of "KIND:POSITION") and typed by KIND, so a
/// cursor from one connection is refused by another instead of silently skipping rows.
pub(crate) fn encode_cursor(kind: &str, position: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

/// `first` of a position-keyed connection: 1 to 100.
pub(crate) fn page_size(first: i32) -> async_graphql::Result<i64> {
    if (1..=100).contains(&first) {
        Ok(first.into())
    } else {
        Err(errors::invalid_input("first must be between 1 and 100"))
    }
}

/// The position in `after`, a cursor [`encode_cursor`] made for `kind`; INVALID_INPUT otherwise.
pub(crate) fn decode_cursor(kind: &str, after: &str) -> async_graphql::Result<i64> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(after)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(kind)?.strip_prefix(':')?.parse().ok())
        .ok_or_else(|| errors::invalid_input("after is not a cursor from this connection"))
}

/// A page of a position-keyed connection: `(position, node)` newest first, `after` the cursor
/// the page was asked after (if any), `more` whether older ones follow.
pub(crate) fn position_connection<T: OutputType>(
    kind: &str,
    after: Option<i64>,
    more: bool,
    nodes: impl IntoIterator<Item = (i64, T)>,
) -> Connection<String, T> {
    let mut connection = Connection::new(after.is_some(), more);
    connection.edges.extend(
        nodes
            .into_iter()
            .map(|(position, node)| Edge::new(encode_cursor(kind, position), node)),
    );
    connection
}
