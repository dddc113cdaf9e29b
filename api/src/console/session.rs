//! Console sessions: a bounded table of signed-in browsers. A session id is 32 bytes from
//! the OS-seeded CSPRNG, sent only in an HttpOnly, SameSite=Strict cookie scoped to
//! `/admin`; the table keys sessions by the id's SHA-256, so a lookup's timing says nothing
//! useful about an id, and the CSRF token is compared in constant time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue};
use parking_lot::Mutex;
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::auth;

/// Sessions kept at once; signing in beyond it ends the session closest to expiry.
pub const SESSIONS_MAX: usize = 64;
/// A session ends this long after sign-in, used or not (a night of a ticket opening).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const COOKIE_NAME: &str = "surge_console";

struct Session {
    csrf: [u8; 32],
    expires_at: Instant,
}

/// A signed-in session, as a request proved it.
pub struct SignedIn {
    id_hash: [u8; 32],
    csrf: [u8; 32],
}

impl SignedIn {
    /// The CSRF token the pages carry (hex).
    pub fn csrf_hex(&self) -> String {
        auth::hex(&self.csrf)
    }

    /// Whether `presented` (hex) is this session's CSRF token, in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        auth::unhex32(presented).is_some_and(|p| bool::from(p.ct_eq(&self.csrf)))
    }
}

#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
}

fn random32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // ThreadRng: ChaCha seeded and reseeded from the OS, a CSPRNG.
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

impl Sessions {
    /// Starts a session; returns its id (hex, for the cookie only).
    pub fn create(&self) -> String {
        self.create_at(Instant::now())
    }

    fn create_at(&self, now: Instant) -> String {
        let id = random32();
        let mut table = self.table.lock();
        table.retain(|_, s| s.expires_at > now);
        if table.len() >= SESSIONS_MAX {
            // Bounded: the one that would expire first makes room.
            if let Some(oldest) = table.iter().min_by_key(|(_, s)| s.expires_at).map(|(k, _)| *k) {
                table.remove(&oldest);
            }
        }
        table.insert(auth::sha256(&id), Session { csrf: random32(), expires_at: now + SESSION_TTL });
        auth::hex(&id)
    }

    /// The session the request's cookie names, if it is one and has not expired.
    pub fn signed_in(&self, headers: &HeaderMap) -> Option<SignedIn> {
        self.find(cookie(headers)?, Instant::now())
    }

    fn find(&self, id_hex: &str, now: Instant) -> Option<SignedIn> {
        let id_hash = auth::sha256(&auth::unhex32(id_hex)?);
        let mut table = self.table.lock();
        let session = table.get(&id_hash)?;
        if session.expires_at <= now {
            table.remove(&id_hash);
            return None;
        }
        Some(SignedIn { id_hash, csrf: session.csrf })
    }

    pub fn end(&self, session: &SignedIn) {
        self.table.lock().remove(&session.id_hash);
    }

    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id of the request's `Cookie` header, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    // Bounded: a request's headers are bounded by hyper's limits.
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a new session. Not `Secure`: `surge serve` speaks plain HTTP (on
/// loopback, or behind a proxy that terminates TLS); SameSite=Strict keeps other sites'
/// requests from carrying it.
pub fn set_cookie(id_hex: &str) -> HeaderValue {
    let value =
        format!("{COOKIE_NAME}={id_hex}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs());
    // Hex and ASCII only: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("surge_console=; Path=/admin"))
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("surge_console=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {COOKIE_NAME}={id}")).unwrap());
        h
    }

    #[test]
    fn sessions_expire_are_bounded_and_end() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let id = sessions.create_at(t0);
        assert_eq!(id.len(), 64);
        let s = sessions.find(&id, t0).expect("signed in");
        assert!(s.csrf_matches(&s.csrf_hex()));
        assert!(!s.csrf_matches(&auth::hex(&[0; 32])) && !s.csrf_matches("x"));
        assert!(sessions.find(&id, t0 + SESSION_TTL).is_none(), "expired");
        assert!(sessions.find(&id, t0).is_none(), "an expired session is gone");
        let ids: Vec<String> = (0..SESSIONS_MAX + 5).map(|_| sessions.create_at(t0)).collect();
        assert_eq!(sessions.len(), SESSIONS_MAX);
        let last = sessions.signed_in(&headers(ids.last().unwrap())).expect("the newest is kept");
        sessions.end(&last);
        assert!(sessions.signed_in(&headers(ids.last().unwrap())).is_none());
        assert!(sessions.signed_in(&headers("zz")).is_none());
    }
}
