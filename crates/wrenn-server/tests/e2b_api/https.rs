//! HTTPS (`--tls-listen`) with Wrenn's own CA, and host routing over it as the E2B SDK uses
//! it: `api.{domain}` is the API, `{port}-{id}.{domain}` a sandbox's port, with the names
//! pinned to 127.0.0.1 in the client (reqwest's resolver override: no wildcard DNS here).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{body::Body, http::HeaderMap};
use reqwest::{Certificate, StatusCode, Version};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use wrenn_server::https::{CertSource, Https};

use super::start;

const DOMAIN: &str = "wrenn.test";

/// Serves `state` over HTTPS on a loopback port: its address and the CA to trust.
async fn serve_https(state: wrenn_server::AppState, pki: &std::path::Path) -> (SocketAddr, String) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let source = CertSource::own(pki, DOMAIN, addr);
    let ca = source.ca_file().unwrap();
    let https = Https::new(source).unwrap();
    let listener = https.listener(tcp).unwrap();
    tokio::spawn(wrenn_server::serve(listener, state, std::future::pending()));
    (addr, std::fs::read_to_string(ca).unwrap())
}

/// A client that trusts only `ca` and finds each of `names` at `addr`.
fn client(ca: &str, addr: SocketAddr, names: &[String], http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_pem(ca.as_bytes()).unwrap());
    for n in names {
        b = b.resolve(n, addr);
    }
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// A server standing for a service in the guest: it records the headers it got and streams
/// its answer in two parts, the second only once `go` is sent.
async fn guest_service() -> (
    u16,
    Arc<Mutex<Option<HeaderMap>>>,
    tokio::sync::mpsc::Sender<()>,
) {
    let seen = Arc::new(Mutex::new(None));
    let (go, wait) = tokio::sync::mpsc::channel::<()>(1);
    let wait = Arc::new(tokio::sync::Mutex::new(wait));
    let (s, w) = (seen.clone(), wait.clone());
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let (s, w) = (s.clone(), w.clone());
        async move {
            *s.lock().unwrap() = Some(headers);
            let parts = futures_util::stream::unfold(0, move |n| {
                let w = w.clone();
                async move {
                    match n {
                        0 => Some((Ok::<_, std::io::Error>("first\n".to_string()), 1)),
                        1 => {
                            w.lock().await.recv().await;
                            Some((Ok("second\n".to_string()), 2))
                        }
                        _ => None,
                    }
                }
            });
            Body::from_stream(parts)
        }
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, seen, go)
}

#[tokio::test]
async fn host_routing_over_https_with_the_own_ca() {
    let s = start().await;
    let pki = tempfile::tempdir().unwrap();
    let (addr, ca) = serve_https(s.state.clone(), pki.path()).await;
    let port = addr.port();
    let api = format!("api.{DOMAIN}");

    // The API by its name, over HTTP/2 (ALPN) and HTTP/1.1.
    for http1 in [false, true] {
        let c = client(&ca, addr, std::slice::from_ref(&api), http1);
        let r = c
            .post(format!("https://{api}:{port}/v2/sandboxes"))
            .header("X-API-Key", &s.key_a)
            .json(&json!({"templateID": "minimal"}))
            .send()
            .await
            .unwrap();
        let want = if http1 {
            Version::HTTP_11
        } else {
            Version::HTTP_2
        };
        assert_eq!(r.version(), want);
        assert_eq!(r.status(), StatusCode::CREATED);
        let b: Value = r.json().await.unwrap();
        // The SDK builds `https://49983-{id}.{domain}` from this.
        assert_eq!(b["domain"], json!(format!("{DOMAIN}:{port}")), "{b}");
    }
    // The same certificate also verifies for the listener's own address.
    let r = client(&ca, addr, &[], false)
        .get(format!("https://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // A sandbox whose "guest" is a loopback service.
    let a = s.create(json!({"templateID": "minimal"})).await;
    let id = a["sandboxID"].as_str().unwrap().to_string();
    let token = a["envdAccessToken"].as_str().unwrap().to_string();
    s.agent.set_address(&id, "127.0.0.1");
    let (service, seen, go) = guest_service().await;
    let user_host = format!("{service}-{id}.{DOMAIN}");
    let envd_host = format!("49983-{id}.{DOMAIN}");
    let missing_host = format!("49983-cl-0123456789abcdefghijklmno.{DOMAIN}");
    let names = [user_host.clone(), envd_host.clone(), missing_host.clone()];
    for http1 in [false, true] {
        let c = client(&ca, addr, &names, http1);
        // A user port, by a name the wildcard covers; streamed, not buffered: the first part
        // arrives while the guest still holds back the second.
        let mut r = c
            .get(format!("https://{user_host}:{port}/p?x=1"))
            .header("X-API-Key", &s.key_a)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let first = r.chunk().await.unwrap().unwrap();
        assert_eq!(&first[..], b"first\n");
        go.send(()).await.unwrap();
        let mut rest = Vec::new();
        while let Some(c) = r.chunk().await.unwrap() {
            rest.extend_from_slice(&c);
        }
        assert_eq!(rest, b"second\n");
        // The platform key never reaches the guest.
        let headers = seen.lock().unwrap().take().unwrap();
        assert!(headers.get("x-api-key").is_none(), "{headers:?}");

        // Team B's key: exactly as a missing capsule.
        let r = c
            .get(format!("https://{user_host}:{port}/"))
            .header("X-API-Key", &s.key_b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // envd's port answers as E2B's proxy does: missing, foreign, no token, a wrong
        // token: all 502 "was not found".
        let not_found = |r: reqwest::Response| async move {
            assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
            let b: Value = r.json().await.unwrap();
            assert!(
                b["message"].as_str().unwrap().contains("was not found"),
                "{b}"
            );
        };
        let envd = |host: &str, header: Option<(&str, &str)>| {
            let mut r = c.get(format!("https://{host}:{port}/health"));
            if let Some((k, v)) = header {
                r = r.header(k, v);
            }
            r.send()
        };
        not_found(
            envd(&missing_host, Some(("X-Access-Token", &token)))
                .await
                .unwrap(),
        )
        .await;
        not_found(envd(&envd_host, None).await.unwrap()).await;
        not_found(
            envd(&envd_host, Some(("X-Access-Token", "wrong")))
                .await
                .unwrap(),
        )
        .await;
        not_found(
            envd(&envd_host, Some(("X-API-Key", &s.key_b)))
                .await
                .unwrap(),
        )
        .await;
    }
    // Paused: "was not found" too, with the right token.
    s.a("POST", &format!("/sandboxes/{id}/pause"), None).await;
    let r = client(&ca, addr, std::slice::from_ref(&envd_host), false)
        .get(format!("https://{envd_host}:{port}/health"))
        .header("X-Access-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);

    // A name the certificate does not cover (two labels under the domain) is refused by the
    // client's verification, not served.
    let deep = format!("a.b.{DOMAIN}");
    let e = client(&ca, addr, std::slice::from_ref(&deep), false)
        .get(format!("https://{deep}:{port}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect() || e.is_request(), "{e:?}");
}
