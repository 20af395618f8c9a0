//! Property-based fuzzing of the port proxy's routing: which requests go to a capsule's port
//! (the Host `{port}-{capsule id}.{domain}[:port]`, or `X-Wrenn-Capsule` + `X-Wrenn-Port`) and
//! which to the API. `PROPTEST_CASES` cases each (proptest's default 256).

use axum::http::{header, HeaderMap, HeaderValue};
use proptest::prelude::*;
use wrenn_server::proxy::{target, Target};

/// Where the proxy sends a request: `Some` a capsule's port, `None` the API or a refusal
/// (whether `target` answers an `Option` or a `Result` of one).
fn routed(headers: &HeaderMap, domain: &str) -> Option<Target> {
    target(headers, domain).routed()
}

trait Routed {
    fn routed(self) -> Option<Target>;
}

impl Routed for Option<Target> {
    fn routed(self) -> Option<Target> {
        self
    }
}

impl<E> Routed for Result<Option<Target>, E> {
    fn routed(self) -> Option<Target> {
        self.ok().flatten()
    }
}

fn host(h: &str) -> HeaderMap {
    let mut m = HeaderMap::new();
    m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
    m
}

/// A capsule id as the server makes them.
fn capsule_id() -> impl Strategy<Value = String> {
    "[0-9a-z]{25}".prop_map(|s| format!("cl-{s}"))
}

/// A domain of one to three lower-case labels.
fn domain() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z][a-z0-9]{0,6}", 1..4).prop_map(|l| l.join("."))
}

proptest! {
    /// Any Host header, and any pair of routing headers, is routed or not: never a panic.
    #[test]
    fn any_headers_route_without_panicking(
        h in proptest::collection::vec(any::<u8>(), 0..80),
        c in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        p in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
        d in prop_oneof![domain(), ".{0,12}"],
    ) {
        let mut m = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&h) {
            m.insert(header::HOST, v);
        }
        for (name, value) in [("x-wrenn-capsule", c), ("x-wrenn-port", p)] {
            if let Some(Ok(v)) = value.map(|v| HeaderValue::from_bytes(&v)) {
                m.insert(name, v);
            }
        }
        if let Some(t) = routed(&m, &d) {
            // A capsule named by the Host is one label: no dots.
            prop_assert!(!t.capsule.contains('.') || m.contains_key("x-wrenn-capsule"));
        }
    }

    /// Host names that look like a capsule's are, with or without the server's port.
    #[test]
    fn capsule_hosts_round_trip(
        id in capsule_id(),
        port in 1u16..,
        d in domain(),
        server_port in proptest::option::of(any::<u16>()),
    ) {
        let mut h = format!("{port}-{id}.{d}");
        if let Some(sp) = server_port {
            h.push_str(&format!(":{sp}"));
        }
        prop_assert_eq!(routed(&host(&h), &d), Some(Target { capsule: id, port, e2b: port == 49983 }), "{}", h);
    }

    /// The two headers name a capsule's port whatever the Host.
    #[test]
    fn routing_headers_round_trip(id in capsule_id(), port in 1u16.., h in "[a-z0-9.:-]{1,30}", d in domain()) {
        let mut m = host(&h);
        m.insert("x-wrenn-capsule", HeaderValue::from_str(&id).unwrap());
        m.insert("x-wrenn-port", HeaderValue::from_str(&port.to_string()).unwrap());
        prop_assert_eq!(routed(&m, &d), Some(Target { capsule: id, port, e2b: false }));
    }

    /// Names outside the proxy's domain go to the API, however capsule-like.
    #[test]
    fn other_domains_go_to_the_api(id in capsule_id(), port in 1u16.., d in domain(), other in domain()) {
        prop_assume!(other != d && !other.ends_with(&format!(".{d}")));
        prop_assert_eq!(routed(&host(&format!("{port}-{id}.{other}")), &d), None);
        // The domain itself (the API may be served there), and a suffix that is not a label.
        prop_assert_eq!(routed(&host(&d), &d), None);
        prop_assert_eq!(routed(&host(&format!("{port}-{id}x{d}")), &d), None);
    }

    /// A capsule's name never spans labels: `{port}-{a}.{b}.{domain}` is no capsule's.
    #[test]
    fn extra_labels_are_no_capsule(id in capsule_id(), port in 1u16.., extra in "[a-z0-9]{1,8}", d in domain()) {
        prop_assert_eq!(routed(&host(&format!("{port}-{id}.{extra}.{d}")), &d), None);
    }
}
