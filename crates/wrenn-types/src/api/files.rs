//! `/v1/capsules/{id}/files/…`: a capsule's filesystem.

use serde::{Deserialize, Serialize};

/// `depth`: 1..=10 wherever it is given, as any JSON number with that value (`2` or `2.0`:
/// JSON Schema's `integer` is a number without a fractional part).
fn depth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(f) if f.fract() == 0.0 && (1.0..=10.0).contains(&f) => Ok(Some(f as u32)),
        Some(f) => Err(serde::de::Error::custom(format!(
            "depth must be an integer from 1 to 10, not {f}"
        ))),
    }
}

/// A path in the capsule.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    /// Absolute, or relative to the user's home; not empty, no NUL.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "/home/user/data.csv",
            min_length = 1,
            pattern = r"^[^\x00]+$"
        )
    )]
    pub path: String,
    /// `list` only: 1 (default) lists the children, 2 adds grandchildren, … (at most 10).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    #[serde(default, deserialize_with = "depth")]
    pub depth: Option<u32>,
}

/// An upload: `path` first, then `file`.
#[derive(Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadForm {
    /// Where to write (parents are created; an existing file is replaced); not empty, no NUL.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, pattern = r"^[^\x00]+$"))]
    pub path: String,
    /// The bytes.
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_media_type = "application/octet-stream"))]
    pub file: Vec<u8>,
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Directory,
    Symlink,
}

/// A file or directory in a capsule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub size: i64,
    /// Unix mode bits.
    pub mode: u32,
    /// As `ls -l` shows them, e.g. `-rw-r--r--`.
    pub permissions: String,
    pub owner: String,
    pub group: String,
    /// Unix seconds.
    pub modified_at: i64,
    /// A symlink's target, else null.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub symlink_target: Option<String>,
}

/// A directory's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileList {
    pub entries: Vec<FileEntry>,
}

/// The directory `mkdir` made (or found).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MadeDir {
    pub entry: FileEntry,
}
