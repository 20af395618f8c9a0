//! Connect protocol edge cases: envd answers every bad request with an error and keeps serving.

mod common;

use common::*;
use serde_json::{json, Value};

async fn post(envd: &Envd, path: &str, ct: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let resp = envd
        .client
        .post(envd.url(path))
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

fn end_error(body: &[u8]) -> Value {
    // The last frame is the end-stream frame.
    let mut rest = body;
    let mut last = Value::Null;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        assert!(rest.len() >= 5 + len, "truncated frame");
        if rest[0] & 2 != 0 {
            last = serde_json::from_slice(&rest[5..5 + len]).unwrap();
        }
        rest = &rest[5 + len..];
    }
    last["error"].clone()
}

#[tokio::test]
async fn bad_requests_get_errors_and_envd_keeps_serving() {
    let envd = Envd::start().await;

    // Unknown procedures and services.
    let (status, _, body) = post(
        &envd,
        "/process.Process/Nope",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "unimplemented");
    let (status, _, _) = post(
        &envd,
        "/other.Service/Call",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 404);

    // Unsupported content type.
    let (status, _, _) = post(&envd, "/process.Process/List", "text/plain", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    let (status, _, _) = post(
        &envd,
        "/process.Process/Start",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        status, 415,
        "a streaming procedure needs application/connect+json"
    );

    // Malformed JSON, wrong types, invalid UTF-8 (a lone surrogate escape and raw bytes).
    for bad in [
        &b"{"[..],
        b"{\"path\": 5}",
        b"{\"path\":\"\\udc80\"}",
        b"{\"path\":\"\xff\xfe\"}",
    ] {
        let (status, ct, body) = post(
            &envd,
            "/filesystem.Filesystem/Stat",
            "application/json",
            bad.to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert!(ct.starts_with("application/json"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "invalid_argument");
    }
    // Invalid UTF-8 in a protobuf string field.
    let (status, _, _) = post(
        &envd,
        "/filesystem.Filesystem/Stat",
        "application/proto",
        vec![0x0a, 0x02, 0xff, 0xfe],
    )
    .await;
    assert_eq!(status, 400);

    // Envelope trouble on a stream: truncated, compressed, bad flags, two requests.
    let start = json!({"process": {"cmd": "/bin/true"}}).to_string();
    let full = envelope(0, start.as_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (full[..full.len() - 3].to_vec(), "invalid_argument"),
        (envelope(1, start.as_bytes()), "unimplemented"),
        (envelope(0x40, start.as_bytes()), "invalid_argument"),
        ([full.clone(), full.clone()].concat(), "invalid_argument"),
        (Vec::new(), "invalid_argument"),
        (envelope(0, b"{not json"), "invalid_argument"),
    ];
    for (body, code) in cases {
        let (status, ct, resp) = post(
            &envd,
            "/process.Process/Start",
            "application/connect+json",
            body,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(ct, "application/connect+json");
        assert_eq!(end_error(&resp)["code"], code);
    }

    // An oversize message is refused before it is read whole.
    let mut huge = vec![0u8];
    huge.extend_from_slice(&(64u32 << 20).to_be_bytes());
    huge.extend(vec![b' '; 1024]);
    let (_, _, resp) = post(
        &envd,
        "/process.Process/Start",
        "application/connect+json",
        huge,
    )
    .await;
    assert_eq!(end_error(&resp)["code"], "resource_exhausted");
    let big_unary = vec![b' '; 17 << 20];
    let (status, _, body) = post(
        &envd,
        "/process.Process/List",
        "application/json",
        big_unary,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "resource_exhausted"
    );

    // Compression that was not negotiated. (A fresh connection: envd may close the one that
    // carried the oversized body without reading it.)
    let resp = reqwest::Client::new()
        .post(envd.url("/process.Process/List"))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);

    // Still serving (once the pool has seen envd close the oversized request's connection).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let run = envd.run("echo alive", json!({}), &[]).await;
    assert_eq!(run.stdout_str(), "alive\n");
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let envd = Envd::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(envd.url("/process.Process/List"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let resp = client
        .post(envd.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(envelope(
            0,
            json!({"process": {"cmd": "/bin/echo", "args": ["h2"]}})
                .to_string()
                .as_bytes(),
        ))
        .send()
        .await
        .unwrap();
    let body = resp.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(&b64(b"h2\n")), "{text}");
}
