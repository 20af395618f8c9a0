//! The control plane's relay between two hosts (two fake agents, named as such: the real
//! streams, hashes and VMs are `wrenn-agent`'s `tests/transfer.rs`): a paused capsule and a
//! snapshot template go from one host to the other through the server's client calls; the
//! refusals of either side reach the caller as API errors.

#[allow(dead_code)]
mod fake_agent;

use fake_agent::FakeAgent;
use tonic::Status;
use wrenn_proto::agent::v1::{Capsule, CapsuleState};
use wrenn_server::{transfer, ApiError};

fn capsule(id: &str, state: CapsuleState) -> Capsule {
    Capsule {
        id: id.into(),
        template: "minimal".into(),
        state: state as i32,
        vcpus: 1,
        memory_mib: 256,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_paused_capsule_is_relayed_and_lands_paused() {
    let (a, ca) = FakeAgent::start().await;
    let (b, cb) = FakeAgent::start().await;
    let id = "cl-0123456789abcdefghijklmno";
    a.put(capsule(id, CapsuleState::Paused));
    let landed = transfer::relay_capsule(ca.clone(), cb.clone(), id)
        .await
        .unwrap();
    assert_eq!(
        (landed.id.as_str(), landed.state),
        (id, CapsuleState::Paused as i32)
    );
    assert_eq!(b.capsules()[id].memory_mib, 256);
    // The source keeps it until the caller destroys it there.
    assert!(a.capsules().contains_key(id));
    // Again: the target already has it.
    let again = transfer::relay_capsule(ca.clone(), cb.clone(), id).await;
    assert!(matches!(again, Err(ApiError::Conflict(_))), "{again:?}");
}

#[tokio::test]
async fn refusals_of_either_host_reach_the_caller() {
    let (a, ca) = FakeAgent::start().await;
    let (b, cb) = FakeAgent::start().await;
    let id = "cl-0123456789abcdefghijklmnp";
    a.put(capsule(id, CapsuleState::Running));
    let running = transfer::relay_capsule(ca.clone(), cb.clone(), id).await;
    assert!(
        matches!(running, Err(ApiError::InvalidState(_))),
        "{running:?}"
    );
    let unknown =
        transfer::relay_capsule(ca.clone(), cb.clone(), "cl-0123456789abcdefghijklmnq").await;
    assert!(matches!(unknown, Err(ApiError::NotFound(_))), "{unknown:?}");
    a.set_state(id, CapsuleState::Paused, "");
    b.fail_next(
        "import_capsule",
        Status::resource_exhausted("the host is out of disk space"),
    );
    let full = transfer::relay_capsule(ca.clone(), cb.clone(), id).await;
    assert!(
        matches!(full, Err(ApiError::HostUnavailable(_))),
        "{full:?}"
    );
    assert!(b.capsules().is_empty());
}

#[tokio::test]
async fn a_template_is_copied_once_from_a_host_that_has_it() {
    let (a, ca) = FakeAgent::start().await;
    let (b, cb) = FakeAgent::start().await;
    let (_c, cc) = FakeAgent::start().await;
    a.add_template("tpl-abc");
    // No source holds it: a clear answer, nothing copied.
    let none =
        transfer::ensure_template(cb.clone(), vec![("host-c".into(), cc.clone())], "tpl-abc").await;
    assert!(matches!(none, Err(ApiError::NotFound(_))), "{none:?}");
    let none = transfer::ensure_template(cb.clone(), Vec::new(), "tpl-abc").await;
    assert!(
        matches!(none, Err(ApiError::HostUnavailable(_))),
        "{none:?}"
    );
    // The first source that fails is skipped.
    let copied = transfer::ensure_template(
        cb.clone(),
        vec![("host-c".into(), cc.clone()), ("host-a".into(), ca.clone())],
        "tpl-abc",
    )
    .await
    .unwrap();
    assert!(copied);
    assert_eq!(b.templates(), vec!["tpl-abc".to_string()]);
    // Present now: nothing to do, no export.
    let exports = a.calls("export_template").len();
    let again =
        transfer::ensure_template(cb.clone(), vec![("host-a".into(), ca.clone())], "tpl-abc")
            .await
            .unwrap();
    assert!(!again);
    assert_eq!(a.calls("export_template").len(), exports);
}

#[tokio::test]
async fn a_template_is_deleted_on_every_host_that_holds_it() {
    let (a, ca) = FakeAgent::start().await;
    let (b, cb) = FakeAgent::start().await;
    let (c, cc) = FakeAgent::start().await;
    a.add_template("tpl-x");
    b.add_template("tpl-x");
    b.add_template("tpl-y");
    let hosts = || {
        vec![
            ("host-a".to_string(), ca.clone()),
            ("host-b".to_string(), cb.clone()),
            ("host-c".to_string(), cc.clone()),
        ]
    };
    let failed = transfer::delete_everywhere(hosts(), "tpl-x").await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(a.templates().is_empty());
    assert_eq!(b.templates(), vec!["tpl-y".to_string()]);
    assert_eq!(c.calls("delete_template"), vec!["tpl-x".to_string()]);
    // A host that fails is named; the others still delete.
    a.add_template("tpl-y");
    b.fail_next("delete_template", Status::internal("disk on fire"));
    let failed = transfer::delete_everywhere(hosts(), "tpl-y").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "host-b");
    assert!(a.templates().is_empty());
    assert_eq!(b.templates(), vec!["tpl-y".to_string()]);
}
