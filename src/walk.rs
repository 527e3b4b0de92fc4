//! A deterministic tree walk: depth first, each directory's names in byte
//! order, symlinks never followed. Indexes written in this order can be
//! merged with the next walk in one pass (see [`cmp_paths`]).

use std::cmp::Ordering;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One thing the walk met, relative to its root (`/`-separated).
#[derive(Debug)]
pub enum Walked {
    /// An entry with its `lstat` metadata. Directories come before their contents.
    Entry { rel: String, meta: Metadata },
    /// Listed by its directory, gone by the time it was looked at.
    Vanished { rel: String },
    /// A name that is not UTF-8 cannot go into the index; Kopano never makes one.
    Skipped { rel: String, reason: String },
}

/// The order in which [`Walker`] yields paths: component by component, so a
/// directory's contents sort right after it.
pub fn cmp_paths(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

pub struct Walker {
    root: PathBuf,
    /// One frame per open directory: its relative path and the names not yet visited.
    stack: Vec<(String, std::vec::IntoIter<OsString>)>,
}

impl Walker {
    /// Starts at `root`, which must be a directory (a symlink to one is fine).
    pub fn new(root: &Path) -> Result<Walker> {
        let names =
            sorted_names(root).with_context(|| format!("while listing {}", root.display()))?;
        Ok(Walker {
            root: root.to_path_buf(),
            stack: vec![(String::new(), names.into_iter())],
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

impl Iterator for Walker {
    type Item = Result<Walked>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (prefix, names) = self.stack.last_mut()?;
            let Some(name) = names.next() else {
                self.stack.pop();
                continue;
            };
            let Some(name) = name.to_str() else {
                let rel = join(prefix, &name.to_string_lossy());
                return Some(Ok(Walked::Skipped {
                    rel,
                    reason: "the name is not valid UTF-8".into(),
                }));
            };
            let rel = join(prefix, name);
            let path = self.root.join(&rel);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Some(Ok(Walked::Vanished { rel }));
                }
                Err(e) => {
                    return Some(
                        Err(e).with_context(|| format!("while examining {}", path.display())),
                    );
                }
            };
            if meta.is_dir() {
                match sorted_names(&path) {
                    Ok(children) => self.stack.push((rel.clone(), children.into_iter())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Some(Ok(Walked::Vanished { rel }));
                    }
                    Err(e) => {
                        return Some(
                            Err(e).with_context(|| format!("while listing {}", path.display())),
                        );
                    }
                }
            }
            return Some(Ok(Walked::Entry { rel, meta }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(root: &Path) -> Vec<String> {
        Walker::new(root)
            .unwrap()
            .map(|w| match w.unwrap() {
                Walked::Entry { rel, meta } if meta.is_dir() => format!("{rel}/"),
                Walked::Entry { rel, .. } => rel,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn walks_depth_first_in_byte_order_without_following_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a/b", "a-c", "B"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a/b/2", "a/b/10", "a-c/x", "a/z", "top"] {
            fs::write(root.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("/etc", root.join("a/link")).unwrap();
        let seen = walk(root);
        assert_eq!(
            seen,
            [
                "B/", "a/", "a/b/", "a/b/10", "a/b/2", "a/link", "a/z", "a-c/", "a-c/x", "top"
            ]
        );
        // The walk order is exactly the order cmp_paths defines.
        let mut sorted = seen
            .iter()
            .map(|s| s.trim_end_matches('/'))
            .collect::<Vec<_>>();
        sorted.sort_by(|a, b| cmp_paths(a, b));
        assert_eq!(
            sorted,
            seen.iter()
                .map(|s| s.trim_end_matches('/'))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn component_order_differs_from_plain_string_order() {
        assert_eq!(cmp_paths("a/b", "a-c"), Ordering::Less);
        assert_eq!("a/b".cmp("a-c"), Ordering::Greater);
        assert_eq!(cmp_paths("a", "a/b"), Ordering::Less);
        assert_eq!(cmp_paths("8/13/161738", "8/13/161738.gz"), Ordering::Less);
    }

    #[test]
    fn a_missing_root_is_an_error_naming_it() {
        let err = Walker::new(Path::new("/nonexistent/attachments"))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("/nonexistent/attachments"));
    }
}
