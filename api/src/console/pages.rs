//! The console's HTML and static files, compiled into the binary (no build chain): the
//! sign-in page (a plain form, no script), the shell the script fills, its stylesheet and
//! its script. Nothing a client sent is ever put into the HTML: the only substitution is
//! the session's CSRF token (hex) and fixed messages.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

pub const CSS: &str = include_str!("assets/console.css");
pub const JS: &str = include_str!("assets/console.js");
const SHELL: &str = include_str!("assets/console.html");
const SIGN_IN: &str = include_str!("assets/sign-in.html");

/// The console for a session whose CSRF token is `csrf_hex`.
pub fn shell(csrf_hex: &str) -> String {
    debug_assert!(csrf_hex.bytes().all(|b| b.is_ascii_hexdigit()));
    SHELL.replace("__CSRF__", csrf_hex)
}

/// The sign-in form, with a fixed `message` (never client input).
pub fn sign_in(message: Option<&'static str>) -> String {
    let message = message.map(|m| format!("<p class=\"error\" role=\"alert\">{m}</p>")).unwrap_or_default();
    SIGN_IN.replace("__MESSAGE__", &message)
}

pub fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Field `name` of an `application/x-www-form-urlencoded` body, decoded.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).and_then(|(_, v)| decode(v))
}

/// `+` and `%XX` decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_decode() {
        let body = b"token=adm_%41b+c&csrf=00ff&bad=%zz";
        assert_eq!(form_field(body, "token").as_deref(), Some("adm_Ab c"));
        assert_eq!(form_field(body, "csrf").as_deref(), Some("00ff"));
        assert_eq!(form_field(body, "bad"), None);
        assert_eq!(form_field(body, "missing"), None);
        assert_eq!(form_field(b"token=%4", "token"), None);
    }

    #[test]
    fn pages_have_no_inline_script_or_style() {
        for page in [shell("ab"), sign_in(Some("x"))] {
            assert!(!page.contains("<script>") && !page.contains("style=") && !page.contains("<style"), "{page}");
            assert!(!page.contains("__"), "a placeholder left: {page}");
        }
        assert!(!JS.contains("innerHTML"), "the script writes text, never markup");
    }
}
