//! The XML answers rusty-s3 does not parse (ListObjectVersions,
//! GetBucketVersioning, error bodies), through quick-xml's serde support.

use serde::Deserialize;

/// `<Error><Code>NoSuchKey</Code>...</Error>`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code")]
    code: Option<String>,
}

/// S3's error code in an error body, if it has one.
pub fn error_code(body: &str) -> Option<String> {
    quick_xml::de::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.code)
        .filter(|c| !c.is_empty())
}

/// `<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>`;
/// no `Status` when versioning was never enabled.
#[derive(Debug, Deserialize)]
pub struct VersioningConfiguration {
    #[serde(rename = "Status")]
    pub status: Option<String>,
}

pub fn versioning(body: &str) -> Result<VersioningConfiguration, quick_xml::DeError> {
    quick_xml::de::from_str(body)
}

/// `<ListVersionsResult>`: its `Version` and `DeleteMarker` elements come
/// interleaved in key order, so they are read as one sequence.
#[derive(Debug, Deserialize)]
pub struct ListVersionsResult {
    #[serde(rename = "$value", default)]
    pub fields: Vec<VersionsField>,
}

#[derive(Debug, Deserialize)]
pub enum VersionsField {
    IsTruncated(bool),
    NextKeyMarker(String),
    NextVersionIdMarker(String),
    Version(VersionEntry),
    DeleteMarker(VersionEntry),
    #[serde(other)]
    Other,
}

/// One `Version` or `DeleteMarker` (the latter has no size or ETag).
#[derive(Debug, Deserialize)]
pub struct VersionEntry {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "VersionId")]
    pub version_id: Option<String>,
    #[serde(rename = "IsLatest", default)]
    pub is_latest: bool,
    #[serde(rename = "LastModified")]
    pub last_modified: Option<String>,
    #[serde(rename = "ETag")]
    pub etag: Option<String>,
    #[serde(rename = "Size")]
    pub size: Option<u64>,
}

pub fn list_versions(body: &str) -> Result<ListVersionsResult, quick_xml::DeError> {
    quick_xml::de::from_str(body)
}

/// The body of PutBucketVersioning.
pub fn versioning_body(enabled: bool) -> String {
    let status = if enabled { "Enabled" } else { "Suspended" };
    format!(
        "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <Status>{status}</Status></VersioningConfiguration>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_interleaved_versions_and_delete_markers() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>p/</Prefix><KeyMarker></KeyMarker>
  <MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
  <NextKeyMarker>p/2</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>
  <DeleteMarker><Key>p/1</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest>
    <LastModified>2026-12-01T10:00:02.000Z</LastModified></DeleteMarker>
  <Version><Key>p/1</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest>
    <LastModified>2026-12-01T10:00:00.000Z</LastModified><ETag>"abc"</ETag>
    <Size>5</Size><StorageClass>STANDARD</StorageClass></Version>
</ListVersionsResult>"#;
        let parsed = list_versions(body).unwrap();
        let kinds: Vec<&str> = parsed
            .fields
            .iter()
            .filter_map(|f| match f {
                VersionsField::Version(_) => Some("v"),
                VersionsField::DeleteMarker(_) => Some("d"),
                VersionsField::IsTruncated(true) => Some("t"),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["t", "d", "v"]);
    }

    #[test]
    fn reads_error_codes_and_versioning_status() {
        let e = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>";
        assert_eq!(error_code(e).as_deref(), Some("NoSuchKey"));
        assert_eq!(error_code("not xml"), None);
        let v = versioning(
            "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        )
        .unwrap();
        assert_eq!(v.status.as_deref(), Some("Enabled"));
        let v = versioning("<VersioningConfiguration/>").unwrap();
        assert_eq!(v.status, None);
    }
}
