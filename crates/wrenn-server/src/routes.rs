//! The route table: every route of the API ([`routes`]) and the router that serves them
//! ([`router`]), behind the port proxy and measured by [`crate::metrics`].

use axum::{
    extract::DefaultBodyLimit,
    handler::Handler,
    http::Method,
    routing::{MethodFilter, MethodRouter},
    Router,
};

use crate::{
    accounts, api_docs, audit, builds, capsules,
    error::{self, ApiError},
    events, files, hosts, metrics, network, proxy, quotas, service, snapshots,
    state::AppState,
    usage, ws,
};

/// Largest JSON body (file contents go through the streamed multipart routes).
const MAX_JSON_BODY: usize = 1 << 20;
/// Largest build request: a 100 MiB archive in base64 and the recipe.
const MAX_BUILD_BODY: usize = (100 << 20) / 3 * 4 + (1 << 20);

/// One route: a method, a path template and its handler. [`router`] serves exactly the routes
/// of [`routes`], and a test checks that `/openapi.json` documents exactly these too.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub(crate) handler: MethodRouter<AppState>,
}

/// `handler` for `method` on `path`.
pub fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("the route table's methods");
    Route {
        method,
        path,
        handler: axum::routing::on(filter, handler),
    }
}

impl Route {
    /// With a JSON body limit of its own.
    fn limit(mut self, bytes: usize) -> Route {
        self.handler = self.handler.layer(DefaultBodyLimit::max(bytes));
        self
    }

    /// Without the JSON body limit (streamed uploads).
    fn unlimited(mut self) -> Route {
        self.handler = self.handler.layer(DefaultBodyLimit::disable());
        self
    }
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    use Method as M;
    let mut all = vec![
        route(M::GET, "/health", service::health),
        route(M::GET, "/openapi.json", api_docs::openapi_json),
        route(M::GET, "/docs", api_docs::docs),
        route(M::GET, "/metrics", service::scrape),
        route(M::POST, "/v1/capsules", capsules::create::create),
        route(M::GET, "/v1/capsules", capsules::lifecycle::list),
        route(M::GET, "/v1/capsules/stats", usage::stats),
        route(M::GET, "/v1/capsules/usage", usage::usage),
        route(M::GET, "/v1/capsules/{id}", capsules::lifecycle::get),
        route(M::DELETE, "/v1/capsules/{id}", capsules::lifecycle::destroy),
        route(
            M::POST,
            "/v1/capsules/{id}/pause",
            capsules::lifecycle::pause,
        ),
        route(
            M::POST,
            "/v1/capsules/{id}/resume",
            capsules::lifecycle::resume,
        ),
        route(M::POST, "/v1/capsules/{id}/fork", capsules::fork::fork),
        route(
            M::POST,
            "/v1/capsules/{id}/move",
            crate::transfer::move_capsule,
        ),
        route(M::POST, "/v1/capsules/{id}/ping", capsules::lifecycle::ping),
        route(M::GET, "/v1/capsules/{id}/network", network::get),
        route(M::PATCH, "/v1/capsules/{id}/network", network::set),
        route(
            M::GET,
            "/v1/capsules/{id}/metrics",
            capsules::metrics::metrics,
        ),
        route(M::POST, "/v1/capsules/{id}/exec", capsules::exec::exec),
        route(
            M::GET,
            "/v1/capsules/{id}/exec/stream",
            ws::exec::exec_stream,
        ),
        route(
            M::GET,
            "/v1/capsules/{id}/processes",
            capsules::exec::processes,
        ),
        route(
            M::DELETE,
            "/v1/capsules/{id}/processes/{pid}",
            capsules::exec::kill_process,
        ),
        route(
            M::GET,
            "/v1/capsules/{id}/processes/{pid}/stream",
            ws::exec::connect_process,
        ),
        route(M::GET, "/v1/capsules/{id}/pty", ws::terminal::pty),
        route(M::POST, "/v1/capsules/{id}/files/read", files::read),
        route(
            M::POST,
            "/v1/capsules/{id}/files/stream/read",
            files::stream_read,
        ),
        route(M::POST, "/v1/capsules/{id}/files/write", files::write).unlimited(),
        route(
            M::POST,
            "/v1/capsules/{id}/files/stream/write",
            files::stream_write,
        )
        .unlimited(),
        route(M::POST, "/v1/capsules/{id}/files/list", files::list),
        route(M::POST, "/v1/capsules/{id}/files/mkdir", files::mkdir),
        route(M::POST, "/v1/capsules/{id}/files/remove", files::remove),
        route(M::POST, "/v1/snapshots", snapshots::create),
        route(M::GET, "/v1/snapshots", snapshots::list),
        route(M::DELETE, "/v1/snapshots/{name}", snapshots::delete),
        route(M::POST, "/v1/builds", builds::handlers::create).limit(MAX_BUILD_BODY),
        route(M::GET, "/v1/builds", builds::handlers::list),
        route(M::GET, "/v1/builds/{id}", builds::handlers::get),
        route(M::POST, "/v1/builds/{id}/cancel", builds::handlers::cancel),
        route(M::GET, "/v1/builds/{id}/logs", builds::handlers::logs),
        route(M::POST, "/v1/admin/builds", builds::admin::create).limit(MAX_BUILD_BODY),
        route(M::GET, "/v1/admin/builds", builds::admin::list),
        route(M::GET, "/v1/admin/builds/{id}", builds::admin::get),
        route(M::GET, "/v1/events/stream", events::stream),
        route(M::GET, "/v1/audit", audit::audit),
        route(M::GET, "/v1/teams/{id}/quotas", quotas::handlers::get),
        route(M::PUT, "/v1/teams/{id}/quotas", quotas::handlers::set),
    ];
    all.extend(account_routes());
    all.extend(host_routes());
    all
}

/// The API: every route of [`routes`], behind the port proxy, measured by [`metrics`].
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        // Two methods on one path merge into one method router.
        router = router.route(r.path, r.handler);
    }
    router
        // E2B's sandbox API (its own error shape; not in the OpenAPI document).
        .merge(crate::e2b::router())
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        // Every error answer in the documented shape, axum's own rejections included.
        .layer(axum::middleware::from_fn(error::json_errors))
        // Inside the proxy: proxied requests are the capsules' traffic, not the API's.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::route,
        ))
        // Outermost: the proxy, E2B's routes and the API all read the host from one place.
        .layer(axum::middleware::map_request(host_from_authority))
        .with_state(state)
}

/// An HTTP/2 request names its host in the URI (`:authority`), not in a `Host` header: it
/// gets one, so that host routing (`PORT-ID.DOMAIN` for the port proxy and E2B's envd) and
/// every handler read one place. A `Host` a request carries is kept.
async fn host_from_authority(mut req: axum::extract::Request) -> axum::extract::Request {
    use axum::http::{header::HOST, HeaderValue};
    if !req.headers().contains_key(HOST) {
        let host = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        if let Some(h) = host {
            req.headers_mut().insert(HOST, h);
        }
    }
    req
}

/// What no route takes: the web console's pages and files (reads outside `/v1/`), else the
/// API's `not_found`.
async fn fallback(
    axum::extract::State(state): axum::extract::State<AppState>,
    method: Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crate::console::is_console(&method, uri.path()) {
        if uri.path() == crate::console::SETTINGS_PATH {
            return crate::console::settings(&state.domain, state.accounts.signup.as_str());
        }
        return crate::console::serve(method, uri, headers).await;
    }
    ApiError::NotFound("no such route".into()).into_response()
}

/// The hosts' routes (part of [`routes`]).
fn host_routes() -> Vec<Route> {
    use hosts::{heartbeat, identity, maintain, manage};
    use Method as M;
    vec![
        route(M::POST, "/v1/hosts", manage::create),
        route(M::GET, "/v1/hosts", manage::list),
        route(M::POST, "/v1/hosts/register", identity::register),
        route(M::POST, "/v1/hosts/auth/refresh", identity::refresh),
        route(M::GET, "/v1/hosts/{id}", manage::get),
        route(M::DELETE, "/v1/hosts/{id}", manage::delete),
        route(
            M::GET,
            "/v1/hosts/{id}/delete-preview",
            manage::delete_preview,
        ),
        route(M::POST, "/v1/hosts/{id}/token", manage::new_token),
        route(M::POST, "/v1/hosts/{id}/heartbeat", heartbeat::heartbeat),
        route(M::GET, "/v1/hosts/{id}/tags", maintain::tags),
        route(M::POST, "/v1/hosts/{id}/tags", maintain::add_tag),
        route(M::DELETE, "/v1/hosts/{id}/tags/{tag}", maintain::remove_tag),
        route(M::POST, "/v1/hosts/{id}/drain", maintain::drain),
        route(M::POST, "/v1/hosts/{id}/undrain", maintain::undrain),
        route(M::PUT, "/v1/admin/teams/{id}/byoc", manage::set_byoc),
        route(M::GET, "/v1/admin/users", crate::admin::users),
        route(M::GET, "/v1/admin/teams", crate::admin::teams),
        route(M::GET, "/v1/admin/templates", crate::admin::templates),
    ]
}

/// The account routes (part of [`routes`]).
fn account_routes() -> Vec<Route> {
    vec![
        route(Method::POST, "/v1/auth/signup", accounts::sessions::signup),
        route(Method::POST, "/v1/auth/login", accounts::sessions::login),
        route(Method::POST, "/v1/auth/logout", accounts::sessions::logout),
        route(
            Method::POST,
            "/v1/auth/logout-all",
            accounts::sessions::logout_all,
        ),
        route(
            Method::POST,
            "/v1/auth/session",
            accounts::console_session::create,
        ),
        route(
            Method::GET,
            "/v1/auth/session",
            accounts::console_session::get,
        ),
        route(
            Method::DELETE,
            "/v1/auth/session",
            accounts::console_session::delete,
        ),
        route(Method::GET, "/v1/teams", accounts::teams::list_teams),
        route(Method::POST, "/v1/teams", accounts::teams::create_team),
        route(
            Method::GET,
            "/v1/teams/{id}/members",
            accounts::teams::list_members,
        ),
        route(
            Method::POST,
            "/v1/teams/{id}/members",
            accounts::teams::add_member,
        ),
        route(
            Method::PATCH,
            "/v1/teams/{id}/members/{user_id}",
            accounts::teams::set_member_role,
        ),
        route(
            Method::DELETE,
            "/v1/teams/{id}/members/{user_id}",
            accounts::teams::remove_member,
        ),
        route(
            Method::POST,
            "/v1/teams/{id}/invitations",
            accounts::invitations::create_invitation,
        ),
        route(
            Method::GET,
            "/v1/teams/{id}/invitations",
            accounts::invitations::list_invitations,
        ),
        route(
            Method::DELETE,
            "/v1/teams/{id}/invitations/{invitation_id}",
            accounts::invitations::delete_invitation,
        ),
        route(Method::GET, "/v1/api-keys", accounts::keys::list_api_keys),
        route(Method::POST, "/v1/api-keys", accounts::keys::create_api_key),
        route(
            Method::DELETE,
            "/v1/api-keys/{id}",
            accounts::keys::delete_api_key,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use axum::{extract::Request, http::header::HOST};

    #[tokio::test]
    async fn an_http2_authority_becomes_the_host_and_a_host_is_kept() {
        let h2 = Request::builder()
            .uri("https://8080-cl-abc.wrenn.example/x?y=1")
            .body(axum::body::Body::empty())
            .unwrap();
        let req = super::host_from_authority(h2).await;
        assert_eq!(req.headers()[HOST], "8080-cl-abc.wrenn.example");
        let h1 = Request::builder()
            .uri("https://api.wrenn.example/v1/capsules")
            .header(HOST, "49983-cl-abc.wrenn.example")
            .body(axum::body::Body::empty())
            .unwrap();
        let req = super::host_from_authority(h1).await;
        assert_eq!(req.headers()[HOST], "49983-cl-abc.wrenn.example");
        let bare = Request::builder()
            .uri("/v1/capsules")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(!super::host_from_authority(bare)
            .await
            .headers()
            .contains_key(HOST));
    }
}
