//! Unit tests of the proof, one block per layout.

use super::*;
use crate::repo::digest::sha256_hex;

fn row(id: u32, filename: Option<&str>) -> Result<SingleInstanceRow> {
    Ok(SingleInstanceRow {
        instanceid: id,
        hierarchyid: id + 1000,
        tag: 14081,
        filename: filename.map(str::to_string),
    })
}

fn file(path: &str, sha: Option<&str>) -> IndexEntry {
    IndexEntry {
        path: path.into(),
        kind: EntryKind::File,
        size: 1,
        mode: 0o600,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        sha256: sha.map(str::to_string),
        stored: None,
        stored_bytes: None,
        target: None,
        etag: None,
        version_id: None,
    }
}

fn dir(path: &str) -> IndexEntry {
    IndexEntry {
        kind: EntryKind::Dir,
        ..file(path, None)
    }
}

/// Index rows in walk order, as capture writes them.
fn index(mut entries: Vec<IndexEntry>) -> Vec<Result<IndexEntry>> {
    entries.sort_by(|a, b| crate::walk::cmp_paths(&a.path, &b.path));
    entries.into_iter().map(Ok).collect()
}

fn no_lobs() -> Vec<Result<LobInstance>> {
    Vec::new()
}

#[test]
fn files_v1_finds_plain_and_gz_data_and_counts_the_rest() {
    let refs = vec![
        row(161738, None),
        row(5, Some("")),
        row(7, None),
        row(7, None),
        row(42, None),
    ];
    let tree = index(vec![
        dir("8"),
        dir("8/13"),
        file("8/13/161738.gz", Some("a")),
        file("5/0/5", Some("b")),
        file("7/0/7", Some("c")),
        file("3/0/3", Some("d")),
        file("1/0/1.deleted", Some("e")),
        file("1/0/1.gz.deleted", Some("e")),
        file("testfile", None),
        file("9/9/5", Some("f")),
        file("5/0/05", Some("f")),
    ]);
    let r = cross_reference(
        Layout::FilesV1 { l1: 10, l2: 20 },
        None,
        refs,
        tree,
        no_lobs(),
    )
    .unwrap();
    assert_eq!(r.layout, "files");
    assert_eq!((r.referenced, r.present, r.missing), (4, 3, 1));
    assert_eq!(r.missing_ids, [42]);
    assert_eq!((r.data_files, r.extra), (4, 1));
    assert_eq!(r.leftovers, 3);
    assert_eq!(r.unrecognised, 2);
    assert_eq!(r.corrupt, 0);
    assert!(!r.is_complete());
}

#[test]
fn files_v1_uses_the_layouts_own_fan_out() {
    // 100 % 16 = 4, (100 / 16) % 32 = 6; under 10/20 it would be 0/10/100.
    let refs = || vec![row(100, None)];
    let tree = || index(vec![file("4/6/100", Some("a"))]);
    let custom = Layout::FilesV1 { l1: 16, l2: 32 };
    let r = cross_reference(custom, None, refs(), tree(), no_lobs()).unwrap();
    assert_eq!(r.layout, "files_v1-16-32");
    assert!(r.is_complete(), "{r:?}");
    let r = cross_reference(
        Layout::parse("files").unwrap(),
        None,
        refs(),
        tree(),
        no_lobs(),
    )
    .unwrap();
    assert_eq!(r.missing_ids, [100]);
    assert_eq!(r.unrecognised, 1);
}

fn v2_dir(content: &[u8]) -> (String, String) {
    let hex = sha256_hex(content);
    (format!("{}/{}/{}", &hex[..2], &hex[2..4], &hex[4..]), hex)
}

const GUID: &str = "00112233445566778899aabbccddeeff";
const OTHER_GUID: &str = "ffeeddccbbaa99887766554433221100";

#[test]
fn files_v2_needs_matching_content_and_a_holder() {
    let (good, good_hex) = v2_dir(b"good");
    let (shared, shared_hex) = v2_dir(b"shared by two instances");
    let (bad, _) = v2_dir(b"what the name promises");
    let (orphan, orphan_hex) = v2_dir(b"orphan");
    let (foreign, foreign_hex) = v2_dir(b"held by another server only");
    let fallback = format!("0{GUID}/00/s{GUID}i9");
    let refs = vec![
        row(1, Some(&good)),
        row(2, Some(&shared)),
        row(3, Some(&shared)),
        row(4, Some(&bad)),
        row(5, Some(&format!("{good}/"))), // no holder for 5
        row(6, Some(&foreign)),
        row(9, Some(&fallback)),
    ];
    let tree = index(vec![
        file(&format!("{good}/content"), Some(&good_hex)),
        file(&format!("{good}/holder/s{GUID}i1"), None),
        file(&format!("{shared}/content"), Some(&shared_hex)),
        file(&format!("{shared}/holder/s{GUID}i2"), None),
        file(&format!("{shared}/holder/s{GUID}i3"), None),
        // Content that does not match its name: corrupt, and not present.
        file(
            &format!("{bad}/content"),
            Some(&sha256_hex(b"something else")),
        ),
        file(&format!("{bad}/holder/s{GUID}i4"), None),
        file(&format!("{orphan}/content"), Some(&orphan_hex)),
        file(&format!("{foreign}/content"), Some(&foreign_hex)),
        file(&format!("{foreign}/holder/s{OTHER_GUID}i6"), None),
        file(&format!("{fallback}/content"), Some("anything")),
        file(&format!("{fallback}/holder/s{GUID}i9"), None),
        file("testfile", None),
    ]);
    let r = cross_reference(Layout::FilesV2, Some(GUID), refs, tree, no_lobs()).unwrap();
    assert_eq!((r.referenced, r.present, r.missing), (7, 4, 3), "{r:?}");
    assert_eq!(r.missing_ids, [4, 5, 6]);
    assert_eq!(r.corrupt, 1);
    assert_eq!(r.corrupt_paths, [format!("{bad}/content")]);
    assert_eq!((r.data_files, r.extra, r.leftovers), (6, 1, 1));
    // The holder of another server is not one of ours.
    assert_eq!(r.unrecognised, 1);
    assert!(!r.is_complete());
}

#[test]
fn files_v2_corrupt_content_alone_makes_the_proof_fail() {
    let (bad, _) = v2_dir(b"promised");
    let tree = index(vec![file(
        &format!("{bad}/content"),
        Some(&sha256_hex(b"x")),
    )]);
    let r = cross_reference(Layout::FilesV2, Some(GUID), Vec::new(), tree, no_lobs()).unwrap();
    assert_eq!((r.missing, r.corrupt, r.extra), (0, 1, 1));
    assert!(!r.is_complete());
}

fn lob(id: u32, chunks: u32, gap_free: bool) -> Result<LobInstance> {
    Ok(LobInstance {
        instanceid: id,
        tag: 14081,
        chunks,
        bytes: u64::from(chunks) * 393216,
        gap_free,
    })
}

#[test]
fn database_layout_checks_the_lob_rows() {
    let refs = vec![row(1, None), row(2, None), row(2, None), row(3, None)];
    let lobs = vec![lob(1, 3, true), lob(2, 2, false), lob(8, 1, true)];
    let tree = index(vec![file("testfile", None), file("0/0/10", Some("a"))]);
    let r = cross_reference(Layout::Database, None, refs, tree, lobs).unwrap();
    assert_eq!((r.referenced, r.present, r.missing), (3, 1, 2));
    assert_eq!(r.missing_ids, [2, 3]);
    assert_eq!(r.corrupt, 1);
    assert!(r.corrupt_paths[0].contains("lob instance 2"));
    assert_eq!(
        (r.data_files, r.extra, r.leftovers, r.unrecognised),
        (2, 1, 1, 1)
    );
}

#[test]
fn missing_ids_are_listed_up_to_the_cap_but_counted_exactly() {
    let refs: Vec<_> = (0..2500).map(|id| row(id, None)).collect();
    let r = cross_reference(Layout::Database, None, refs, Vec::new(), no_lobs()).unwrap();
    assert_eq!(r.missing, 2500);
    assert_eq!(r.missing_ids.len(), MAX_MISSING_IDS);
    assert_eq!(r.missing_ids[..3], [0, 1, 2]);
}

#[test]
fn s3_finds_instances_under_both_key_forms_and_names_short_bodies() {
    let prefix = "/var/lib/kopano/attachments/";
    let refs = [1, 2, 3, 4, 4].map(|id| row(id, None));
    let index = vec![
        Ok(file("/var/lib/kopano/attachments/1", Some("aa"))),
        // A server that strips the leading slash.
        Ok(file("var/lib/kopano/attachments/2", Some("bb"))),
        // Listed longer than its body: no checksum recorded.
        Ok(file("/var/lib/kopano/attachments/3", None)),
        Ok(file("/var/lib/kopano/attachments/99", Some("cc"))),
        Ok(file("/var/lib/kopano/attachments/notes.txt", Some("dd"))),
    ];
    let r = cross_reference_s3(prefix, refs, index).unwrap();
    assert_eq!(r.layout, "s3");
    assert_eq!((r.referenced, r.present, r.missing), (4, 3, 1));
    assert_eq!(r.missing_ids, [4]);
    assert_eq!((r.data_files, r.extra, r.unrecognised), (4, 1, 1));
    assert_eq!(r.corrupt_paths, ["/var/lib/kopano/attachments/3"]);
    assert!(!r.is_complete());
}

#[test]
fn s3_without_a_prefix_is_a_configuration_error() {
    let err = cross_reference(Layout::S3, None, Vec::new(), Vec::new(), no_lobs()).unwrap_err();
    assert_eq!(crate::error::exit_for(&err), crate::error::Exit::Usage);
}

#[test]
fn a_read_error_in_any_input_is_returned() {
    let refs = vec![row(1, None), Err(anyhow::anyhow!("broken line"))];
    let err = cross_reference(Layout::Database, None, refs, Vec::new(), no_lobs()).unwrap_err();
    assert!(err.to_string().contains("broken line"));
}

fn link(path: &str, target: &str) -> IndexEntry {
    IndexEntry {
        kind: EntryKind::Symlink,
        size: 0,
        target: Some(target.into()),
        ..file(path, None)
    }
}

#[test]
fn links_resolve_inside_the_tree_only() {
    let links = Links::from_index(index(vec![
        link("9/x/rel", "../../1"),
        link("5/0/5", "x"),
        link("5/0/x", "../../1/0/1"),
        link("6/0/6", "6"),
        link("7/0/7", "/srv/disk2/7/0/7"),
        link("8/0/8", "../../../outside"),
        link("a/b", "../9/x/rel/0/1"),
    ]))
    .unwrap();
    assert_eq!(links.resolve("9/x/rel").as_deref(), Some("1"));
    assert_eq!(links.resolve("5/0/5").as_deref(), Some("1/0/1"));
    // Through another link in the middle of the path.
    assert_eq!(links.resolve("a/b").as_deref(), Some("1/0/1"));
    assert_eq!(links.resolve("6/0/6"), None, "a loop");
    assert_eq!(links.resolve("7/0/7"), None, "absolute: outside the set");
    assert_eq!(links.resolve("8/0/8"), None, "climbs out of the tree");
    assert_eq!(links.resolve("1/0/1"), None, "not a link");
}

#[test]
fn a_referenced_path_that_is_a_link_counts_only_when_it_leads_to_captured_data() {
    let refs = || {
        vec![
            row(1, None),
            row(3, None),
            row(13, None),
            row(23, None),
            row(5, None),
        ]
    };
    let tree = index(vec![
        file("1/0/1", Some("a")),
        link("3/0/3", "../../1/0/1"),
        link("3/1/13", "/srv/disk2/3/1/13"),
        link("3/2/23", "../../9/9/nothing"),
        link("5/0/5", "x"),
        link("5/0/x", "../../1/0/1"),
    ]);
    let links = Links::from_index(tree.iter().map(|e| Ok(e.as_ref().unwrap().clone()))).unwrap();
    let layout = Layout::FilesV1 { l1: 10, l2: 20 };
    let r = cross_reference_linked(layout, None, refs(), tree, no_lobs(), &links).unwrap();
    assert_eq!((r.referenced, r.present, r.missing), (5, 3, 2));
    assert_eq!(r.missing_ids, [13, 23]);
    // Without following, every link is missing data.
    let tree = index(vec![file("1/0/1", Some("a")), link("3/0/3", "../../1/0/1")]);
    let r = cross_reference(layout, None, refs(), tree, no_lobs()).unwrap();
    assert_eq!(r.missing_ids, [3, 5, 13, 23]);
}

#[test]
fn files_v2_content_that_is_a_link_is_checked_against_its_name() {
    let (moved, moved_hex) = v2_dir(b"moved");
    let (lying, _) = v2_dir(b"what the name promises");
    let refs = vec![row(1, Some(&moved)), row(2, Some(&lying))];
    let tree = index(vec![
        file("spare/moved", Some(&moved_hex)),
        link(&format!("{moved}/content"), "../../../spare/moved"),
        file(&format!("{moved}/holder/s{GUID}i1"), None),
        link(&format!("{lying}/content"), "../../../spare/moved"),
        file(&format!("{lying}/holder/s{GUID}i2"), None),
    ]);
    let links = Links::from_index(tree.iter().map(|e| Ok(e.as_ref().unwrap().clone()))).unwrap();
    let r =
        cross_reference_linked(Layout::FilesV2, Some(GUID), refs, tree, no_lobs(), &links).unwrap();
    assert_eq!((r.referenced, r.present, r.missing), (2, 1, 1), "{r:?}");
    assert_eq!(r.missing_ids, [2]);
    assert_eq!(r.corrupt, 1);
}
