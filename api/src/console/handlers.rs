//! The console's routes. Every answer carries the security headers (`security_headers`);
//! every JSON endpoint needs a session, and every POST also its CSRF token (the
//! `X-CSRF-Token` header, or the `csrf` field of the sign-out form): without a session the
//! answer is 401 and changes nothing, with a wrong token 403 and changes nothing.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use surge_core::{Command, Reply, Request};

use super::session::{self, SignedIn};
use super::{history, load_runs, overview, pages};
use crate::error::ApiError;
use crate::routes::{exec_error, json};
use crate::{auth, dto, AppState};

/// Bodies of the console's requests: a sign-in form or a merchant.
const CONSOLE_BODY_BYTES_MAX: usize = 16 * 1024;
/// Merchants one listing shows, at most.
pub const MERCHANTS_LIST_MAX: usize = 1_000;
/// Dead letters one listing shows.
const DEAD_LETTERS_SHOWN: usize = 200;
/// A load report served, at most (`surge load` writes a few hundred KiB).
const REPORT_BYTES_MAX: u64 = 16 << 20;

/// No script but our own file, no framing, nothing inline: a page injected with markup
/// could not run it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// A load report is `surge load`'s self-contained HTML (inline styles and SVG, no script):
/// shown sandboxed, with nothing it could load or run.
const REPORT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/console.css", get(css))
        .route("/admin/console.js", get(js))
        .route("/admin/sign-in", post(sign_in))
        .route("/admin/sign-out", post(sign_out))
        .route("/admin/api/overview", get(overview_json))
        .route("/admin/api/merchants", get(merchants).post(create_merchant))
        .route("/admin/api/merchants/{id}/rotate-key", post(rotate_key))
        .route("/admin/api/lookup", get(lookup))
        .route("/admin/api/dead-letters", get(dead_letters))
        .route("/admin/api/dead-letters/{id}/retry", post(retry_dead_letter))
        .route("/admin/api/load-runs", get(load_runs_json))
        .route("/admin/load-runs/{file}", get(load_report))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The headers every console answer (and `GET /admin`) carries; a handler's own
/// `Content-Security-Policy` or `Cache-Control` wins.
pub async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let defaults: [(header::HeaderName, &'static str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    res
}

/// `GET /admin` for a browser with a session: the console; with the admin token as Bearer
/// or Basic: `None` (the caller answers the status page); otherwise the sign-in page (for
/// a browser, `Accept: text/html`) or a 401 problem.
pub fn admin_root(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if let Some(session) = state.console().sessions.signed_in(headers) {
        return Some(pages::html(StatusCode::OK, pages::shell(&session.csrf_hex())));
    }
    let presented = auth::bearer(headers).map(str::to_string).or_else(|| auth::basic_password(headers));
    if presented.is_some_and(|t| auth::matches(&t, state.admin_token_hash())) {
        return None;
    }
    let wants_html =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"));
    let has_credentials = headers.contains_key(header::AUTHORIZATION);
    if wants_html && !has_credentials {
        // Not Basic: a browser would answer it with its own password dialog instead of
        // showing the form.
        let mut res = pages::html(StatusCode::UNAUTHORIZED, pages::sign_in(None));
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"surge admin\""));
        return Some(res);
    }
    let mut res = ApiError::unauthorized().into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"surge admin\""));
    Some(res)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", pages::CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", pages::JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // No data in them: cacheable, but checked again so a new binary's files are seen.
    let headers = [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")];
    (StatusCode::OK, headers, body).into_response()
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, CONSOLE_BODY_BYTES_MAX).await.map_err(|_| ApiError::payload_too_large())
}

/// A session, or 401.
fn session(state: &AppState, headers: &HeaderMap) -> Result<SignedIn, ApiError> {
    state.console().sessions.signed_in(headers).ok_or_else(ApiError::unauthorized)
}

/// A session whose CSRF token the request carries in `X-CSRF-Token`, or 401 / 403.
fn session_with_csrf(state: &AppState, headers: &HeaderMap) -> Result<SignedIn, ApiError> {
    let s = session(state, headers)?;
    let presented = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !s.csrf_matches(presented) {
        return Err(csrf_refused());
    }
    Ok(s)
}

fn csrf_refused() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "missing or wrong CSRF token: reload the console")
}

fn see_other(location: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

async fn sign_in(State(state): State<AppState>, body: Body) -> Response {
    let Ok(body) = read_body(body).await else {
        return pages::html(StatusCode::PAYLOAD_TOO_LARGE, pages::sign_in(Some("That request was too large.")));
    };
    let token = pages::form_field(&body, "token").unwrap_or_default();
    if token.is_empty() || !auth::matches(&token, state.admin_token_hash()) {
        let page = pages::sign_in(Some("That is not the admin token."));
        return pages::html(StatusCode::UNAUTHORIZED, page);
    }
    let id = state.console().sessions.create();
    let mut res = see_other("/admin");
    res.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&id));
    res
}

async fn sign_out(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let s = session(&state, &headers)?;
    let body = read_body(body).await?;
    let presented = pages::form_field(&body, "csrf").unwrap_or_default();
    if !s.csrf_matches(&presented) {
        return Err(csrf_refused());
    }
    state.console().sessions.end(&s);
    let mut res = see_other("/admin");
    res.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    Ok(res)
}

async fn overview_json(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    session(&state, &headers)?;
    Ok(json(StatusCode::OK, &overview::overview(&state).await))
}

async fn merchants(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    session(&state, &headers)?;
    let engine = state.engine()?;
    let (per_shard, note) = super::read_across(&state, &engine, |shard| {
        shard.merchants().take(MERCHANTS_LIST_MAX).map(|m| m.view()).collect::<Vec<_>>()
    })
    .await?;
    let mut all: Vec<_> = per_shard.into_iter().flatten().collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let truncated = all.len() > MERCHANTS_LIST_MAX;
    all.truncate(MERCHANTS_LIST_MAX);
    let items: Vec<_> = all.iter().map(|m| dto::merchant(m, None)).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "merchants": items, "truncated": truncated, "note": note })))
}

async fn create_merchant(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    session_with_csrf(&state, &headers)?;
    let body = read_body(body).await?;
    let merchant: crate::routes::MerchantBody = crate::extract::parse_json(&headers, &body)?;
    let engine = state.engine()?;
    crate::routes::new_merchant(&engine, merchant, None).await
}

/// Replaces a merchant's API key through the log (`RotateApiKey`); the new key is in this
/// answer only, and the old one stops working once it is durable.
async fn rotate_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    session_with_csrf(&state, &headers)?;
    let engine = state.engine()?;
    let api_key = auth::new_api_key();
    let hash = auth::sha256(api_key.as_bytes());
    let req = Request { merchant: id, idempotency: None, command: Command::RotateApiKey { api_key_hash: hash } };
    let executed = engine.execute(req).await.map_err(exec_error)?;
    match &executed.reply {
        Reply::Merchant(m) => {
            engine.replace_key(&m.id, hash);
            Ok(json(StatusCode::OK, &dto::merchant(m, Some(&api_key))))
        }
        _ => Err(ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply to a key rotation")),
    }
}

#[derive(Deserialize)]
struct LookupQuery {
    #[serde(default)]
    id: String,
}

async fn lookup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LookupQuery>,
) -> Result<Response, ApiError> {
    session(&state, &headers)?;
    Ok(json(StatusCode::OK, &history::lookup(&state, &q.id).await?))
}

#[derive(Deserialize)]
struct DeadLetterQuery {
    status: Option<String>,
}

async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Response, ApiError> {
    session(&state, &headers)?;
    let status = q.status.as_deref().filter(|s| !s.is_empty() && *s != "all");
    let engine = state.engine()?;
    let (all, note) = crate::gateway::dead_letters(&state, &engine, status, Some(DEAD_LETTERS_SHOWN)).await?;
    let items: Vec<_> = all.iter().map(|(merchant, view)| dto::dead_letter(view, Some(merchant))).collect();
    let body = serde_json::json!({ "gateway": state.gateway().is_some(), "dead_letters": items, "note": note });
    Ok(json(StatusCode::OK, &body))
}

async fn retry_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    session_with_csrf(&state, &headers)?;
    let engine = state.engine()?;
    crate::gateway::retry(&engine, &id).await
}

async fn load_runs_json(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    session(&state, &headers)?;
    let dir = state.console().load_results_dir();
    let runs = tokio::task::spawn_blocking(move || load_runs::list(&dir))
        .await
        .map_err(|_| ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR, "listing load runs failed"))?;
    Ok(json(StatusCode::OK, &runs))
}

async fn load_report(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    session(&state, &headers)?;
    let dir = state.console().load_results_dir();
    let path = load_runs::report_path(&dir, &file).ok_or_else(|| ApiError::not_found("no such load report"))?;
    let too_big = std::fs::metadata(&path).map_or(true, |m| m.len() > REPORT_BYTES_MAX);
    let html = if too_big { None } else { tokio::fs::read(&path).await.ok() };
    let html = html.ok_or_else(|| ApiError::not_found("the load report could not be read"))?;
    let headers = [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, REPORT_CSP)];
    Ok((StatusCode::OK, headers, html).into_response())
}
