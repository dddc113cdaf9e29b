//! The console (`/admin`) through the router, without a socket: sign-in, sessions, CSRF,
//! security headers, and that every change goes through the engine.

mod common;

use axum::http::StatusCode;
use common::*;
use surge_api::console::ConsoleSettings;

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

fn header<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn assert_secure(r: &Resp) {
    let csp = header(r, "content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "csp: {csp}");
    assert!(!csp.contains("unsafe-inline") || csp.contains("sandbox"), "csp: {csp}");
    assert_eq!(header(r, "x-frame-options"), "DENY");
    assert_eq!(header(r, "x-content-type-options"), "nosniff");
}

/// Signs in; returns the `Cookie` header value and the page's CSRF token.
async fn sign_in(s: &Server) -> (String, String) {
    let body = format!("token={ADMIN}");
    let r = s.send("POST", "/admin/sign-in", &[], Some(&body)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(header(&r, "location"), "/admin");
    let set = header(&r, "set-cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = s.send("GET", "/admin", &[("cookie", &cookie), HTML], None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_secure(&page);
    assert_eq!(header(&page, "cache-control"), "no-store");
    let html = page.body.as_str().unwrap();
    let csrf = html.split("name=\"csrf-token\" content=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert_eq!(csrf.len(), 64);
    (cookie, csrf)
}

fn server_with_console(dir: &std::path::Path) -> Server {
    let s = server(dir);
    s.state
        .console()
        .configure(ConsoleSettings { wal_dir: Some(dir.join("wal")), load_results_dir: dir.join("load-results") });
    s
}

#[tokio::test]
async fn without_a_session_the_console_shows_the_sign_in_page_and_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_console(dir.path());
    // A browser gets the form (not a Basic challenge, which would hide it).
    let r = s.send("GET", "/admin", &[HTML], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(header(&r, "content-type").starts_with("text/html"));
    assert!(header(&r, "www-authenticate").starts_with("Bearer"));
    assert!(r.body.as_str().unwrap().contains("action=\"/admin/sign-in\""));
    assert_secure(&r);
    // Other clients: the 401 problem with a Basic challenge, as before.
    let r = s.send("GET", "/admin", &[], None).await;
    r.assert_problem(401, "unauthorized");
    assert!(header(&r, "www-authenticate").starts_with("Basic"));
    let r = s.send("GET", "/admin", &[("authorization", "Bearer wrong"), HTML], None).await;
    r.assert_problem(401, "unauthorized");
    // The admin token as Bearer still opens the status page.
    let auth = format!("Bearer {ADMIN}");
    let r = s.send("GET", "/admin", &[("authorization", &auth)], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.as_str().unwrap().contains("durable LSN"));
    assert_secure(&r);
    // No JSON without a session, and a made-up or malformed cookie is no session.
    for cookie in ["", "surge_console=00", "surge_console=zz", &format!("surge_console={}", "ab".repeat(32))] {
        for path in ["/admin/api/overview", "/admin/api/merchants", "/admin/api/dead-letters", "/admin/api/load-runs"] {
            let r = s.send("GET", path, &[("cookie", cookie)], None).await;
            r.assert_problem(401, "unauthorized");
            assert_secure(&r);
        }
    }
    // A wrong token signs nobody in.
    let r = s.send("POST", "/admin/sign-in", &[], Some("token=nope")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get("set-cookie").is_none());
    assert!(r.body.as_str().unwrap().contains("not the admin token"));
    // The static files need no session and hold no data.
    let r = s.send("GET", "/admin/console.js", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(header(&r, "content-type").starts_with("text/javascript"));
}

#[tokio::test]
async fn changes_need_the_session_and_its_csrf_token_and_go_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_console(dir.path());
    let (cookie, csrf) = sign_in(&s).await;
    let body = r#"{"id":"m-1","name":"Shop","currency":"KRW"}"#;
    let create = |headers: Vec<(&'static str, String)>| {
        let s = &s;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            s.send("POST", "/admin/api/merchants", &h, Some(body)).await
        }
    };
    create(vec![("cookie", cookie.clone())]).await.assert_problem(403, "forbidden");
    create(vec![("cookie", cookie.clone()), ("x-csrf-token", "ab".repeat(32))]).await.assert_problem(403, "forbidden");
    create(vec![("x-csrf-token", csrf.clone())]).await.assert_problem(401, "unauthorized");
    let list = s.send("GET", "/admin/api/merchants", &[("cookie", &cookie)], None).await;
    assert_eq!(list.body["merchants"], serde_json::json!([]), "nothing was created");

    let r = create(vec![("cookie", cookie.clone()), ("x-csrf-token", csrf.clone())]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let key = r.body["api_key"].as_str().unwrap().to_string();
    let c = Client::new(&s, &key);
    assert_eq!(
        c.put("/v1/items/sku-1", r#"{"name":"Seat","price":1000,"stock":10}"#).await.status,
        StatusCode::CREATED
    );
    // The engine's rules hold for the console too: the merchant exists.
    let again = create(vec![("cookie", cookie.clone()), ("x-csrf-token", csrf.clone())]).await;
    again.assert_problem(409, "invalid_state");

    // Rotating: without the token nothing changes; with it the old key stops working.
    let rotate = "/admin/api/merchants/m-1/rotate-key";
    s.send("POST", rotate, &[("cookie", &cookie)], None).await.assert_problem(403, "forbidden");
    assert_eq!(c.get("/v1/items/sku-1").await.status, StatusCode::OK);
    let r = s.send("POST", rotate, &[("cookie", &cookie), ("x-csrf-token", &csrf)], None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new_key = r.body["api_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    c.get("/v1/items/sku-1").await.assert_problem(401, "unauthorized");
    let c = Client::new(&s, &new_key);
    assert_eq!(c.get("/v1/items/sku-1").await.status, StatusCode::OK);
    let unknown = "/admin/api/merchants/m-9/rotate-key";
    s.send("POST", unknown, &[("cookie", &cookie), ("x-csrf-token", &csrf)], None)
        .await
        .assert_problem(404, "not_found");

    // Retrying a dead letter that does not exist: the engine says so.
    let retry = "/admin/api/dead-letters/m-1:dl_1/retry";
    s.send("POST", retry, &[("cookie", &cookie)], None).await.assert_problem(403, "forbidden");
    s.send("POST", retry, &[("cookie", &cookie), ("x-csrf-token", &csrf)], None).await.assert_problem(404, "not_found");

    // Signing out needs the token too; after it the cookie is no session.
    let r = s.send("POST", "/admin/sign-out", &[("cookie", &cookie)], Some("csrf=00")).await;
    r.assert_problem(403, "forbidden");
    let r = s.send("GET", "/admin/api/overview", &[("cookie", &cookie)], None).await;
    assert_eq!(r.status, StatusCode::OK, "a refused sign-out keeps the session");
    let r = s.send("POST", "/admin/sign-out", &[("cookie", &cookie)], Some(&format!("csrf={csrf}"))).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(header(&r, "set-cookie").contains("Max-Age=0"));
    s.send("GET", "/admin/api/overview", &[("cookie", &cookie)], None).await.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn overview_lookup_and_load_runs_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_console(dir.path());
    let key = s.merchant("m-1").await;
    let c = Client::new(&s, &key);
    c.put("/v1/items/sku-1", r#"{"name":"Seat","price":1000,"stock":10}"#).await;
    let order = r#"{"customer_id":"c-1","lines":[{"sku":"sku-1","qty":2}],"payment":{"method":"none"}}"#;
    assert_eq!(c.post_key("/v1/orders", "k1", order).await.status, StatusCode::CREATED);
    c.post("/v1/orders/ord_1/cancel", "").await;
    let (cookie, _) = sign_in(&s).await;
    let h = [("cookie", cookie.as_str())];

    s.state.console().samples.take(&s.state);
    let o = s.send("GET", "/admin/api/overview", &h, None).await;
    assert_eq!(o.status, StatusCode::OK);
    assert_eq!(o.body["ready"], true);
    assert_eq!(o.body["orders_total"][0], serde_json::json!(["created", 1]));
    assert_eq!(o.body["gateway"], serde_json::Value::Null);

    let r = s.send("GET", "/admin/api/lookup?id=ord_1", &h, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let found = &r.body["found"][0];
    assert_eq!(found["merchant_id"], "m-1");
    assert_eq!(found["current"]["status"], "cancelled");
    let types: Vec<&str> = found["history"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["order.created", "order.cancelled"], "{}", r.body);
    assert!(r.body["history_scan"]["to_lsn"].as_u64().unwrap() >= 3);
    let r = s.send("GET", "/admin/api/lookup?id=ord_9", &h, None).await;
    assert_eq!(r.body["found"], serde_json::json!([]));
    s.send("GET", "/admin/api/lookup?id=x", &h, None).await.assert_problem(400, "invalid_request");

    let runs = dir.path().join("load-results");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(runs.join("orders-1.json"), r#"{"scenario":"orders","verdict":"pass","checks":[]}"#).unwrap();
    std::fs::write(runs.join("orders-1.html"), "<html><body>report</body></html>").unwrap();
    let r = s.send("GET", "/admin/api/load-runs", &h, None).await;
    assert_eq!(r.body["runs"][0]["scenario"], "orders");
    assert_eq!(r.body["runs"][0]["report"], "orders-1.html");
    let r = s.send("GET", "/admin/load-runs/orders-1.html", &h, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(header(&r, "content-security-policy").contains("sandbox"));
    s.send("GET", "/admin/load-runs/orders-1.html", &[], None).await.assert_problem(401, "unauthorized");
    s.send("GET", "/admin/load-runs/..%2Forders-1.html", &h, None).await.assert_problem(404, "not_found");
}
