//! Unit tests of the snapshot guard: path mapping, the consistency window,
//! set id checks (the real snapshots are tested in tests/).

use super::*;

fn snapshot(roots: Vec<Root>) -> Snapshot {
    Snapshot {
        method: Method::Lvm,
        name: "kcbackup-snap-t".into(),
        taken_at: Utc::now(),
        view_root: "/run/kcbackup/kcbackup-snap-t/fs".into(),
        roots,
        held: Held::Nothing,
        _lock: None,
    }
}

#[test]
fn paths_map_into_the_snapshot_by_their_given_or_canonical_form() {
    let snap = snapshot(vec![Root {
        given: "/var/lib/kopano/attachments".into(),
        canonical: "/srv/data/attachments".into(),
        rel: "data/attachments".into(),
    }]);
    let want = Path::new("/run/kcbackup/kcbackup-snap-t/fs/data/attachments/8/13/161738");
    assert_eq!(
        snap.view_path(Path::new("/var/lib/kopano/attachments/8/13/161738")),
        want
    );
    assert_eq!(
        snap.view_path(Path::new("/srv/data/attachments/8/13/161738")),
        want
    );
    // Not covered: read live. A sibling with a common name prefix is not inside.
    assert_eq!(
        snap.view_path(Path::new("/etc/kopano")),
        Path::new("/etc/kopano")
    );
    assert!(!snap.covers(Path::new("/srv/data/attachments-old")));
    assert!(snap.covers(Path::new("/srv/data/attachments")));
}

#[test]
fn window_is_the_gap_between_transaction_and_snapshot() {
    let snap = snapshot(Vec::new());
    let began = snap.taken_at - chrono::Duration::milliseconds(42);
    // Held::Nothing has no fill level to ask lvs for.
    let info = snap.info(Some(began)).unwrap();
    assert_eq!(info.window_ms, Some(42));
    assert_eq!(info.method, Method::Lvm);
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["method"], "lvm");
    assert_eq!(json["window_ms"], 42);
}

#[test]
fn odd_set_ids_are_refused() {
    let plan = Plan {
        method: Method::None,
        source: "/".into(),
        note: String::new(),
        uncovered: Vec::new(),
        target: Target::None,
        roots: Vec::new(),
        mount_base: std::env::temp_dir(),
    };
    for bad in ["", "a/b", "../x", "a b"] {
        assert!(take(&plan, bad).is_err(), "{bad:?}");
    }
    assert!(take(&plan, "20260101T000000Z-2").is_ok());
}

#[test]
fn method_none_needs_no_attachment_directory() {
    let req = Request::new(SnapshotMethod::None, "/nonexistent/kcbackup/attachments");
    let none = plan(&req).unwrap();
    assert_eq!(none.method, Method::None);
    assert_eq!(
        none.source,
        PathBuf::from("/nonexistent/kcbackup/attachments")
    );
    // Auto and explicit methods still need it: there is nothing to inspect.
    let auto = Request::new(SnapshotMethod::Auto, "/nonexistent/kcbackup/attachments");
    assert!(plan(&auto).is_err());
}
