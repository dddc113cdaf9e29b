//! Deciding an accepted payment once its settle delay is over.

use std::time::Duration;

use crate::callback;
use crate::state::SimState;
use crate::stats::bump;

/// Applies the decision drawn at acceptance after `delay`, then sends the callback. A
/// transaction cancelled in the meantime stays CANCELLED and gets no callback.
pub(crate) async fn after(state: SimState, index: usize, delay: Duration) {
    tokio::time::sleep(delay).await;
    let settled = state.inner.store.lock().settle(index);
    let Some(settled) = settled else { return };
    let stats = &state.inner.stats;
    bump(if settled.approved { &stats.approved } else { &stats.declined });
    tracing::info!(
        transaction = %settled.callback.transaction_key, status = settled.callback.status.as_str(),
        reason = ?settled.callback.reason, "decided"
    );
    callback::dispatch(&state, settled);
}
