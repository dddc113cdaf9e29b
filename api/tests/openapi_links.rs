//! A stateful walk of `/openapi.json` over real sockets: the document's own examples start
//! it, its links carry it on. Every operation must be reached, answer only statuses the
//! document gives it, and succeed at least once; every link must resolve and lead somewhere
//! the target operation documents. A link whose expression points at nothing, a route no
//! example or link reaches, or an example the server refuses fails this test.
//!
//! The walk runs twice over the same server, so an operation whose example needs state
//! another root makes (points credited before a points payment, an order before the admin
//! look-up of `ord_1`) finds it the second time.

mod process;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use process::{http_text, Sim, Surge, SIM_SECRET};
use serde_json::{Map, Value};

const ADMIN: &str = "walk-admin";
/// Times one link is followed per walk: enough to reach every state a link can meet here.
const FOLLOWS_PER_LINK_MAX: usize = 2;
/// Requests per walk: the walk ends even if the document's links form cycles.
const CALLS_PER_WALK_MAX: usize = 2_000;
/// Walks over the same server, at most.
const ROUNDS_MAX: usize = 24;
/// Rounds in a row that add nothing before the walk stops.
const IDLE_ROUNDS_MAX: usize = 3;

/// Operations whose success needs something no response of the document carries. Each is
/// still reached, and must answer one of its documented refusals.
const SUCCESS_OUT_OF_REACH: &[(&str, &str)] = &[
    ("callback", "signed with the gateway's secret (X-Signature), which the document does not hold"),
    ("report", "sent by the gateway worker, with a transaction key only the gateway knows"),
    ("retry_dead_letter", "needs a dead letter: a gateway that refused a capture or refund every time"),
];

#[derive(Debug)]
struct Param {
    name: String,
    location: String,
    example: Option<Value>,
}

#[derive(Debug)]
struct Link {
    name: String,
    target: String,
    parameters: Map<String, Value>,
    request_body: Option<Value>,
}

#[derive(Debug)]
struct Operation {
    id: String,
    method: String,
    path: String,
    security: Option<String>,
    params: Vec<Param>,
    body_example: Option<Value>,
    body_required: bool,
    statuses: BTreeSet<String>,
    /// Response status -> the links it offers.
    links: BTreeMap<String, Vec<Link>>,
}

/// What one call is made of, before credentials and headers.
#[derive(Default, Clone)]
struct Input {
    path_params: Map<String, Value>,
    body: Option<Value>,
}

struct Exchange {
    path_params: Map<String, Value>,
    request_body: Option<Value>,
    status: u16,
    response_body: Value,
}

#[derive(Default)]
struct Tally {
    calls: BTreeMap<String, BTreeMap<u16, usize>>,
    /// "source.status.link" -> statuses its target answered.
    links: BTreeMap<String, BTreeMap<u16, usize>>,
    /// Links that resolved against at least one response.
    resolved: BTreeSet<String>,
    undocumented: BTreeSet<String>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let first_scheme = |s: &Value| s.as_array()?.first()?.as_object()?.keys().next().cloned();
    let default_security = first_scheme(&doc["security"]);
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let Some(id) = op["operationId"].as_str() else { continue };
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| Param {
                    name: p["name"].as_str().unwrap_or_default().to_string(),
                    location: p["in"].as_str().unwrap_or_default().to_string(),
                    example: p.get("example").cloned(),
                })
                .collect();
            let body = &op["requestBody"];
            let security =
                if op.get("security").is_some() { first_scheme(&op["security"]) } else { default_security.clone() };
            let mut statuses = BTreeSet::new();
            let mut links = BTreeMap::new();
            for (status, response) in op["responses"].as_object().expect("responses") {
                statuses.insert(status.clone());
                let found: Vec<Link> = response["links"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, l)| Link {
                        name: name.clone(),
                        target: l["operationId"].as_str().expect("a link names its operationId").to_string(),
                        parameters: l["parameters"].as_object().cloned().unwrap_or_default(),
                        request_body: l.get("requestBody").cloned(),
                    })
                    .collect();
                if !found.is_empty() {
                    links.insert(status.clone(), found);
                }
            }
            ops.push(Operation {
                id: id.to_string(),
                method: method.to_uppercase(),
                path: path.clone(),
                security,
                params,
                body_example: body["content"]["application/json"].get("example").cloned(),
                body_required: body["required"].as_bool().unwrap_or(false),
                statuses,
                links,
            });
        }
    }
    ops
}

/// A runtime expression (`$response.body#/id`, `$request.body#/items/0/sku`,
/// `$request.path.id`) against one exchange; a literal is itself. `None`: it names nothing.
fn resolve(expr: &Value, ex: &Exchange) -> Option<Value> {
    match expr {
        Value::String(s) if s.starts_with('$') => {
            if let Some(ptr) = s.strip_prefix("$response.body#") {
                return ex.response_body.pointer(ptr).filter(|v| !v.is_null()).cloned();
            }
            if let Some(ptr) = s.strip_prefix("$request.body#") {
                return ex.request_body.as_ref()?.pointer(ptr).filter(|v| !v.is_null()).cloned();
            }
            if let Some(name) = s.strip_prefix("$request.path.") {
                return ex.path_params.get(name).cloned();
            }
            None
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), resolve(v, ex)?);
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => items.iter().map(|v| resolve(v, ex)).collect::<Option<Vec<_>>>().map(Value::Array),
        literal => Some(literal.clone()),
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encodes what a path segment cannot carry as is.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request: the status and the body (JSON when it parses, otherwise the text).
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(String, String)], body: Option<&str>) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, text) =
        http_text(addr, method, path, &headers, body).unwrap_or_else(|| panic!("{method} {path}: no answer"));
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

struct Walk<'a> {
    addr: SocketAddr,
    ops: &'a [Operation],
    /// The API key of the merchant the walk's `create_merchant` made.
    api_key: String,
    key_seq: u64,
    /// "source.status" -> how many times it offered its changes.
    turns: BTreeMap<String, usize>,
    tally: Tally,
}

impl<'a> Walk<'a> {
    fn op(&self, id: &str) -> &'a Operation {
        self.ops.iter().find(|o| o.id == id).unwrap_or_else(|| panic!("a link names {id}, which is no operation"))
    }

    /// Calls `op` with `input` over the examples; `None` when a path parameter has no value.
    fn call(&mut self, op: &Operation, input: &Input) -> Option<Exchange> {
        let mut path = op.path.clone();
        let mut path_params = Map::new();
        let mut headers = Vec::new();
        for p in &op.params {
            match p.location.as_str() {
                "path" => {
                    let value = input.path_params.get(&p.name).or(p.example.as_ref())?.clone();
                    path = path.replace(&format!("{{{}}}", p.name), &segment(&text_of(&value)));
                    path_params.insert(p.name.clone(), value);
                }
                "header" if p.name == "Idempotency-Key" => {
                    self.key_seq += 1;
                    headers.push((p.name.clone(), format!("walk-{}", self.key_seq)));
                }
                _ => {}
            }
        }
        match op.security.as_deref() {
            Some("merchant") => headers.push(("Authorization".into(), format!("Bearer {}", self.api_key))),
            Some("admin") => headers.push(("Authorization".into(), format!("Bearer {ADMIN}"))),
            Some("admin_basic") => headers.push(("Authorization".into(), basic_admin())),
            _ => {}
        }
        let body = input.body.clone().or_else(|| op.body_example.clone());
        if body.is_none() && op.body_required {
            return None;
        }
        let text = body.as_ref().map(Value::to_string);
        let (status, response_body) = send(self.addr, &op.method, &path, &headers, text.as_deref());
        *self.tally.calls.entry(op.id.clone()).or_default().entry(status).or_default() += 1;
        let documented = op.statuses.contains(&status.to_string())
            || op.statuses.contains(&format!("{}XX", status / 100))
            || op.statuses.contains("default");
        if !documented {
            self.tally.undocumented.insert(format!("{} {path} -> {status}: {response_body}", op.method));
        }
        if op.id == "create_merchant" && status == 201 {
            self.api_key = response_body["api_key"].as_str().expect("a new merchant's api_key").to_string();
        }
        Some(Exchange { path_params, request_body: body, status, response_body })
    }

    /// Calls `root` from its examples, then follows links breadth first.
    fn walk_from(&mut self, root: &str, follows: &mut BTreeMap<String, usize>, calls: &mut usize) {
        let mut queue: VecDeque<(String, Input, Option<String>)> =
            VecDeque::from([(root.to_string(), Input::default(), None)]);
        while let Some((id, input, via)) = queue.pop_front() {
            assert!(*calls < CALLS_PER_WALK_MAX, "the walk passed {CALLS_PER_WALK_MAX} calls");
            *calls += 1;
            let ops = self.ops;
            let op = ops.iter().find(|o| o.id == id).expect("an operation");
            let Some(ex) = self.call(op, &input) else {
                assert!(via.is_none(), "{via:?}: {id} has a path parameter with no value");
                continue;
            };
            if let Some(via) = &via {
                *self.tally.links.entry(via.clone()).or_default().entry(ex.status).or_default() += 1;
            }
            let Some(links) = op.links.get(&ex.status.to_string()) else { continue };
            // Every read the response offers, and its changes as `pick_changes` orders them: a
            // cancel must not leave a pay or a capture only a cancelled order to meet.
            let source = format!("{}.{}", op.id, ex.status);
            let mut changes = Vec::new();
            for link in links {
                let key = format!("{source}.{}", link.name);
                if follows.get(&key).copied().unwrap_or(0) >= FOLLOWS_PER_LINK_MAX {
                    continue;
                }
                let target = self.op(&link.target);
                for name in link.parameters.keys() {
                    assert!(
                        target.params.iter().any(|p| &p.name == name),
                        "{key}: {} has no parameter {name}",
                        target.id
                    );
                }
                let Some(next) = link_input(link, &ex) else { continue };
                self.tally.resolved.insert(key.clone());
                if target.method == "GET" {
                    *follows.entry(key.clone()).or_default() += 1;
                    queue.push_back((link.target.clone(), next, Some(key)));
                } else {
                    changes.push((key, link.target.clone(), next));
                }
            }
            for (key, target, next) in self.pick_changes(source, &op.id, changes) {
                *follows.entry(key.clone()).or_default() += 1;
                queue.push_back((target, next, Some(key)));
            }
        }
    }

    /// Which of a response's changes (links to operations that are not GETs) to make, in
    /// order. Changes that never succeeded yet go first (coverage, not repetition), and of
    /// those, a change to another operation before the same one again (a second capture of
    /// a payment tells less than its refund); the pick rotates each time `source` comes
    /// back. A change the walk never made at all goes too, after the picked one: it meets
    /// the state the picked one leaves, and must answer as documented there.
    fn pick_changes(&mut self, source: String, op_id: &str, mut changes: Vec<Change>) -> Vec<Change> {
        if changes.is_empty() {
            return changes;
        }
        let succeeded =
            |key: &String| self.tally.links.get(key).is_some_and(|s| s.keys().any(|s| (200..300).contains(s)));
        let fresh: Vec<usize> = (0..changes.len()).filter(|&i| !succeeded(&changes[i].0)).collect();
        let onward: Vec<usize> = fresh.iter().copied().filter(|&i| changes[i].1 != op_id).collect();
        let turn = self.turns.entry(source).or_default();
        let pick = match (onward.is_empty(), fresh.is_empty()) {
            (false, _) => onward[*turn % onward.len()],
            (true, false) => fresh[*turn % fresh.len()],
            (true, true) => *turn % changes.len(),
        };
        *turn += 1;
        let picked = changes.swap_remove(pick);
        let never = changes.into_iter().filter(|(key, ..)| !self.tally.links.contains_key(key));
        std::iter::once(picked).chain(never).collect()
    }
}

/// A link to follow: its key ("source.status.name"), the target operation and its input.
type Change = (String, String, Input);

/// The target's input from a link and the exchange it starts from; `None` when one of its
/// expressions names nothing there (a payment's id in an order without a payment).
fn link_input(link: &Link, ex: &Exchange) -> Option<Input> {
    let mut next = Input::default();
    for (name, expr) in &link.parameters {
        next.path_params.insert(name.clone(), resolve(expr, ex)?);
    }
    if let Some(body) = &link.request_body {
        next.body = Some(resolve(body, ex)?);
    }
    Some(next)
}

fn basic_admin() -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("admin:{ADMIN}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in raw.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { B64[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[test]
fn every_route_is_reached_through_examples_and_links() {
    let sim = Sim::start(&["--success-rate", "1", "--approval-rate", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let url = sim.url();
    let env =
        [("SURGE_GATEWAY_URLS", url.as_str()), ("SURGE_GATEWAY_SECRET", SIM_SECRET), ("SURGE_ADMIN_TOKEN", ADMIN)];
    let (surge, _) = Surge::start_with(dir.path(), &env);
    let (status, doc) = send(surge.addr, "GET", "/openapi.json", &[], None);
    assert_eq!(status, 200);
    let ops = operations(&doc);
    assert!(ops.len() >= 30, "the document lists {} operations", ops.len());

    let linked: BTreeSet<&str> =
        ops.iter().flat_map(|o| o.links.values().flatten()).map(|l| l.target.as_str()).collect();
    let mut roots: Vec<&str> = ops.iter().map(|o| o.id.as_str()).filter(|id| !linked.contains(id)).collect();

    // create_merchant first: the merchant its example makes signs every merchant route.
    roots.sort_by_key(|id| *id != "create_merchant");
    assert_eq!(roots.first(), Some(&"create_merchant"), "create_merchant is a root");
    let started = Instant::now();
    let mut walk = Walk {
        addr: surge.addr,
        ops: &ops,
        api_key: String::new(),
        key_seq: 0,
        turns: BTreeMap::new(),
        tally: Tally::default(),
    };
    // Rounds over the same server until one adds nothing: each round offers every response's
    // next change, and finds the state earlier rounds made.
    let (mut coverage, mut idle_rounds) = ((0, 0), 0);
    for round in 0..ROUNDS_MAX {
        if round == 1 {
            // The metrics window answers once the server has two readings, a second apart.
            std::thread::sleep(Duration::from_millis(2_500).saturating_sub(started.elapsed()));
        }
        let (mut follows, mut calls) = (BTreeMap::new(), 0);
        for root in &roots {
            walk.walk_from(root, &mut follows, &mut calls);
        }
        let ok_ops = walk.tally.calls.values().filter(|c| c.keys().any(|s| (200..300).contains(s))).count();
        let seen = (ok_ops, walk.tally.links.len());
        idle_rounds = if seen == coverage { idle_rounds + 1 } else { 0 };
        if round >= 2 && idle_rounds >= IDLE_ROUNDS_MAX {
            break;
        }
        coverage = seen;
    }
    let tally = walk.tally;

    let mut report = String::new();
    for op in &ops {
        report.push_str(&format!("{:24} {:?}\n", op.id, tally.calls.get(&op.id)));
    }
    for (link, statuses) in &tally.links {
        report.push_str(&format!("  {link:48} {statuses:?}\n"));
    }
    println!("{report}");

    assert!(tally.undocumented.is_empty(), "answers the document does not give:\n{:#?}", tally.undocumented);
    let unreached: Vec<&str> = ops.iter().map(|o| o.id.as_str()).filter(|id| !tally.calls.contains_key(*id)).collect();
    assert!(unreached.is_empty(), "operations no example or link reaches: {unreached:?}\n{report}");
    let all_links: Vec<String> = ops
        .iter()
        .flat_map(|o| {
            o.links.iter().flat_map(move |(s, ls)| ls.iter().map(move |l| format!("{}.{s}.{}", o.id, l.name)))
        })
        .collect();
    let never_resolved: Vec<&String> = all_links.iter().filter(|l| !tally.resolved.contains(*l)).collect();
    assert!(never_resolved.is_empty(), "links whose expressions never named anything: {never_resolved:?}\n{report}");
    let never_followed: Vec<&String> = all_links.iter().filter(|l| !tally.links.contains_key(*l)).collect();
    assert!(never_followed.is_empty(), "links the walk never followed: {never_followed:?}\n{report}");
    let never_ok: Vec<&str> = ops
        .iter()
        .map(|o| o.id.as_str())
        .filter(|id| !tally.calls[*id].keys().any(|s| (200..300).contains(s)))
        .filter(|id| !SUCCESS_OUT_OF_REACH.iter().any(|(o, _)| o == id))
        .collect();
    assert!(never_ok.is_empty(), "operations that never succeeded: {never_ok:?}\n{report}");
    for (id, why) in SUCCESS_OUT_OF_REACH {
        assert!(ops.iter().any(|o| o.id == *id), "{id} ({why}) is no longer an operation: drop it from the list");
    }
    drop(sim);
}
