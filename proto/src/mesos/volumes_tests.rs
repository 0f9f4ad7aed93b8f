//! Persistent volumes both ways: CREATE and DESTROY into Mezzo's
//! operations, a task's volume into a mount, a free volume into an offer's
//! resources; and what Mezzo has no volume for, refused.

use serde_json::{Value, json};

use crate::mesos::convert::{self, Format};
use crate::mesos::types as m;
use crate::v1;

fn resource(v: Value) -> m::Resource {
    serde_json::from_value(v).expect("a Mesos resource")
}

/// A volume resource as a framework without RESERVATION_REFINEMENT
/// writes it (a volume of 64 MiB reserved for `eng`).
fn volume(id: &str, extra: Value) -> m::Resource {
    let mut r = json!({
        "name": "disk", "type": "SCALAR", "scalar": { "value": 64.0 },
        "role": "eng", "reservation": { "principal": "p" },
        "disk": { "persistence": { "id": id, "principal": "p" },
                  "volume": { "mode": "RW", "container_path": "data" } }
    });
    if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    resource(r)
}

#[test]
fn create_makes_mezzo_volumes_of_reserved_disk_in_either_reservation_format() {
    let refined = volume(
        "v2",
        json!({ "role": null, "reservation": null,
                "reservations": [{ "type": "DYNAMIC", "role": "eng", "principal": "p" }] }),
    );
    let c = convert::create_in(&[volume("v1", json!({})), refined]).expect("a create");
    // The role its disk is reserved for goes with it: the master refuses
    // it unless it is the offer's.
    let want = |id: &str| v1::Volume {
        id: id.into(),
        disk_mib: 64.0,
        role: "eng".into(),
        ..Default::default()
    };
    assert_eq!(c.volumes, [want("v1"), want("v2")]);
    // A volume without `disk.volume` is created all the same (its mount
    // path is given at launch).
    let bare = volume("v3", json!({ "disk": { "persistence": { "id": "v3" } } }));
    assert_eq!(convert::create_in(&[bare]).expect("a create").volumes, [want("v3")]);
}

#[test]
fn create_refuses_what_mezzo_has_no_volume_for() {
    let cases = [
        (
            resource(json!({ "name": "cpus", "type": "SCALAR", "scalar": { "value": 1.0 }, "role": "eng" })),
            "only disk",
        ),
        (
            volume(
                "v",
                json!({ "disk": { "volume": { "mode": "RW", "container_path": "d" } } }),
            ),
            "ephemeral",
        ),
        (volume("v", json!({ "disk": {} })), "persistence.id"),
        (volume("v", json!({ "role": "*", "reservation": null })), "reserved"),
        (volume("v", json!({ "role": null, "reservation": null })), "reserved"),
        (
            volume(
                "v",
                json!({ "disk": { "persistence": { "id": "v" }, "source": { "type": "MOUNT" } } }),
            ),
            "disk source MOUNT",
        ),
        (volume("v", json!({ "shared": {} })), "shared"),
        (volume("", json!({ "disk": { "persistence": { "id": "" } } })), "empty"),
        (
            volume(
                "v",
                json!({ "type": "RANGES", "scalar": null, "ranges": { "range": [] } }),
            ),
            "SCALAR",
        ),
        (
            volume(
                "v",
                json!({ "disk": { "persistence": { "id": "v" },
                        "volume": { "mode": "RW", "container_path": "d", "image": { "type": "DOCKER" } } } }),
            ),
            "image",
        ),
        (
            volume(
                "v",
                json!({ "disk": { "persistence": { "id": "v" },
                        "volume": { "mode": "WO", "container_path": "d" } } }),
            ),
            "mode",
        ),
    ];
    for (r, why) in cases {
        let e = convert::create_in(std::slice::from_ref(&r)).expect_err("refused");
        assert!(e.contains(why), "{r:?}: {e}");
    }
}

#[test]
fn destroy_names_the_volumes_by_persistence_id() {
    let d = convert::destroy_in(&[
        volume("v1", json!({})),
        volume("v2", json!({ "disk": { "persistence": { "id": "v2" } } })),
    ])
    .expect("a destroy");
    assert_eq!(d.volume_ids, ["v1", "v2"]);
    let plain = resource(json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": 1.0 }, "role": "eng" }));
    let e = convert::destroy_in(&[plain]).expect_err("no persistence");
    assert!(e.contains("persistence.id"), "{e}");
    let e = convert::destroy_in(&[volume(
        "v",
        json!({ "disk": { "persistence": { "id": "v" }, "source": { "type": "PATH" } } }),
    )])
    .expect_err("a source");
    assert!(e.contains("PATH"), "{e}");
}

fn task_with(resources: Vec<m::Resource>, container: Option<Value>) -> m::TaskInfo {
    let mut t: m::TaskInfo = serde_json::from_value(json!({
        "name": "t", "task_id": { "value": "t" }, "agent_id": { "value": "a" },
        "command": { "value": "true" }
    }))
    .expect("a task");
    t.resources = resources;
    t.container = container.map(|c| serde_json::from_value(c).expect("a container"));
    t
}

#[test]
fn a_task_mounts_its_volume_and_does_not_count_its_disk() {
    let cpus = resource(json!({ "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.5 } }));
    let ro = volume(
        "logs",
        json!({ "disk": { "persistence": { "id": "logs" }, "volume": { "mode": "RO", "container_path": "logs" } } }),
    );
    let t = convert::task_in(&task_with(vec![cpus, volume("v1", json!({})), ro], None)).expect("a task");
    assert_eq!(t.resources.len(), 1, "only cpus: {:?}", t.resources);
    assert_eq!(t.resources[0].name, "cpus");
    let mounts = t.container.expect("a container for the mounts").mounts;
    let mount = |id: &str, path: &str, read_only: bool| v1::Mount {
        container_path: path.into(),
        read_only,
        volume_id: id.into(),
        host_volume: String::new(),
    };
    assert_eq!(mounts, [mount("v1", "data", false), mount("logs", "logs", true)]);

    // Beside an image: the container keeps its image and gains the mount.
    let image = json!({ "type": "MESOS", "mesos": { "image": { "type": "DOCKER", "docker": { "name": "alpine" } } } });
    let t = convert::task_in(&task_with(vec![volume("v1", json!({}))], Some(image))).expect("a task");
    let c = t.container.expect("a container");
    assert_eq!(c.image.map(|i| i.reference).as_deref(), Some("alpine"));
    assert_eq!(c.mounts, [mount("v1", "data", false)]);

    // A task's plain disk (even with empty disk details) stays its disk.
    let disk = resource(json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": 10.0 }, "disk": {} }));
    let t = convert::task_in(&task_with(vec![disk], None)).expect("a task");
    assert_eq!((t.resources.len(), t.container), (1, None));
}

#[test]
fn a_task_volume_needs_a_mount_path_and_reserve_takes_no_volume() {
    let bare = volume("v1", json!({ "disk": { "persistence": { "id": "v1" } } }));
    let e = convert::task_in(&task_with(vec![bare], None)).expect_err("no path");
    assert!(e.contains("task t") && e.contains("container_path"), "{e}");
    let e = convert::resources_in(&[volume("v1", json!({}))]).expect_err("a volume in RESERVE");
    assert!(e.contains("persistent volume v1"), "{e}");
}

#[test]
fn a_free_volume_is_offered_as_reserved_disk_with_its_persistence() {
    let offer = v1::Offer {
        offer_id: "o".into(),
        framework_id: "f".into(),
        agent_id: "a".into(),
        hostname: "h".into(),
        resources: vec![v1::Resource {
            name: "disk".into(),
            scalar: 64.0,
            role: "eng".into(),
            ..Default::default()
        }],
        allocation_role: "eng".into(),
        volumes: vec![v1::Volume {
            id: "v1".into(),
            disk_mib: 32.0,
            role: "eng".into(),
            agent_id: "a".into(),
            principal: "p".into(),
            created_at: 1.0,
        }],
        ..Default::default()
    };
    let disk = json!({ "persistence": { "id": "v1", "principal": "p" },
                       "volume": { "mode": "RW", "container_path": "v1" } });
    // Written as the offer's other reserved disk is, in either format.
    let o = serde_json::to_value(convert::offer_out(&offer, Format::default())).expect("json");
    assert_eq!(o["resources"][0].get("disk"), None);
    assert_eq!(
        o["resources"][1],
        json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": 32.0 }, "role": "eng", "disk": disk })
    );
    let fmt = Format {
        refinement: true,
        multi_role: true,
        ..Default::default()
    };
    let o = serde_json::to_value(convert::offer_out(&offer, fmt)).expect("json");
    assert_eq!(
        o["resources"][1],
        json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": 32.0 },
                "reservations": [{ "type": "STATIC", "role": "eng" }],
                "allocation_info": { "role": "eng" }, "disk": disk })
    );
    // And what a framework sends back from that offer mounts the volume.
    let back: m::Resource = serde_json::from_value(o["resources"][1].clone()).expect("a resource");
    let t = convert::task_in(&task_with(vec![back.clone()], None)).expect("a task");
    assert_eq!(t.container.expect("mounts").mounts[0].volume_id, "v1");
    assert_eq!(convert::destroy_in(&[back]).expect("a destroy").volume_ids, ["v1"]);
}
