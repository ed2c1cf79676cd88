//! The fan-out engine: one execution per group of identical subscriptions.
//!
//! Subscriptions are grouped by (normalized document, operation name, variables without the
//! resume cursor, sharing scope). A group runs the GraphQL execution once per event,
//! serializes the response once, and queues the same bytes to every member's outbox with only
//! the member's operation id spliced in (see `outbox.rs`). Fields listed in
//! `graphql::live::LIVE_FIELDS` are grouped; everything else runs one execution per
//! subscriber with the same wire behaviour.
//!
//! Joining: a member is added to the group (buffering what the group delivers meanwhile),
//! then its own bounded execution replays stored events from its `after` cursor up to the
//! group's position at the moment it joined; then the buffer is flushed and it is live. So
//! every member sees every event once, in order, whether it joined fresh or resumed.

use super::outbox::{Out, Outbox};
use super::protocol::Protocol;
use crate::graphql::live::{GroupFeed, ReplayUpTo, Sharing, LIVE_FIELDS, RESUME_ARGUMENT};
use crate::graphql::{Caller, TriadSchema};
use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Request, Response, Value as GqlValue, Variables};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;
use triad_eventstore::{LogTail, Position};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    document: String,
    operation: Option<String>,
    variables: String,
    scope: String,
}

struct Member {
    id_json: Arc<str>,
    kind: &'static str,
    outbox: Outbox,
    /// Events the group delivered while this member was still replaying its gap.
    pending: Option<Vec<Arc<str>>>,
}

struct Members {
    next: u64,
    all: HashMap<u64, Member>,
    /// Position of the last event the group delivered (or its start).
    last: Position,
}

struct Group {
    key: GroupKey,
    members: Mutex<Members>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Shared by all connections of a process.
pub struct Engine {
    schema: TriadSchema,
    tail: Arc<LogTail>,
    groups: Mutex<HashMap<GroupKey, Arc<Group>>>,
    /// A joining member's buffer may hold at most this many events before it is dropped.
    max_pending: usize,
}

/// A subscription's lifetime: dropping it unsubscribes.
pub struct Subscription {
    engine: Arc<Engine>,
    membership: Option<(Arc<Group>, u64)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some((group, member)) = self.membership.take() {
            self.engine.leave(&group, member);
        }
    }
}

/// Finished operations are reported back to their connection (to free the id).
pub type Finished = tokio::sync::mpsc::UnboundedSender<String>;

impl Engine {
    pub fn new(schema: TriadSchema, tail: Arc<LogTail>, max_pending: usize) -> Arc<Self> {
        Arc::new(Engine {
            schema,
            tail,
            groups: Mutex::new(HashMap::new()),
            max_pending,
        })
    }

    /// Number of live groups and members (for metrics and tests).
    pub fn stats(&self) -> (usize, usize) {
        let groups = self.groups.lock();
        let members = groups.values().map(|g| g.members.lock().all.len()).sum();
        (groups.len(), members)
    }

    /// Starts operation `id` of a connection.
    pub fn subscribe(
        self: &Arc<Self>,
        protocol: Protocol,
        caller: &Caller,
        id: String,
        request: Request,
        outbox: Outbox,
        finished: Finished,
    ) -> Subscription {
        let id_json: Arc<str> =
            Arc::from(serde_json::to_string(&id).unwrap_or_else(|_| "\"\"".into()));
        match plan(&request, caller) {
            Some((key, resume_variable)) => self.join(
                protocol,
                caller,
                id,
                id_json,
                request,
                outbox,
                finished,
                key,
                resume_variable,
            ),
            None => {
                let request = request.data(caller.clone());
                let stream = self.schema.execute_stream(request);
                let task = tokio::spawn(forward(stream, protocol, id_json, outbox, id, finished));
                Subscription {
                    engine: self.clone(),
                    membership: None,
                    tasks: vec![task],
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        self: &Arc<Self>,
        protocol: Protocol,
        caller: &Caller,
        id: String,
        id_json: Arc<str>,
        request: Request,
        outbox: Outbox,
        finished: Finished,
        key: GroupKey,
        resume_variable: Option<String>,
    ) -> Subscription {
        let (group, member, upto) = {
            let mut groups = self.groups.lock();
            let group = match groups.get(&key) {
                Some(g) => g.clone(),
                None => {
                    let g =
                        self.start_group(key.clone(), &request, caller, resume_variable.as_deref());
                    groups.insert(key, g.clone());
                    g
                }
            };
            let mut members = group.members.lock();
            let member = members.next;
            members.next += 1;
            members.all.insert(
                member,
                Member {
                    id_json: id_json.clone(),
                    kind: protocol.next_type(),
                    outbox: outbox.clone(),
                    pending: Some(Vec::new()),
                },
            );
            let upto = members.last;
            drop(members);
            (group, member, upto)
        };
        metrics::gauge!("triad_ws_group_members").increment(1.0);
        // The member's own execution: validates and authorizes it as itself, and replays
        // the stored events between its cursor and the group's position.
        let replay = request.data(caller.clone()).data(ReplayUpTo(upto));
        let stream = self.schema.execute_stream(replay);
        let engine = self.clone();
        let group_for_task = group.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(response) = stream.next().await {
                let failed = response.data == GqlValue::Null && !response.errors.is_empty();
                let payload = to_json(&response);
                if !outbox.push(Out::Event {
                    kind: protocol.next_type(),
                    id_json: id_json.clone(),
                    payload,
                }) {
                    return;
                }
                if failed {
                    // Refused (not found, forbidden, invalid): this subscription ends here.
                    engine.leave(&group_for_task, member);
                    outbox.push(Out::Text(protocol.complete(&id_json)));
                    let _ = finished.send(id);
                    return;
                }
            }
            // Caught up: flush what the group delivered meanwhile, then go live.
            let mut members = group_for_task.members.lock();
            if let Some(m) = members.all.get_mut(&member) {
                for payload in m.pending.take().unwrap_or_default() {
                    if !m.outbox.push(Out::Event {
                        kind: m.kind,
                        id_json: m.id_json.clone(),
                        payload,
                    }) {
                        break;
                    }
                }
            }
        });
        Subscription {
            engine: self.clone(),
            membership: Some((group, member)),
            tasks: vec![task],
        }
    }

    fn start_group(
        self: &Arc<Self>,
        key: GroupKey,
        request: &Request,
        caller: &Caller,
        resume_variable: Option<&str>,
    ) -> Arc<Group> {
        let start = self.tail.head();
        let feed = GroupFeed::new(start);
        let mut variables = request.variables.clone();
        if let Some(v) = resume_variable {
            variables.remove(&async_graphql::Name::new(v));
        }
        let mut leader = Request::new(request.query.clone()).variables(variables);
        if let Some(op) = &request.operation_name {
            leader = leader.operation_name(op.clone());
        }
        // A public group runs as nobody, so nothing caller-specific can leak into it.
        let leader_caller = match key.scope.as_str() {
            "public" => Caller::default(),
            _ => caller.clone(),
        };
        let leader = leader.data(leader_caller).data(feed.clone());
        let group = Arc::new(Group {
            key,
            members: Mutex::new(Members {
                next: 0,
                all: HashMap::new(),
                last: start,
            }),
            task: Mutex::new(None),
        });
        metrics::gauge!("triad_ws_groups").increment(1.0);
        let stream = self.schema.execute_stream(leader);
        let weak = Arc::downgrade(&group);
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(response) = stream.next().await {
                let Some(group) = weak.upgrade() else { return };
                let payload = to_json(&response);
                engine.deliver(&group, feed.last(), payload);
            }
            // The execution ended (for instance, the field refused everyone): end every member.
            if let Some(group) = weak.upgrade() {
                engine.end_group(&group);
            }
        });
        *group.task.lock() = Some(task);
        group
    }

    fn deliver(&self, group: &Group, position: Position, payload: Arc<str>) {
        let mut members = group.members.lock();
        members.last = position;
        let mut dropped = vec![];
        for (id, m) in members.all.iter_mut() {
            match &mut m.pending {
                Some(pending) if pending.len() >= self.max_pending => dropped.push(*id),
                Some(pending) => pending.push(payload.clone()),
                None => {
                    if !m.outbox.push(Out::Event {
                        kind: m.kind,
                        id_json: m.id_json.clone(),
                        payload: payload.clone(),
                    }) {
                        dropped.push(*id);
                    }
                }
            }
        }
        let delivered = members.all.len() - dropped.len();
        for id in dropped {
            members.all.remove(&id);
        }
        metrics::counter!("triad_ws_deliveries_total").increment(delivered as u64);
    }

    fn end_group(&self, group: &Arc<Group>) {
        let mut groups = self.groups.lock();
        if groups
            .get(&group.key)
            .is_some_and(|g| Arc::ptr_eq(g, group))
        {
            groups.remove(&group.key);
            metrics::gauge!("triad_ws_groups").decrement(1.0);
        }
        drop(groups);
        let mut members = group.members.lock();
        for (_, m) in members.all.drain() {
            // Members still replaying end through their own execution.
            if m.pending.is_none() {
                m.outbox.push(Out::Text(format!(
                    "{{\"id\":{},\"type\":\"complete\"}}",
                    m.id_json
                )));
            }
        }
    }

    fn leave(&self, group: &Arc<Group>, member: u64) {
        let mut groups = self.groups.lock();
        let mut members = group.members.lock();
        if members.all.remove(&member).is_some() {
            metrics::gauge!("triad_ws_group_members").decrement(1.0);
        }
        if members.all.is_empty()
            && groups
                .get(&group.key)
                .is_some_and(|g| Arc::ptr_eq(g, group))
        {
            groups.remove(&group.key);
            metrics::gauge!("triad_ws_groups").decrement(1.0);
            if let Some(task) = group.task.lock().take() {
                task.abort();
            }
        }
    }
}

/// Runs an ungrouped execution for one subscriber.
async fn forward(
    stream: impl futures::Stream<Item = Response>,
    protocol: Protocol,
    id_json: Arc<str>,
    outbox: Outbox,
    id: String,
    finished: Finished,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(response) = stream.next().await {
        let payload = to_json(&response);
        if !outbox.push(Out::Event {
            kind: protocol.next_type(),
            id_json: id_json.clone(),
            payload,
        }) {
            return;
        }
    }
    outbox.push(Out::Text(protocol.complete(&id_json)));
    let _ = finished.send(id);
}

fn to_json(response: &Response) -> Arc<str> {
    Arc::from(
        serde_json::to_string(response)
            .unwrap_or_else(|_| r#"{"data":null,"errors":[{"message":"response not serializable","extensions":{"code":"INTERNAL"}}]}"#.into()),
    )
}

/// Decides whether a request can share a group, and under which key. `None`: run it alone.
fn plan(request: &Request, caller: &Caller) -> Option<(GroupKey, Option<String>)> {
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    if !document.fragments.is_empty() {
        return None;
    }
    let operation = match (&document.operations, &request.operation_name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name.as_str())?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    if operation.node.ty != OperationType::Subscription || !operation.node.directives.is_empty() {
        return None;
    }
    let items = &operation.node.selection_set.node.items;
    let [item] = items.as_slice() else {
        return None;
    };
    let Selection::Field(field) = &item.node else {
        return None;
    };
    let sharing = LIVE_FIELDS
        .iter()
        .find(|(name, _)| *name == field.node.name.node.as_str())
        .map(|(_, s)| *s)?;
    let resume_variable =
        field
            .node
            .arguments
            .iter()
            .find_map(|(name, value)| match (&name.node, &value.node) {
                (n, async_graphql_value::Value::Variable(v)) if n.as_str() == RESUME_ARGUMENT => {
                    Some(v.to_string())
                }
                _ => None,
            });
    let mut variables = request.variables.clone();
    if let Some(v) = &resume_variable {
        variables.remove(&async_graphql::Name::new(v));
    }
    let scope = match (sharing, &caller.actor) {
        (Sharing::Public, _) => "public".to_string(),
        (Sharing::PerActor, Some(a)) => format!("{}:{}", a.role.as_str(), a.sub),
        (Sharing::PerActor, None) => "anonymous".to_string(),
    };
    Some((
        GroupKey {
            document: normalize(&request.query),
            operation: request.operation_name.clone(),
            variables: canonical(&variables),
            scope,
        },
        resume_variable,
    ))
}

/// Collapses whitespace outside string literals, so formatting differences share a group.
fn normalize(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut pending_space = false;
    for c in query.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() || c == ',' {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

/// Variables as JSON with object keys sorted, so equal values give equal keys.
fn canonical(variables: &Variables) -> String {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let json = serde_json::to_value(variables).unwrap_or_default();
    sort(json).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_outside_strings_only() {
        assert_eq!(
            normalize("subscription {\n  bidPlaced(auctionId: \"a  b\") { amountCents }\n}"),
            "subscription { bidPlaced(auctionId: \"a  b\") { amountCents } }"
        );
        assert_eq!(normalize("{ a(x: 1,  y: 2) }"), "{ a(x: 1 y: 2) }");
    }

    #[test]
    fn groups_by_document_variables_and_scope() {
        let q = "subscription($id: ID!, $after: Int) { bidPlaced(auctionId: $id, after: $after) { amountCents } }";
        let vars = |v: serde_json::Value| Variables::from_json(v);
        let caller = Caller::default();
        let (a, resume) = plan(
            &Request::new(q).variables(vars(serde_json::json!({"id": "x", "after": 5}))),
            &caller,
        )
        .unwrap();
        let (b, _) = plan(
            &Request::new(q).variables(vars(serde_json::json!({"after": 9, "id": "x"}))),
            &caller,
        )
        .unwrap();
        let (c, _) = plan(
            &Request::new(q).variables(vars(serde_json::json!({"id": "y"}))),
            &caller,
        )
        .unwrap();
        assert_eq!(resume.as_deref(), Some("after"));
        assert_eq!(a, b, "the resume cursor does not split groups");
        assert_ne!(a, c, "other variables do");
        assert!(plan(&Request::new("{ auction(id: \"x\") { id } }"), &caller).is_none());
        assert!(plan(&Request::new("subscription { unknownField }"), &caller).is_none());
    }
}
