//! A deterministic tree walk: depth first, each directory's names in byte
//! order. Symlinks are not followed, except (when asked) links to
//! directories outside the tree, the way administrators move a fan-out
//! directory to another disk. Indexes written in this order can be merged
//! with the next walk in one pass (see [`cmp_paths`]).

use std::cmp::Ordering;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
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
    /// A symlink to a directory outside the tree, followed: `meta` is the
    /// directory's; its contents come next, as if it were in place.
    /// `other_device`: the directory is on another filesystem than the root
    /// (so a snapshot of the root does not cover it).
    Followed {
        rel: String,
        meta: Metadata,
        target: String,
        other_device: bool,
    },
    /// A symlink to a directory that was deliberately not followed (it
    /// leads back to a directory being walked: a loop). `meta` is the
    /// link's own; it is recorded as a link.
    NotFollowed {
        rel: String,
        meta: Metadata,
        target: String,
        reason: String,
    },
}

/// The order in which [`Walker`] yields paths: component by component, so a
/// directory's contents sort right after it.
pub fn cmp_paths(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

pub struct Walker {
    root: PathBuf,
    /// One frame per open directory: its relative path, its device and
    /// inode (to refuse loops), and the names not yet visited.
    stack: Vec<Frame>,
    /// Follow symlinks to directories outside the tree (`None`: never).
    follow: Option<Follow>,
}

struct Frame {
    rel: String,
    id: (u64, u64),
    names: std::vec::IntoIter<OsString>,
}

/// What following needs to know about the root.
struct Follow {
    /// The root with every symlink resolved: a link whose target lies below
    /// it stays a link (its contents are walked where they really are).
    canonical_root: PathBuf,
    root_dev: u64,
}

impl Walker {
    /// Starts at `root`, which must be a directory (a symlink to one is
    /// fine); no symlink below it is followed.
    pub fn new(root: &Path) -> Result<Walker> {
        Self::with_follow(root, false)
    }

    /// Like [`Walker::new`]; with `follow_dirs`, a symlink to a directory
    /// outside the tree is followed and walked as if it were in place.
    pub fn with_follow(root: &Path, follow_dirs: bool) -> Result<Walker> {
        let listing = || -> io::Result<(Metadata, Vec<OsString>)> {
            Ok((fs::metadata(root)?, sorted_names(root)?))
        };
        let (meta, names) =
            listing().with_context(|| format!("while listing {}", root.display()))?;
        let follow = if follow_dirs {
            Some(Follow {
                canonical_root: fs::canonicalize(root)
                    .with_context(|| format!("while resolving {}", root.display()))?,
                root_dev: meta.dev(),
            })
        } else {
            None
        };
        Ok(Walker {
            root: root.to_path_buf(),
            stack: vec![Frame {
                rel: String::new(),
                id: (meta.dev(), meta.ino()),
                names: names.into_iter(),
            }],
            follow,
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
            let frame = self.stack.last_mut()?;
            let prefix = &frame.rel;
            let Some(name) = frame.names.next() else {
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
            if meta.file_type().is_symlink()
                && let Some(found) = self.follow_link(&rel, &path, &meta)
            {
                return Some(found);
            }
            if meta.is_dir() {
                match sorted_names(&path) {
                    Ok(children) => self.stack.push(Frame {
                        rel: rel.clone(),
                        id: (meta.dev(), meta.ino()),
                        names: children.into_iter(),
                    }),
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

impl Walker {
    /// Decides about a symlink when following is on: `None` means "record
    /// it as a link" (following is off, it dangles, it is no directory, or
    /// its target is inside the tree and walked there anyway).
    fn follow_link(
        &mut self,
        rel: &str,
        path: &Path,
        link_meta: &Metadata,
    ) -> Option<Result<Walked>> {
        let follow = self.follow.as_ref()?;
        let meta = fs::metadata(path).ok().filter(Metadata::is_dir)?;
        let target = fs::read_link(path).ok()?.to_string_lossy().into_owned();
        let id = (meta.dev(), meta.ino());
        if self.stack.iter().any(|f| f.id == id) {
            return Some(Ok(Walked::NotFollowed {
                rel: rel.to_string(),
                meta: link_meta.clone(),
                target,
                reason: "it leads back to a directory that contains it (a loop)".into(),
            }));
        }
        let inside = fs::canonicalize(path).is_ok_and(|p| p.starts_with(&follow.canonical_root));
        if inside {
            return None;
        }
        let other_device = meta.dev() != follow.root_dev;
        match sorted_names(path) {
            Ok(children) => self.stack.push(Frame {
                rel: rel.to_string(),
                id,
                names: children.into_iter(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Some(Ok(Walked::Vanished {
                    rel: rel.to_string(),
                }));
            }
            Err(e) => {
                return Some(Err(e).with_context(|| {
                    format!("while listing {} (a symlink to {target})", path.display())
                }));
            }
        }
        Some(Ok(Walked::Followed {
            rel: rel.to_string(),
            meta,
            target,
            other_device,
        }))
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
    fn directory_links_out_of_the_tree_are_followed_others_kept_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("att");
        let disk2 = dir.path().join("disk2");
        for d in ["att/1/0", "att/9/x", "disk2/3/0", "disk2/3/1"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(root.join("1/0/1"), "one").unwrap();
        fs::write(disk2.join("3/0/3"), "three").unwrap();
        let link = |target: &Path, at: &str| std::os::unix::fs::symlink(target, root.join(at));
        link(&disk2.join("3"), "3").unwrap();
        link(Path::new("../../1"), "9/x/rel").unwrap();
        link(Path::new("../.."), "9/x/up").unwrap();
        link(Path::new("/nonexistent"), "9/x/dangling").unwrap();
        // A loop through the followed directory, back to itself.
        std::os::unix::fs::symlink(disk2.join("3"), disk2.join("3/1/again")).unwrap();
        let seen: Vec<String> = Walker::with_follow(&root, true)
            .unwrap()
            .map(|w| match w.unwrap() {
                Walked::Entry { rel, meta } if meta.is_dir() => format!("{rel}/"),
                Walked::Entry { rel, meta } if meta.file_type().is_symlink() => format!("{rel}@"),
                Walked::Entry { rel, .. } => rel,
                Walked::Followed { rel, target, .. } => format!("{rel}/ (via {target})"),
                Walked::NotFollowed { rel, reason, .. } => format!("{rel}@ ({reason})"),
                other => panic!("{other:?}"),
            })
            .collect();
        let via = format!("3/ (via {})", disk2.join("3").display());
        assert_eq!(
            seen,
            [
                "1/",
                "1/0/",
                "1/0/1",
                &via,
                "3/0/",
                "3/0/3",
                "3/1/",
                "3/1/again@ (it leads back to a directory that contains it (a loop))",
                "9/",
                "9/x/",
                "9/x/dangling@",
                "9/x/rel@",
                "9/x/up@ (it leads back to a directory that contains it (a loop))",
            ]
        );
        // Without following, the fan-out directory is one link.
        let plain = walk(&root);
        assert!(plain.contains(&"3".to_string()), "{plain:?}");
        assert!(!plain.iter().any(|p| p.starts_with("3/")), "{plain:?}");
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
