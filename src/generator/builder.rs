//! The row-and-file emitter behind [`super::generate`] and
//! [`super::add_attachments`]: it walks users, folders, messages and
//! attachments, writing attachment files before the SQL that references them.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::Context;

use rand::{Rng as _, RngExt};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::content::{self, Content, Kind};
use super::files::{self, V1Form};
use super::sql::{SqlWriter, hex_literal, quote};
use super::{
    Cursor, Expected, InstanceInfo, NASTY_BODY, StoreSpec, TAG_ATTACH_DATA, TAG_IMAP_COPY,
};
use crate::dump::scanner::{KopanoVersion, LobInstance, SingleInstanceRow};
use crate::layout::Layout;

const FLAG_DELETED: u16 = 0x400;
const PT_LONG: u16 = 3;
const PT_UNICODE: u16 = 31;
const PR_SUBJECT: u16 = 0x0037;
const PR_BODY: u16 = 0x1000;
const PR_MESSAGE_SIZE: u16 = 0x0E08;
const PR_ATTACH_SIZE: u16 = 0x0E20;
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_DISPLAY_NAME: u16 = 0x3001;

/// An instance that later attachments may share or duplicate.
struct Recent {
    id: u32,
    filename: Option<String>,
    content: Content,
}

/// Emits rows and files; holds the id counters.
pub(super) struct Builder<'a> {
    spec: &'a StoreSpec,
    att: &'a Path,
    guid: &'a [u8],
    rng: ChaCha8Rng,
    exp: &'a mut Expected,
    pub(super) sql: SqlWriter<'a>,
    pub(super) next_hid: u32,
    pub(super) next_inst: u32,
    recent: VecDeque<Recent>,
    new_contents: u64,
    multi_done: u32,
    attachments: u64,
    messages: u64,
    /// add_attachments: one fresh attachment per message, nothing special.
    pub(super) incremental: bool,
    /// Layout::S3: the client and bucket objects are written to.
    s3: Option<(crate::s3::Client, String)>,
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        spec: &'a StoreSpec,
        att: &'a Path,
        guid: &'a [u8],
        rng: ChaCha8Rng,
        exp: &'a mut Expected,
        w: &'a mut dyn std::io::Write,
    ) -> Self {
        Builder {
            spec,
            att,
            guid,
            rng,
            exp,
            sql: SqlWriter::new(w),
            next_hid: 1,
            next_inst: 1,
            recent: VecDeque::new(),
            new_contents: 0,
            multi_done: 0,
            attachments: 0,
            messages: 0,
            incremental: false,
            s3: spec
                .s3
                .as_ref()
                .map(|t| (crate::s3::Client::new(t.config.clone()), t.bucket.clone())),
        }
    }

    /// Layout::S3: writes the object of instance `id` at
    /// `attachment_path/<id>`, byte for byte as Kopano names it.
    fn put_s3(&self, id: u32, data: &[u8]) -> anyhow::Result<()> {
        let Some((client, bucket)) = &self.s3 else {
            anyhow::bail!("an s3 store needs a bucket");
        };
        let key = format!("{}/{id}", self.att.display());
        client.put_bytes(bucket, &key, data)?;
        Ok(())
    }

    fn hid(&mut self) -> u32 {
        self.next_hid += 1;
        self.next_hid - 1
    }

    pub(super) fn header_rows(&mut self, versions: &[KopanoVersion]) -> anyhow::Result<()> {
        let storage = self.spec.layout.to_string();
        let mut source_key = [0u8; 8];
        self.rng.fill_bytes(&mut source_key);
        for (name, value) in [
            ("attachment_storage", storage.as_bytes()),
            ("server_guid", self.guid),
            ("source_key_auto_increment", &source_key[..]),
        ] {
            let row = format!("({},{})", quote(name), hex_literal(value));
            self.sql.row("settings", &row)?;
        }
        for (i, v) in versions.iter().enumerate() {
            let row = format!(
                "({},{},{},{},{},'20{:02}-0{}-15 10:30:00')",
                v.major,
                v.minor,
                v.micro,
                v.revision,
                v.databaserevision,
                15 + i,
                1 + i % 9
            );
            self.sql.row("versions", &row)?;
        }
        // Kopano's built-in SYSTEM user and Everyone group.
        self.sql.row("users", "(1,NULL,65537,'0',0)")?;
        self.sql.row("users", "(2,NULL,196610,'0',0)")?;
        Ok(())
    }

    /// Users with a store, four folders and their messages.
    pub(super) fn users(&mut self) -> anyhow::Result<Cursor> {
        let mut cursor = None;
        for u in 0..self.spec.users {
            let uid = 3 + u;
            let name = if u == 1 {
                "jürgen".to_string()
            } else {
                format!("user{u:03}")
            };
            let sig: u32 = self.rng.random();
            let row = format!("({uid},{},65537,'{sig}',0)", hex_literal(name.as_bytes()));
            self.sql.row("users", &row)?;
            let store = self.hid();
            self.sql
                .row("hierarchy", &format!("({store},NULL,1,0,{uid})"))?;
            let mut store_guid = [0u8; 16];
            self.rng.fill_bytes(&mut store_guid);
            let row = format!(
                "({},{store},{uid},0,{},0,{})",
                u + 1,
                quote(&name),
                hex_literal(&store_guid)
            );
            self.sql.row("stores", &row)?;
            self.text_prop(store, PR_DISPLAY_NAME, &format!("Inbox - {name}"))?;
            let root = self.folder(store, 0, uid, "")?;
            let subtree = self.folder(root, 1, uid, "IPM_SUBTREE")?;
            let inbox = self.folder(subtree, 1, uid, "Inbox")?;
            let sent = self.folder(subtree, 1, uid, "Sent Items")?;
            for m in 0..self.spec.messages_per_user {
                let folder = if m % 4 == 3 { sent } else { inbox };
                self.message(folder, uid, &name)?;
            }
            cursor = Some(Cursor {
                next_hierarchy: 0,
                next_instance: 0,
                folder: inbox,
                owner: uid,
            });
        }
        cursor.context("no users")
    }

    fn folder(&mut self, parent: u32, flags: u16, owner: u32, name: &str) -> anyhow::Result<u32> {
        let id = self.hid();
        let row = format!("({id},{parent},3,{flags},{owner})");
        self.sql.row("hierarchy", &row)?;
        self.text_prop(id, PR_DISPLAY_NAME, name)?;
        Ok(id)
    }

    fn text_prop(&mut self, hid: u32, tag: u16, text: &str) -> anyhow::Result<()> {
        let row = format!(
            "({hid},{tag},{PT_UNICODE},NULL,{},NULL,NULL,NULL,NULL,NULL,0)",
            quote(text)
        );
        Ok(self.sql.row("properties", &row)?)
    }

    fn long_prop(&mut self, hid: u32, tag: u16, value: u64) -> anyhow::Result<()> {
        let v = value.min(u32::MAX as u64);
        let row = format!("({hid},{tag},{PT_LONG},{v},NULL,NULL,NULL,NULL,NULL,NULL,0)");
        Ok(self.sql.row("properties", &row)?)
    }

    /// A message with its text, attachments and maybe an IMAP copy. The first
    /// two messages of a store guarantee every special case appears.
    pub(super) fn message(
        &mut self,
        folder: u32,
        owner: u32,
        owner_name: &str,
    ) -> anyhow::Result<()> {
        let k = self.messages;
        self.messages += 1;
        let special = !self.incremental;
        let deleted = special && (k == 1 || self.rng.random_bool(0.08));
        let flags = if deleted { FLAG_DELETED } else { 0 };
        let hid = self.hid();
        self.sql
            .row("hierarchy", &format!("({hid},{folder},5,{flags},{owner})"))?;
        let subject = content::subject(&mut self.rng, k);
        let mut body = content::message_text(&mut self.rng, self.spec.body_bytes);
        if special && k == 0 {
            body.insert_str(0, NASTY_BODY);
        }
        self.text_prop(hid, PR_SUBJECT, &subject)?;
        self.text_prop(hid, PR_BODY, &body)?;
        self.long_prop(hid, PR_MESSAGE_SIZE, body.len() as u64)?;
        let count = match (self.incremental, k) {
            (true, _) => 1,
            (false, 0) => 3,
            (false, 1) => 2,
            _ => self
                .rng
                .random_range(0..=self.spec.max_attachments_per_message),
        };
        for _ in 0..count {
            self.attachment(hid, flags, owner)?;
        }
        if special && self.spec.imap_copies && (k == 0 || self.rng.random_bool(0.3)) {
            let data = content::rfc822(owner_name, &subject, &body, k);
            self.new_instance(&data, Kind::Text, TAG_IMAP_COPY, hid)?;
        }
        Ok(())
    }

    fn attachment(&mut self, message: u32, flags: u16, owner: u32) -> anyhow::Result<()> {
        let a = self.attachments;
        self.attachments += 1;
        let hid = self.hid();
        self.sql
            .row("hierarchy", &format!("({hid},{message},7,{flags},{owner})"))?;
        let special = !self.incremental && !self.recent.is_empty();
        let share = special && (a == 3 || (a > 4 && self.rng.random_bool(0.08)));
        let dup = special && !share && (a == 4 || (a > 4 && self.rng.random_bool(0.04)));
        let pick = if self.recent.is_empty() {
            0
        } else {
            self.rng.random_range(0..self.recent.len())
        };
        let size = if share {
            // Single-instance sharing: another reference to existing data.
            let r = &self.recent[pick];
            let (id, filename, size) = (r.id, r.filename.clone(), r.content.size);
            self.reference(id, hid, TAG_ATTACH_DATA, filename)?;
            size
        } else {
            // `dup`: same content, new instance (files_v2: one dir, two holders).
            let content = if dup {
                self.recent[pick].content
            } else {
                self.next_content()
            };
            let data = content.bytes();
            let (id, filename) = self.new_instance(&data, content.kind, TAG_ATTACH_DATA, hid)?;
            if !self.incremental {
                self.recent.push_back(Recent {
                    id,
                    filename,
                    content,
                });
                if self.recent.len() > 64 {
                    self.recent.pop_front();
                }
            }
            content.size
        };
        let ext = if size % 3 == 0 { "jpg" } else { "txt" };
        self.text_prop(hid, PR_ATTACH_LONG_FILENAME, &format!("Anhang ü {a}.{ext}"))?;
        self.long_prop(hid, PR_ATTACH_SIZE, size as u64)
    }

    /// A recipe for new attachment data; the first few hit the size edges.
    fn next_content(&mut self) -> Content {
        let n = self.new_contents;
        self.new_contents += 1;
        let seed = self.rng.next_u64();
        let avg = self.spec.attachment_bytes.clamp(1, usize::MAX as u64 / 4) as usize;
        let chunk = self.spec.lob_chunk.max(1);
        let forced = match n {
            _ if self.incremental => None,
            0 => Some((100, Kind::Text)),
            1 => Some((4096, Kind::Text)),
            2 => Some((4097, Kind::Text)),
            3 => Some((chunk, Kind::Text)),
            4 => Some((2 * chunk + 1, Kind::Text)),
            5 => Some(((3 * avg).max(20_000), Kind::Text)),
            6 => Some((avg, Kind::Binary)),
            _ => None,
        };
        let (size, kind) = forced.unwrap_or_else(|| {
            let kind = if self.rng.random_bool(0.3) {
                Kind::Binary
            } else {
                Kind::Text
            };
            let size = if self.rng.random_bool(0.15) {
                self.rng.random_range(1..=4096)
            } else {
                self.rng.random_range(1..=2 * avg)
            };
            (size, kind)
        });
        Content { seed, size, kind }
    }

    /// Stores new data under a new instance id and references it from `hid`.
    fn new_instance(
        &mut self,
        data: &[u8],
        kind: Kind,
        tag: u16,
        hid: u32,
    ) -> anyhow::Result<(u32, Option<String>)> {
        let id = self.next_inst;
        self.next_inst += 1;
        let (filename, path) = match self.spec.layout {
            Layout::FilesV1 { l1, l2 } => {
                let form = self.v1_form(data.len(), kind);
                let rel = files::write_v1(self.att, l1, l2, id, data, form)?;
                self.exp.data_files.push(rel.clone());
                // Kopano leaves the column NULL or empty: have both.
                (
                    if id.is_multiple_of(5) {
                        Some(String::new())
                    } else {
                        None
                    },
                    Some(rel),
                )
            }
            Layout::FilesV2 => {
                let w = files::write_v2(self.att, self.guid, id, data)?;
                if let Some(c) = w.new_content {
                    self.exp.data_files.push(c);
                }
                self.exp.holder_files.push(w.holder);
                let content = PathBuf::from(&w.dir).join("content");
                (Some(w.dir), Some(content))
            }
            Layout::S3 => {
                self.put_s3(id, data)?;
                self.exp.data_files.push(PathBuf::from(id.to_string()));
                (None, None)
            }
            Layout::Database => {
                let chunks = self.lob_rows(id, tag, data)?;
                self.exp.lob.push(LobInstance {
                    instanceid: id,
                    tag,
                    chunks,
                    bytes: data.len() as u64,
                    gap_free: true,
                });
                (
                    if id.is_multiple_of(5) {
                        Some(String::new())
                    } else {
                        None
                    },
                    None,
                )
            }
        };
        let info = InstanceInfo {
            tag,
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
            path,
        };
        self.exp.instances.insert(id, info);
        self.reference(id, hid, tag, filename.clone())?;
        Ok((id, filename))
    }

    fn lob_rows(&mut self, id: u32, tag: u16, data: &[u8]) -> anyhow::Result<u32> {
        let mut n = 0u32;
        for (i, chunk) in data.chunks(self.spec.lob_chunk.max(1)).enumerate() {
            let row = format!("({id},{i},{tag},{})", hex_literal(chunk));
            self.sql.row("lob", &row)?;
            n += 1;
        }
        Ok(n)
    }

    /// Kopano compresses text over 4096 bytes; old versions wrote
    /// multi-member files, and a tree may mix in plain files from times
    /// when compression was off.
    fn v1_form(&mut self, len: usize, kind: Kind) -> V1Form {
        if len <= 4096 || kind == Kind::Binary {
            return V1Form::Plain;
        }
        if self.multi_done < 2 && !self.incremental {
            self.multi_done += 1;
            return V1Form::MultiGzip(1 + self.multi_done as usize);
        }
        match self.rng.random_range(0..100) {
            0..60 => V1Form::Gzip,
            60..70 => V1Form::MultiGzip(2),
            _ => V1Form::Plain,
        }
    }

    fn reference(
        &mut self,
        id: u32,
        hid: u32,
        tag: u16,
        filename: Option<String>,
    ) -> anyhow::Result<()> {
        let f = filename.as_deref().map_or("NULL".to_string(), quote);
        self.sql
            .row("singleinstances", &format!("({id},{hid},{tag},{f})"))?;
        self.exp.singleinstances.push(SingleInstanceRow {
            instanceid: id,
            hierarchyid: hid,
            tag,
            filename,
        });
        self.exp.referenced.insert(id);
        Ok(())
    }

    /// Unreferenced data files (newer than the dump, in a real backup) and
    /// crash leftovers, with ids above every referenced one.
    pub(super) fn extras_and_leftovers(&mut self) -> anyhow::Result<()> {
        let avg = self.spec.attachment_bytes.clamp(1, 1 << 30) as usize;
        for e in 0..self.spec.extras {
            let size = self.rng.random_range(1..=2 * avg);
            let data = Content {
                seed: self.rng.next_u64(),
                size,
                kind: Kind::Text,
            }
            .bytes();
            let id = self.next_inst;
            match self.spec.layout {
                Layout::FilesV1 { l1, l2 } => {
                    let form = if e % 2 == 0 {
                        V1Form::Plain
                    } else {
                        V1Form::Gzip
                    };
                    let rel = files::write_v1(self.att, l1, l2, id, &data, form)?;
                    self.exp.extra_files.push(rel);
                }
                Layout::FilesV2 => {
                    let w = files::write_v2(self.att, self.guid, id, &data)?;
                    self.exp.extra_files.extend(w.new_content);
                    self.exp.extra_files.push(w.holder);
                }
                Layout::S3 => {
                    self.put_s3(id, &data)?;
                    self.exp.extra_files.push(PathBuf::from(id.to_string()));
                }
                Layout::Database => break,
            }
            self.next_inst += 1;
        }
        if !self.spec.leftovers || self.spec.layout == Layout::S3 {
            return Ok(());
        }
        files::write_file(&self.att.join("testfile"), b"")?;
        self.exp.leftover_files.push("testfile".into());
        if let Layout::FilesV1 { l1, l2 } = self.spec.layout {
            let data = Content {
                seed: self.rng.next_u64(),
                size: 5000,
                kind: Kind::Text,
            }
            .bytes();
            for gz in [false, true] {
                let id = self.next_inst;
                self.next_inst += 1;
                let dir = Layout::v1_dir(l1, l2, id);
                let (rel, bytes) = if gz {
                    (dir.join(format!("{id}.gz.deleted")), files::gzip(&data, 1)?)
                } else {
                    (dir.join(format!("{id}.deleted")), data.clone())
                };
                files::write_file(&self.att.join(&rel), &bytes)?;
                self.exp.leftover_files.push(rel);
            }
        }
        Ok(())
    }
}
