//! `/sim/...`: the runtime control of the simulator (mode, rates, counters). These routes
//! answer at once in every mode: a test must be able to bring a `down` gateway back.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::args::check_rate;
use crate::error::ApiError;
use crate::state::{Mode, Rates, SimState};
use crate::stats::StatsSnapshot;

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/sim/mode", get(get_mode).post(set_mode))
        .route("/sim/config", get(get_config).post(set_config))
        .route("/sim/stats", get(stats))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    mode: Mode,
}

/// Any of the rates; the others keep their value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatesPatch {
    success_rate: Option<f64>,
    approval_rate: Option<f64>,
    drop_callbacks: Option<f64>,
}

async fn get_mode(State(state): State<SimState>) -> Json<ModeBody> {
    Json(ModeBody { mode: state.mode() })
}

async fn set_mode(
    State(state): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ModeBody>, ApiError> {
    let body: ModeBody = parse(body)?;
    state.set_mode(body.mode);
    tracing::info!(mode = ?body.mode, "mode changed");
    Ok(Json(body))
}

async fn get_config(State(state): State<SimState>) -> Json<Rates> {
    Json(state.rates())
}

async fn set_config(
    State(state): State<SimState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Rates>, ApiError> {
    let patch: RatesPatch = parse(body)?;
    let checked = |name: &str, rate: Option<f64>| {
        rate.map(check_rate).transpose().map_err(|e| ApiError::invalid(format!("{name}: {e}")))
    };
    let success_rate = checked("success_rate", patch.success_rate)?;
    let approval_rate = checked("approval_rate", patch.approval_rate)?;
    let drop_callbacks = checked("drop_callbacks", patch.drop_callbacks)?;
    let rates = {
        let mut rates = state.inner.rates.lock();
        rates.success_rate = success_rate.unwrap_or(rates.success_rate);
        rates.approval_rate = approval_rate.unwrap_or(rates.approval_rate);
        rates.drop_callbacks = drop_callbacks.unwrap_or(rates.drop_callbacks);
        *rates
    };
    tracing::info!(?rates, "rates changed");
    Ok(Json(rates))
}

async fn stats(State(state): State<SimState>) -> Json<StatsSnapshot> {
    let charged_twice = state.inner.store.lock().charged_twice();
    Json(state.inner.stats.snapshot(charged_twice))
}

fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::invalid(e.body_text()))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(e.to_string()))
}
