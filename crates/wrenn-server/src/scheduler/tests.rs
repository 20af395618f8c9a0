use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use wrenn_types::api::hosts::HostKind;
use wrenn_types::CapsuleStatus;

use super::*;

/// A regular online host: 4 cores, 8192 MB (6860 usable), 102400 MB disk (90112 usable).
pub(super) fn host(id: &str) -> HostView {
    HostView {
        id: id.to_owned(),
        kind: HostKind::Regular,
        team: None,
        tags: Vec::new(),
        online: true,
        draining: false,
        capacity: Claims::new(4, 8192, 102_400),
        usage: HostUsage::default(),
        templates: BTreeMap::new(),
        buildable: Vec::new(),
        slots: None,
    }
}

fn byoc(id: &str, team: &str) -> HostView {
    HostView {
        kind: HostKind::Byoc,
        team: Some(team.to_owned()),
        ..host(id)
    }
}

pub(super) fn req(vcpus: u32, memory_mb: u64) -> Request {
    Request {
        team: "team-a".to_owned(),
        team_is_byoc: false,
        vcpus,
        memory_mb,
        disk_mb: 1024,
        template: None,
        tags: Vec::new(),
        force_host: None,
    }
}

pub(super) fn rng() -> StdRng {
    StdRng::seed_from_u64(11)
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn python(shape: Option<&str>) -> TemplateWant {
    TemplateWant {
        name: "python".to_owned(),
        shape: shape.map(str::to_owned),
    }
}

#[test]
fn reserves_keep_back_memory_disk_and_overcommit_cpu() {
    let r = Reserves::default();
    // 512 + ceil(819.2) = 1332 kept; 2048 + 10240 kept; 4 cores x 4.
    assert_eq!(
        r.usable(Claims::new(4, 8192, 102_400)),
        Claims::new(16, 6860, 90_112)
    );
    // A machine smaller than its reserve has nothing usable (no underflow).
    assert_eq!(r.usable(Claims::new(1, 400, 1000)), Claims::new(4, 0, 0));
}

#[test]
fn eligibility_table() {
    let r = Reserves::default();
    let plain = req(1, 512);
    let byoc_req = Request {
        team_is_byoc: true,
        ..req(1, 512)
    };
    let tagged = Request {
        tags: tags(&["gpu"]),
        ..req(1, 512)
    };
    let offline = HostView {
        online: false,
        ..host("h")
    };
    let draining = HostView {
        draining: true,
        ..host("h")
    };
    let gpu = HostView {
        tags: tags(&["gpu", "ssd"]),
        ..host("h")
    };
    let full = HostView {
        usage: HostUsage {
            active: Claims::new(1, 6500, 0),
            ..HostUsage::default()
        },
        ..host("h")
    };
    let cases: Vec<(&str, HostView, &Request, Result<(), Reject>)> = vec![
        ("regular host, regular team", host("h"), &plain, Ok(())),
        (
            "byoc host of the team, regular team",
            byoc("h", "team-a"),
            &plain,
            Err(Reject::Scope),
        ),
        (
            "own byoc host, byoc team",
            byoc("h", "team-a"),
            &byoc_req,
            Ok(()),
        ),
        (
            "other team's byoc host",
            byoc("h", "team-b"),
            &byoc_req,
            Err(Reject::Scope),
        ),
        (
            "regular host, byoc team",
            host("h"),
            &byoc_req,
            Err(Reject::Scope),
        ),
        ("offline", offline.clone(), &plain, Err(Reject::Offline)),
        ("draining", draining.clone(), &plain, Err(Reject::Draining)),
        (
            "untagged host, tagged request",
            host("h"),
            &tagged,
            Err(Reject::Tags),
        ),
        ("host with more tags", gpu.clone(), &tagged, Ok(())),
        (
            "host with tags, untagged request",
            gpu.clone(),
            &plain,
            Ok(()),
        ),
        ("no room", full.clone(), &plain, Err(Reject::Room)),
    ];
    for (name, h, q, want) in cases {
        assert_eq!(check(&h, q, &r), want, "{name}");
    }
}

#[test]
fn admission_edges_memory_disk_cpu() {
    let r = Reserves::default();
    let mut h = host("h");
    // 6860 usable: 6860 - 1024 = 5836 taken leaves exactly 1024.
    h.usage.active = Claims::new(0, 5836, 0);
    assert_eq!(check(&h, &req(1, 1024), &r), Ok(()));
    assert_eq!(check(&h, &req(1, 1025), &r), Err(Reject::Room));
    // Disk: 90112 usable.
    h.usage.active = Claims::new(0, 0, 90_112 - 1024);
    assert_eq!(check(&h, &req(1, 512), &r), Ok(()));
    h.usage.active = Claims::new(0, 0, 90_112 - 1023);
    assert_eq!(check(&h, &req(1, 512), &r), Err(Reject::Room));
    // CPU: 16 vCPUs on 4 cores.
    h.usage.active = Claims::new(14, 0, 0);
    assert_eq!(check(&h, &req(2, 512), &r), Ok(()));
    assert_eq!(check(&h, &req(3, 512), &r), Err(Reject::Room));
}

#[test]
fn paused_capsules_count_partially() {
    let r = Reserves::default();
    let mut h = host("h");
    h.usage
        .count(CapsuleStatus::Paused, Claims::new(4, 4096, 2000));
    h.usage
        .count(CapsuleStatus::Stopped, Claims::new(8, 8000, 8000));
    h.usage
        .count(CapsuleStatus::Error, Claims::new(8, 8000, 8000));
    // 0 % CPU, 25 % memory, 100 % disk; stopped and failed hold nothing.
    assert_eq!(r.used(&h), Claims::new(0, 1024, 2000));
    h.usage
        .count(CapsuleStatus::Missing, Claims::new(1, 100, 10));
    h.usage
        .count(CapsuleStatus::Running, Claims::new(1, 100, 10));
    h.usage
        .count(CapsuleStatus::Pending, Claims::new(1, 100, 10));
    h.usage
        .count(CapsuleStatus::Starting, Claims::new(1, 100, 10));
    assert_eq!(r.used(&h), Claims::new(4, 1424, 2040));
    // A running capsule of the same shape would not leave room for 6000 MB; a paused one does.
    assert_eq!(check(&h, &req(1, 5000), &r), Ok(()));
}

#[test]
fn reservations_and_heartbeat_count() {
    let r = Reserves::default();
    let mut h = host("h");
    h.usage.reserved = Claims::new(2, 6000, 0);
    assert_eq!(check(&h, &req(1, 1024), &r), Err(Reject::Room));
    // The heartbeat's figure counts when it is larger than the database's.
    let mut h = host("h");
    h.usage.active = Claims::new(1, 1000, 1000);
    h.usage.reported = Claims::new(0, 6000, 500);
    assert_eq!(r.used(&h), Claims::new(1, 6000, 1000));
    assert_eq!(check(&h, &req(1, 1024), &r), Err(Reject::Room));
}

/// A burst of creates, each recorded as a reservation before the next: spread over the
/// hosts, and never more than fits.
#[test]
fn a_burst_spreads_and_never_overfills() {
    let mut hosts = vec![host("h1"), host("h2"), host("h3")];
    let mut rng = rng();
    let mut placed = [0usize; 3];
    for _ in 0..30 {
        let q = req(1, 512);
        let c = place(&hosts, &q, &mut rng).expect("room for 30 x 512 MB");
        let i = hosts.iter().position(|h| h.id == c.host_id).unwrap();
        hosts[i].usage.reserved = hosts[i].usage.reserved.plus(q.claims());
        placed[i] += 1;
    }
    assert!(placed.iter().all(|&n| (7..=13).contains(&n)), "{placed:?}");
    // 13 x 512 MB fit in 6860 MB per host: 39 in all; the 40th has no room.
    for _ in 30..39 {
        let c = place(&hosts, &req(1, 512), &mut rng).expect("still room");
        let i = hosts.iter().position(|h| h.id == c.host_id).unwrap();
        hosts[i].usage.reserved = hosts[i].usage.reserved.plus(req(1, 512).claims());
    }
    let err = place(&hosts, &req(1, 512), &mut rng).unwrap_err();
    assert_eq!(
        err.reason,
        "no online host has 512 MB of memory free (largest free: 204 MB of memory)"
    );
}

#[test]
fn byoc_teams_land_only_on_their_own_hosts() {
    let hosts = vec![host("r1"), byoc("b1", "team-a"), byoc("b2", "team-b")];
    let mut rng = rng();
    let mine = Request {
        team_is_byoc: true,
        ..req(1, 512)
    };
    let theirs = Request {
        team: "team-c".to_owned(),
        ..req(1, 512)
    };
    for _ in 0..20 {
        assert_eq!(place(&hosts, &mine, &mut rng).unwrap().host_id, "b1");
        assert_eq!(place(&hosts, &theirs, &mut rng).unwrap().host_id, "r1");
    }
    let lonely = Request {
        team: "team-z".to_owned(),
        team_is_byoc: true,
        ..req(1, 512)
    };
    assert_eq!(
        place(&hosts, &lonely, &mut rng).unwrap_err().reason,
        "team team-z has no BYOC host"
    );
}

#[test]
fn reason_texts_name_what_is_missing() {
    let rng = rng();
    let why =
        |hosts: &[HostView], q: &Request| place(hosts, q, &mut rng.clone()).unwrap_err().reason;
    assert_eq!(why(&[], &req(1, 512)), "no host is registered");
    let down = HostView {
        online: false,
        ..host("h1")
    };
    assert_eq!(
        why(std::slice::from_ref(&down), &req(1, 512)),
        "no host is online"
    );
    let byoc_down = HostView {
        online: false,
        ..byoc("b", "team-a")
    };
    let byoc_req = Request {
        team_is_byoc: true,
        ..req(1, 512)
    };
    assert_eq!(
        why(&[byoc_down, host("h")], &byoc_req),
        "team team-a has no online BYOC host"
    );
    let gpu = Request {
        tags: tags(&["gpu", "eu"]),
        ..req(1, 2048)
    };
    assert_eq!(
        why(&[host("h1"), down], &gpu),
        "no online host with tags [gpu, eu]"
    );
    let mut tagged = host("h2");
    tagged.tags = tags(&["eu", "gpu"]);
    tagged.draining = true;
    assert_eq!(
        why(&[tagged.clone()], &gpu),
        "every online host with tags [gpu, eu] is draining"
    );
    tagged.draining = false;
    tagged.usage.active = Claims::new(0, 5960, 0);
    assert_eq!(
        why(&[tagged.clone()], &gpu),
        "no online host with tags [gpu, eu] has 2048 MB of memory free (largest free: 900 MB of memory)"
    );
    tagged.usage.active = Claims::new(15, 5960, 0);
    let big = Request {
        vcpus: 2,
        disk_mb: 200_000,
        ..gpu.clone()
    };
    assert_eq!(
        why(&[tagged.clone()], &big),
        "no online host with tags [gpu, eu] has 2048 MB of memory and 200000 MB of disk and 2 vCPUs free \
         (largest free: 900 MB of memory, 90112 MB of disk, 1 vCPU)"
    );
    // Each resource fits somewhere, but on no one host.
    let mut a = host("a");
    a.usage.active = Claims::new(0, 6000, 0);
    let mut b = host("b");
    b.usage.active = Claims::new(16, 0, 0);
    assert_eq!(
        why(&[a, b], &req(1, 1024)),
        "no online host has 1024 MB of memory and 1024 MB of disk and 1 vCPU free at once"
    );
}

#[test]
fn a_forced_host_is_still_checked() {
    let mut rng = rng();
    let mut busy = host("busy");
    busy.usage.active = Claims::new(0, 4000, 0);
    let hosts = vec![host("empty"), busy.clone()];
    let forced = |id: &str, q: Request| Request {
        force_host: Some(id.to_owned()),
        ..q
    };
    // Goes where it is told even though another host is emptier.
    let c = place(&hosts, &forced("busy", req(1, 512)), &mut rng).unwrap();
    assert_eq!((c.host_id.as_str(), c.why.as_str()), ("busy", "forced"));
    let reason =
        |hosts: &[HostView], q: Request| place(hosts, &q, &mut rng.clone()).unwrap_err().reason;
    assert_eq!(
        reason(&hosts, forced("busy", req(1, 4000))),
        "host busy has 2860 MB of memory free, the capsule needs 4000 MB of memory"
    );
    assert_eq!(
        reason(&hosts, forced("nope", req(1, 512))),
        "host nope does not exist"
    );
    let down = vec![HostView {
        online: false,
        ..busy.clone()
    }];
    assert_eq!(
        reason(&down, forced("busy", req(1, 512))),
        "host busy is not online"
    );
    let drained = vec![HostView {
        draining: true,
        ..busy.clone()
    }];
    assert_eq!(
        reason(&drained, forced("busy", req(1, 512))),
        "host busy is draining"
    );
    let gpu = Request {
        tags: tags(&["gpu", "ssd"]),
        ..req(1, 512)
    };
    let mut ssd = busy.clone();
    ssd.tags = tags(&["ssd"]);
    assert_eq!(
        reason(&[ssd], forced("busy", gpu)),
        "host busy lacks tags [gpu]"
    );
    let b = vec![byoc("b", "team-b")];
    assert_eq!(
        reason(&b, forced("b", req(1, 512))),
        "host b is a BYOC host of another team"
    );
    let mine = Request {
        team_is_byoc: true,
        ..req(1, 512)
    };
    assert_eq!(
        reason(&b, forced("b", mine)),
        "host b is not a BYOC host of team team-a"
    );
}

#[test]
fn a_host_without_specs_is_taken_at_its_word_but_last() {
    let r = Reserves::default();
    let mut unknown = host("unknown");
    unknown.capacity = Claims::default();
    assert_eq!(check(&unknown, &req(64, 1 << 20), &r), Ok(()));
    assert_eq!(r.fill_after(&unknown, Claims::default()), 1.0);
    let mut rng = rng();
    let hosts = vec![unknown.clone(), host("known")];
    for _ in 0..20 {
        assert_eq!(
            place(&hosts, &req(1, 512), &mut rng).unwrap().host_id,
            "known"
        );
    }
    assert_eq!(
        place(&[unknown], &req(1, 512), &mut rng).unwrap().host_id,
        "unknown"
    );
}

#[test]
fn a_view_from_the_api_host() {
    // From JSON, as the API writes it (fields added later keep their defaults).
    let api: wrenn_types::api::hosts::Host = serde_json::from_value(serde_json::json!({
        "id": "host-1", "type": "byoc", "team_id": "team-a", "status": "online",
        "draining": true, "address": "127.0.0.2:7000",
        "specs": {"arch": "x86_64", "cpu_cores": 8, "memory_mb": 16384, "disk_mb": 100000,
                  "slots": "1-9", "vmm": "qemu", "accel": "kvm"},
        "load": {"vcpus_reserved": 3, "memory_mb_reserved": 3072, "memory_mb_used": 9000,
                 "disk_mb_reserved": 4000, "disk_mb_used": 20000,
                 "templates": [{"name": "python", "shapes": ["1x512"]}]},
        "tags": ["gpu"], "created_by": "u", "created_at": "", "updated_at": "",
    }))
    .unwrap();
    let mut usage = HostUsage::default();
    usage.count(CapsuleStatus::Running, Claims::new(1, 512, 1024));
    let v = HostView::from_host(&api, usage);
    assert_eq!(v.capacity, Claims::new(8, 16_384, 100_000));
    assert_eq!(v.usage.reported, Claims::new(3, 3072, 20_000));
    assert_eq!(v.usage.active, Claims::new(1, 512, 1024));
    assert_eq!((v.online, v.draining, v.kind), (true, true, HostKind::Byoc));
    assert_eq!(v.team.as_deref(), Some("team-a"));
    assert_eq!(v.locality(Some(&python(Some("1x512")))), 2);
    assert_eq!(v.tags, tags(&["gpu"]));
}

fn arb_host() -> impl Strategy<Value = HostView> {
    (
        (0u8..4, any::<bool>(), any::<bool>(), 0u8..4),
        (1u64..64, 256u64..65_536, 1024u64..200_000),
        (0u64..64, 0u64..65_536, 0u64..200_000),
        (0u64..32, 0u64..16_384, 0u64..50_000),
        (0u64..64, 0u64..65_536, 0u64..200_000),
    )
        .prop_map(
            |((kind, online, draining, tag_bits), cap, active, reserved, reported)| {
                let mut h = host("");
                h.kind = if kind == 0 {
                    HostKind::Byoc
                } else {
                    HostKind::Regular
                };
                h.team = (kind == 0).then(|| "team-a".to_owned());
                h.online = online || kind == 1;
                h.draining = draining && kind != 2;
                h.tags = ["gpu", "eu"]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| tag_bits & (1 << i) != 0)
                    .map(|(_, t)| (*t).to_owned())
                    .collect();
                h.capacity = Claims::new(cap.0, cap.1, cap.2);
                h.usage.active = Claims::new(active.0 / 4, active.1 / 4, active.2 / 4);
                h.usage.reserved = Claims::new(reserved.0, reserved.1, reserved.2);
                h.usage.reported = Claims::new(reported.0 / 2, reported.1 / 2, reported.2 / 2);
                h
            },
        )
}

proptest! {
    /// The chosen host always admits the request (independently recomputed), and "no host"
    /// comes only when no host would.
    #[test]
    fn the_chosen_host_admits(
        mut hosts in proptest::collection::vec(arb_host(), 0..12),
        vcpus in 1u32..16,
        memory_mb in 128u64..16_384,
        disk_mb in 0u64..50_000,
        byoc in any::<bool>(),
        tag_bits in 0u8..4,
        seed in any::<u64>(),
    ) {
        for (i, h) in hosts.iter_mut().enumerate() {
            h.id = format!("h{i}");
        }
        let q = Request {
            team_is_byoc: byoc,
            vcpus,
            memory_mb,
            disk_mb,
            tags: ["gpu", "eu"].iter().enumerate()
                .filter(|(i, _)| tag_bits & (1 << i) != 0)
                .map(|(_, t)| (*t).to_owned()).collect(),
            ..req(1, 1)
        };
        let r = Reserves::default();
        let admits = |h: &HostView| {
            let scope = if byoc {
                h.kind == HostKind::Byoc && h.team.as_deref() == Some("team-a")
            } else {
                h.kind == HostKind::Regular
            };
            let usable = r.usable(h.capacity);
            let used = Claims::new(
                h.usage.active.vcpus + h.usage.reserved.vcpus,
                h.usage.active.memory_mb + h.usage.reserved.memory_mb,
                h.usage.active.disk_mb + h.usage.reserved.disk_mb,
            ).max(h.usage.reported);
            scope && h.online && !h.draining && q.tags.iter().all(|t| h.tags.contains(t))
                && used.vcpus + u64::from(vcpus) <= usable.vcpus
                && used.memory_mb + memory_mb <= usable.memory_mb
                && used.disk_mb + disk_mb <= usable.disk_mb
        };
        match place(&hosts, &q, &mut StdRng::seed_from_u64(seed)) {
            Ok(c) => {
                let h = hosts.iter().find(|h| h.id == c.host_id).unwrap();
                prop_assert!(admits(h), "chose {h:?}");
            }
            Err(no) => {
                prop_assert!(!hosts.iter().any(admits), "refused ({}) though one admits", no.reason);
                prop_assert!(!no.reason.is_empty());
            }
        }
    }
}

/// A host whose network slots are all held (paused capsules and reservations included) takes
/// nothing more, however much CPU and memory it has left; a forced create says why.
#[test]
fn a_host_without_a_free_slot_has_no_room() {
    let r = Reserves::default();
    let mut h = host("h1");
    h.slots = Some(2);
    h.usage
        .count(CapsuleStatus::Running, Claims::new(1, 256, 10));
    assert_eq!(check(&h, &req(1, 256), &r), Ok(()));
    h.usage
        .count(CapsuleStatus::Paused, Claims::new(1, 256, 10));
    assert_eq!(check(&h, &req(1, 256), &r), Err(Reject::Room));
    h.usage
        .count(CapsuleStatus::Stopped, Claims::new(1, 256, 10));
    assert_eq!(h.usage.capsules, 2, "a stopped capsule holds no slot");
    let why = filter::refuse_forced(Some(&h), "h1", &req(1, 256), &r)
        .unwrap()
        .reason;
    assert!(why.contains("no free network slot"), "{why}");
    let why = filter::explain(std::slice::from_ref(&h), &req(1, 256), &r).reason;
    assert_eq!(why, "no online host has a free network slot");
    assert_eq!(crate::scheduler::slot_count("3360-3365"), Some(6));
    assert_eq!(crate::scheduler::slot_count("5-4"), None);
    assert_eq!(crate::scheduler::slot_count("x"), None);
}
