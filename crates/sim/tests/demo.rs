//! The demo's scenario at test speed: every class appears, and upstream fails where design.md
//! says it does.

use gleaner_sim::{Clock, demo, scenario::Class};

#[tokio::test]
async fn the_demo_shows_every_class_and_upstreams_gaps() {
    let world = demo::world().start().await.unwrap();
    let report = demo::upstream(&world, Clock::new(0.02)).await.unwrap();
    for class in Class::ALL {
        assert!(
            report.class(class).total > 0,
            "no {class} object:\n{report}"
        );
    }
    let wrongly_deleted = report.class(Class::SameNameOtherNamespace).wrongly_deleted
        + report.class(Class::Retained).wrongly_deleted;
    assert!(wrongly_deleted > 0, "{report}");
    for class in [Class::Rwx, Class::Unattached, Class::Snapshot] {
        assert!(
            report.class(class).leaked > 0,
            "{class} did not leak:\n{report}"
        );
    }
    let json = serde_json::to_value(&report).unwrap();
    let object = &json["objects"][0];
    for field in [
        "class",
        "kind",
        "namespace",
        "name",
        "uid",
        "must_survive",
        "exists_at_end",
    ] {
        assert!(object.get(field).is_some(), "{field} missing in {object}");
    }
    for field in ["total", "reclaimed", "kept", "leaked", "wrongly_deleted"] {
        assert!(
            json["summary"]["vm_disk"].get(field).is_some(),
            "{field} missing"
        );
    }
}
