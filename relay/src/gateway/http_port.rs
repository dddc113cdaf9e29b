//! Reports to a server over its admin API, for a worker that runs in `surge relay` rather
//! than inside `surge serve`: `POST {server}/v1/admin/gateway/reports` with the admin token.
//! The server runs each report through the payment's shard like any command.

use std::sync::Arc;
use std::time::Duration;

use surge_core::Command;

use super::port::{CommandPort, PortError, PortFuture};

/// The report's route on the server.
pub const REPORTS_PATH: &str = "/v1/admin/gateway/reports";

/// A report on the wire: the merchant and the command, as `surge_core::Command` serializes.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ReportBody {
    pub merchant_id: String,
    pub command: Command,
}

pub struct HttpPort {
    http: reqwest::Client,
    url: String,
    authorization: String,
}

impl HttpPort {
    /// `server`: `http://host:port` of `surge serve`; `admin_token`: its admin token.
    pub fn new(server: &str, admin_token: &str, timeout_ms: u64) -> Result<HttpPort, String> {
        let base = server.trim_end_matches('/');
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(format!("server URL {server}: must be an http(s) URL"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the report client: {e}"))?;
        Ok(HttpPort { http, url: format!("{base}{REPORTS_PATH}"), authorization: format!("Bearer {admin_token}") })
    }
}

impl CommandPort for HttpPort {
    fn submit(&self, merchant: Arc<str>, command: Command) -> PortFuture {
        let request = self
            .http
            .post(&self.url)
            .header("authorization", &self.authorization)
            .json(&ReportBody { merchant_id: merchant.to_string(), command });
        Box::pin(async move {
            let response = request.send().await.map_err(|e| PortError::Unavailable(e.to_string()))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let detail = response.text().await.unwrap_or_default();
            let detail: String = detail.chars().take(512).collect();
            // 401/403: a wrong token is an operator's mistake; the report waits for it to be fixed.
            if status.is_server_error() || status.as_u16() == 401 || status.as_u16() == 403 || status.as_u16() == 429 {
                Err(PortError::Unavailable(format!("{status}: {detail}")))
            } else {
                Err(PortError::Refused(format!("{status}: {detail}")))
            }
        })
    }
}
