//! kcbackup: consistent, verifiable backups of a Kopano Core server.
//!
//! The database is dumped first (one `--single-transaction` dump, streamed
//! through a hasher, a compressor and a scanner), then the attachment store
//! and `/etc/kopano` are captured; the manifest, written last, proves that
//! every attachment the dump references is present.
//!
//! Main types: [`settings::Settings`] (validated configuration),
//! [`dump::DumpReport`] (what the dump produced), [`repo::Repository`]
//! (sets, objects, lock) and [`repo::manifest::Manifest`].

pub mod cli;
pub mod commands;
pub mod dump;
pub mod error;
pub mod generator;
pub mod layout;
pub mod mysql;
pub mod output;
pub mod progress;
pub mod repo;
pub mod sandbox;
pub mod settings;
