//! Kopano attachment layouts: where the data of an attachment instance lives
//! for each `attachment_storage` backend (kopano-facts.md, section 3).

use std::fmt;
use std::path::PathBuf;

use crate::error::config_error;

/// One attachment storage backend, as named in `settings.attachment_storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `files` (= 10/20) or `files_v1-L1-L2`: `<id % L1>/<(id / L1) % L2>/<id>[.gz]`.
    FilesV1 { l1: u32, l2: u32 },
    /// Content-addressed: `<h0h1>/<h2h3>/<rest>/content` plus `holder/s<guid>i<id>`.
    FilesV2,
    /// Data in the `lob` table, inside the dump itself.
    Database,
    /// One object per instance in an S3 bucket, at key
    /// `attachment_path/<id>` (with or without its leading `/`).
    S3,
}

impl Layout {
    /// Parses a backend name as Kopano writes it. `auto` is not a layout: it
    /// must be resolved against the database's value first.
    pub fn parse(name: &str) -> anyhow::Result<Layout> {
        let name = name.trim();
        match name {
            "files" => return Ok(Layout::FilesV1 { l1: 10, l2: 20 }),
            "files_v2" => return Ok(Layout::FilesV2),
            "database" => return Ok(Layout::Database),
            "s3" => return Ok(Layout::S3),
            _ => {}
        }
        if let Some(rest) = name.strip_prefix("files_v1-") {
            let mut parts = rest.splitn(2, '-');
            let l1 = parts.next().and_then(|p| p.parse::<u32>().ok());
            let l2 = parts.next().and_then(|p| p.parse::<u32>().ok());
            if let (Some(l1), Some(l2)) = (l1, l2)
                && l1 > 0
                && l2 > 0
            {
                return Ok(Layout::FilesV1 { l1, l2 });
            }
        }
        config_error(format!("unknown attachment_storage backend {name:?}"))
    }

    /// The layout a backup works with: the database's value (authoritative),
    /// else the configured one, where `auto` means `files_v2` (Kopano's rule).
    pub fn resolve(dumped: Option<&str>, configured: &str) -> anyhow::Result<Layout> {
        let name = match dumped {
            Some(name) => name,
            None if configured.trim() == "auto" => "files_v2",
            None => configured,
        };
        Layout::parse(name)
    }

    /// For `files_v1`: the directory of instance `id`, relative to `attachment_path`.
    pub fn v1_dir(l1: u32, l2: u32, id: u32) -> PathBuf {
        PathBuf::from(format!("{}/{}", id % l1, (id / l1) % l2))
    }

    /// For `files_v1`: the two names Kopano tries, plain first, then `.gz`.
    pub fn v1_candidates(l1: u32, l2: u32, id: u32) -> [PathBuf; 2] {
        let dir = Self::v1_dir(l1, l2, id);
        [dir.join(id.to_string()), dir.join(format!("{id}.gz"))]
    }

    /// For `s3`: the listing prefix of `attachment_path`: the path and a
    /// `/`, byte for byte as Kopano joins them (a trailing `/` in the
    /// setting makes keys with `//`).
    pub fn s3_prefix(attachment_path: &str) -> String {
        format!("{attachment_path}/")
    }

    /// For `s3`: the instance whose object `key` is under `prefix` (as
    /// configured, or without its leading `/`), if it is one. Exactly
    /// Kopano's spelling: decimal, no sign, no leading zeros.
    pub fn s3_instance(prefix: &str, key: &str) -> Option<u32> {
        let rest = key.strip_prefix(prefix).or_else(|| {
            let bare = prefix.strip_prefix('/')?;
            key.strip_prefix(bare)
        })?;
        let id: u32 = rest.parse().ok()?;
        (id.to_string() == rest).then_some(id)
    }

    /// For `files_v2`: the holder file name of instance `id` under a server guid.
    pub fn v2_holder_name(server_guid: &[u8], id: u32) -> String {
        format!("s{}i{}", hex::encode(server_guid), id)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::FilesV1 { l1: 10, l2: 20 } => f.write_str("files"),
            Layout::FilesV1 { l1, l2 } => write!(f, "files_v1-{l1}-{l2}"),
            Layout::FilesV2 => f.write_str("files_v2"),
            Layout::Database => f.write_str("database"),
            Layout::S3 => f.write_str("s3"),
        }
    }
}

/// In a manifest a layout is its backend name (`files_v1-16-32`), so the
/// field reads as Kopano's own setting does.
impl serde::Serialize for Layout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Layout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Layout, D::Error> {
        let name = String::deserialize(d)?;
        Layout::parse(&name).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_backend_name() {
        assert_eq!(
            Layout::parse("files").unwrap(),
            Layout::FilesV1 { l1: 10, l2: 20 }
        );
        assert_eq!(
            Layout::parse("files_v1-16-32").unwrap(),
            Layout::FilesV1 { l1: 16, l2: 32 }
        );
        assert_eq!(Layout::parse("files_v2").unwrap(), Layout::FilesV2);
        assert_eq!(Layout::parse("database").unwrap(), Layout::Database);
        assert!(Layout::parse("files_v1-0-3").is_err());
        assert!(Layout::parse("auto").is_err());
    }

    #[test]
    fn the_database_value_wins() {
        assert_eq!(
            Layout::resolve(Some("files_v1-16-32"), "files").unwrap(),
            Layout::FilesV1 { l1: 16, l2: 32 }
        );
        assert_eq!(Layout::resolve(None, "auto").unwrap(), Layout::FilesV2);
        assert_eq!(Layout::resolve(None, "database").unwrap(), Layout::Database);
        assert_eq!(Layout::resolve(Some("s3"), "auto").unwrap(), Layout::S3);
        assert_eq!(Layout::resolve(None, "s3").unwrap(), Layout::S3);
    }

    #[test]
    fn a_layout_round_trips_through_its_manifest_name() {
        for layout in [
            Layout::FilesV1 { l1: 10, l2: 20 },
            Layout::FilesV1 { l1: 16, l2: 32 },
            Layout::FilesV2,
            Layout::Database,
            Layout::S3,
        ] {
            let json = serde_json::to_string(&layout).unwrap();
            assert_eq!(json, format!("\"{layout}\""));
            assert_eq!(serde_json::from_str::<Layout>(&json).unwrap(), layout);
        }
        assert!(serde_json::from_str::<Layout>("\"files_v9\"").is_err());
    }

    #[test]
    fn s3_keys_are_found_under_both_forms_of_the_prefix() {
        assert_eq!(Layout::s3_prefix("/srv/att/"), "/srv/att//");
        let prefix = Layout::s3_prefix("/var/lib/kopano/attachments");
        assert_eq!(prefix, "/var/lib/kopano/attachments/");
        assert_eq!(
            Layout::s3_instance(&prefix, "/var/lib/kopano/attachments/42"),
            Some(42)
        );
        assert_eq!(
            Layout::s3_instance(&prefix, "var/lib/kopano/attachments/42"),
            Some(42)
        );
        for not_data in [
            "/var/lib/kopano/attachments/042",
            "/var/lib/kopano/attachments/+4",
            "/var/lib/kopano/attachments/4/5",
            "/var/lib/kopano/attachments/",
            "/other/42",
            "//var/lib/kopano/attachments/42",
        ] {
            assert_eq!(Layout::s3_instance(&prefix, not_data), None, "{not_data}");
        }
        assert_eq!(Layout::s3_instance("att/", "att/7"), Some(7));
    }

    #[test]
    fn v1_path_matches_the_manual_example() {
        let [plain, gz] = Layout::v1_candidates(10, 20, 161738);
        assert_eq!(plain, PathBuf::from("8/13/161738"));
        assert_eq!(gz, PathBuf::from("8/13/161738.gz"));
    }
}
