//! Templates and placement: where base templates may go, and the preference for hosts that
//! already hold a template and its shape.

use std::collections::BTreeSet;

use wrenn_types::api::hosts::TemplatePresence;

use super::tests::{host, python, req, rng};
use super::*;

/// A base template goes only where it is or can be built; a snapshot template anywhere (it
/// travels); a host that reported nothing yet is taken at its word.
#[test]
fn base_templates_go_where_they_are_or_can_be_built() {
    let minimal_only = |id: &str| HostView {
        templates: HostView::templates_from(&[TemplatePresence {
            name: "minimal".to_owned(),
            shapes: vec!["1x256".to_owned()],
        }]),
        ..host(id)
    };
    let q = Request {
        template: Some(python(Some("1x512"))),
        ..req(1, 512)
    };
    let mut rng = rng();
    // Neither host has python nor builds it.
    let hosts = vec![minimal_only("a"), minimal_only("b")];
    assert_eq!(
        place(&hosts, &q, &mut rng).unwrap_err().reason,
        "no online host holds template python or can build it (agents need --envd to build \
         base templates)"
    );
    let forced = Request {
        force_host: Some("a".to_owned()),
        ..q.clone()
    };
    assert_eq!(
        place(&hosts, &forced, &mut rng).unwrap_err().reason,
        "host a neither holds template python nor can build it (its agent needs --envd)"
    );
    // One builds it: every create goes there.
    let mut builder = minimal_only("builder");
    builder.buildable = vec!["minimal".to_owned(), "python".to_owned()];
    let hosts = vec![minimal_only("a"), builder, minimal_only("b")];
    for _ in 0..20 {
        assert_eq!(place(&hosts, &q, &mut rng).unwrap().host_id, "builder");
    }
    // A snapshot template (no shape) is copied to whichever host is chosen.
    let snap = Request {
        template: Some(TemplateWant {
            name: "tpl-x".to_owned(),
            shape: None,
        }),
        ..req(1, 512)
    };
    let chosen: BTreeSet<String> = (0..60)
        .map(|_| place(&hosts, &snap, &mut rng).unwrap().host_id)
        .collect();
    assert_eq!(chosen.len(), 3, "{chosen:?}");
    // Nothing reported yet: eligible.
    assert!(host("new").can_start(q.template.as_ref()));
    assert!(!minimal_only("a").can_start(q.template.as_ref()));
}

#[test]
fn prefers_the_host_holding_template_and_shape() {
    let mut hosts: Vec<HostView> = (0..10).map(|i| host(&format!("h{i}"))).collect();
    hosts[7].templates = HostView::templates_from(&[TemplatePresence {
        name: "python".to_owned(),
        shapes: vec!["1x512".to_owned()],
    }]);
    let q = Request {
        template: Some(python(Some("1x512"))),
        ..req(1, 512)
    };
    let mut rng = rng();
    for _ in 0..50 {
        assert_eq!(place(&hosts, &q, &mut rng).unwrap().host_id, "h7");
    }
    // The template without the shape still beats nothing (all equally empty).
    hosts[7]
        .templates
        .insert("python".to_owned(), vec!["2x1024".to_owned()]);
    assert_eq!(hosts[7].locality(q.template.as_ref()), 1);
    // A snapshot template (no shapes) held is a full hit.
    hosts[7].templates.insert("python".to_owned(), Vec::new());
    assert_eq!(hosts[7].locality(q.template.as_ref()), 2);
    // Once the holder is much fuller than the others, creates spread instead.
    hosts[7].usage.active = Claims::new(0, 5000, 0);
    let elsewhere = (0..50)
        .filter(|_| place(&hosts, &q, &mut rng).unwrap().host_id != "h7")
        .count();
    assert_eq!(elsewhere, 50);
}
