//! Signed callbacks: HMAC-SHA256 over `"{timestamp}.{body}"`, delivered with exponential
//! backoff, at most `max_callbacks` being delivered or waiting to retry at once.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::state::{RetryPolicy, SimState};
use crate::stats::bump;
use crate::store::Settled;

pub(crate) struct Callbacks {
    client: reqwest::Client,
    secret: Vec<u8>,
    retry: RetryPolicy,
    /// One permit per callback being delivered or waiting to retry.
    permits: Arc<Semaphore>,
}

impl Callbacks {
    pub fn new(secret: Vec<u8>, retry: RetryPolicy, max_callbacks: usize) -> Result<Callbacks, String> {
        let client = reqwest::Client::builder()
            // A callback goes where callbackUrl says, not through a proxy of the environment,
            // and a redirect is an answer other than 2xx (retried), as at real gateways.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the callback client: {e}"))?;
        let permits = Arc::new(Semaphore::new(max_callbacks.min(Semaphore::MAX_PERMITS)));
        Ok(Callbacks { client, secret, retry, permits })
    }
}

/// Lowercase hex of HMAC-SHA256(secret, `"{timestamp}.{body}"`): the `X-Signature` header.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Sends the callback of a just-settled transaction, unless its drop was drawn or too many
/// callbacks are under way already (then it is counted and never sent).
pub(crate) fn dispatch(state: &SimState, settled: Settled) {
    let inner = &state.inner;
    let key = settled.callback.transaction_key.clone();
    if settled.drop_callback {
        bump(&inner.stats.callbacks_dropped);
        tracing::debug!(transaction = %key, "callback dropped (drop share)");
        return;
    }
    let Ok(permit) = inner.callbacks.permits.clone().try_acquire_owned() else {
        bump(&inner.stats.callbacks_overflow);
        tracing::warn!(transaction = %key, max = inner.config.max_callbacks, "too many callbacks under way: not sent");
        return;
    };
    let body = match serde_json::to_vec(&settled.callback) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(transaction = %key, error = %e, "encoding the callback");
            return;
        }
    };
    let state = state.clone();
    tokio::spawn(async move {
        deliver(&state, &settled.callback_url, &key, &body).await;
        drop(permit);
    });
}

/// At most `max_attempts` attempts; a 2xx ends it, anything else waits and tries again.
async fn deliver(state: &SimState, url: &str, key: &str, body: &[u8]) {
    let inner = &state.inner;
    let callbacks = &inner.callbacks;
    let retry = callbacks.retry;
    for attempt in 1..=retry.max_attempts {
        // Signed anew per attempt, so a receiver can refuse stale timestamps.
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let sent = callbacks
            .client
            .post(url)
            .timeout(retry.attempt_timeout)
            .header("content-type", "application/json")
            .header("x-timestamp", timestamp.to_string())
            .header("x-signature", signature(&callbacks.secret, timestamp, body))
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => {
                bump(&inner.stats.callbacks_sent);
                tracing::debug!(transaction = %key, attempt, "callback delivered");
                return;
            }
            Ok(answer) => {
                tracing::warn!(transaction = %key, attempt, status = %answer.status(), "callback refused");
            }
            Err(e) => tracing::warn!(transaction = %key, attempt, error = %causes(&e), "callback not delivered"),
        }
        bump(&inner.stats.callback_failures);
        if attempt < retry.max_attempts {
            tokio::time::sleep(retry.delay_after(attempt)).await;
        }
    }
    bump(&inner.stats.callbacks_abandoned);
    tracing::warn!(transaction = %key, attempts = retry.max_attempts, "callback abandoned");
}

/// An error and its sources, `a: b: c` (reqwest's own text alone does not say what failed).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    // Error chains are short; the bound keeps a cyclic one from looping.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2: the HMAC and its hex are the standard ones.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The signed message is exactly "{timestamp}.{body}".
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(signature(b"k", 1_700_000_000, b"{\"a\":1}"), hex(&mac.finalize().into_bytes()));
    }
}
