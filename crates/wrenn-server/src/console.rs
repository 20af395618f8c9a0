//! The web console (`dashboard/`), served at `/` on the API's own origin: the built files are
//! embedded at compile time (`build.rs`), each with its gzip and brotli copies, and answered
//! with a strict Content-Security-Policy. Paths without a file extension are the console's
//! own pages (client-side routes) and get `index.html`. Without a built console, `/` explains
//! how to build it.

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};

/// One built file of the console.
pub struct Asset {
    /// Its URL path (`/index.html`, `/assets/index-3f2a.js`).
    pub path: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub br: Option<&'static [u8]>,
}

/// The embedded console, sorted by path (empty when it was not built).
static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Scripts only from this origin (no inline script, no eval); connections only to this origin
/// (the API, its WebSockets and its event stream). Styles may also be inline: xterm.js writes
/// its theme and cell sizes into `<style>` elements, and styles cannot run code.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
     worker-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Where the console reads the server's settings it shows (not part of the API).
pub const SETTINGS_PATH: &str = "/console.json";

/// The settings the console needs: the port proxy's domain (for a capsule's port URLs) and
/// who may sign up (whether to offer it).
pub fn settings(domain: &str, signup: &str) -> Response {
    let body = serde_json::json!({ "proxy_domain": domain, "signup": signup });
    let mut resp = (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body.to_string(),
    )
        .into_response();
    secure(&mut resp);
    resp
}

/// Whether the console was built into this binary.
pub fn built() -> bool {
    !ASSETS.is_empty()
}

/// Whether a request for `path` with `method` is the console's (not the API's): reads of
/// anything outside `/v1/`.
pub fn is_console(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && path != "/v1" && !path.starts_with("/v1/")
}

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .map(|i| &ASSETS[i])
}

/// Which encoding of an asset the client takes: brotli, then gzip, else none.
fn encoding(headers: &HeaderMap) -> (bool, bool) {
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let takes = |name: &str| {
        accept.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            coding.eq_ignore_ascii_case(name) && !refused
        })
    };
    (takes("br"), takes("gzip"))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "webmanifest") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The headers every console answer carries.
fn secure(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// A console page or file for `GET`/`HEAD` `uri`.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if !built() {
        return not_built();
    }
    let last = path.rsplit('/').next().unwrap_or("");
    let asset = match find(path) {
        Some(a) => a,
        // A page of the console (a client-side route): its one HTML document.
        None if !last.contains('.') => match find("/index.html") {
            Some(a) => a,
            None => return not_built(),
        },
        None => return missing(),
    };
    let immutable = asset.path.starts_with("/assets/");
    let (br, gzip) = encoding(&headers);
    let (body, coding) = match (asset.br, asset.gzip) {
        (Some(b), _) if br => (b, Some("br")),
        (_, Some(g)) if gzip => (g, Some("gzip")),
        _ => (asset.body, None),
    };
    let mut resp = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(body))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(asset.path)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    // Hashed names never change content: cache them for a year; the HTML is revalidated.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if asset.gzip.is_some() || asset.br.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(c) = coding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
    }
    secure(&mut resp);
    resp
}

fn missing() -> Response {
    let mut resp = (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response();
    secure(&mut resp);
    resp
}

/// The page of a server built without its console.
fn not_built() -> Response {
    let mut resp = (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        NOT_BUILT,
    )
        .into_response();
    secure(&mut resp);
    resp
}

const NOT_BUILT: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Wrenn: the console is not built</title>
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>
<body><main>
<h1>Wrenn's web console is not part of this build</h1>
<p>The API works: it is under <a href=\"/v1/capsules\">/v1</a>, described at
<a href=\"/docs\">/docs</a>.</p>
<p>The console is built from <code>dashboard/</code> with Node.js (20.19 or newer) and npm,
then embedded when the binary is compiled:</p>
<pre>make dashboard      # npm ci &amp;&amp; npm run build in dashboard/
cargo build -p wrenn</pre>
<p><code>make up</code> does both.</p>
</main></body></html>
";

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn encodings_follow_accept_encoding() {
        assert_eq!(encoding(&accept("gzip, deflate, br, zstd")), (true, true));
        assert_eq!(encoding(&accept("gzip")), (false, true));
        assert_eq!(encoding(&accept("br;q=0, gzip;q=0.5")), (false, true));
        assert_eq!(encoding(&accept("identity")), (false, false));
        assert_eq!(encoding(&HeaderMap::new()), (false, false));
    }

    #[test]
    fn the_api_keeps_its_paths() {
        assert!(is_console(&Method::GET, "/"));
        assert!(is_console(&Method::GET, "/capsules/cl-1"));
        assert!(is_console(&Method::HEAD, "/assets/index-1.js"));
        assert!(!is_console(&Method::GET, "/v1/nope"));
        assert!(!is_console(&Method::GET, "/v1"));
        assert!(!is_console(&Method::POST, "/"));
    }

    #[test]
    fn the_policy_allows_no_other_origin() {
        for directive in CSP.split(';') {
            assert!(!directive.contains("http"), "{directive}");
            assert!(!directive.contains('*'), "{directive}");
        }
        assert!(CSP.contains("script-src 'self';"));
    }
}
