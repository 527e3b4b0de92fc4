//! `kcbackup demo`: a newcomer sees the tool work in one command. It starts a
//! throwaway MariaDB with a generated Kopano store in a temporary directory,
//! backs it up with the real procedure, verifies the set, drills a
//! restore of it, and cleans everything up.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use super::backup::{self, BackupOptions, BackupReport};
use crate::generator::{self, StoreSpec};
use crate::layout::Layout;
use crate::progress::Progress;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::settings::{Overrides, Settings};

#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Leave the temporary directory behind (server stopped).
    pub keep: bool,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// The temporary directory (removed unless `--keep`).
    pub dir: PathBuf,
    pub kept: bool,
    pub store: StoreSummary,
    pub backup: BackupReport,
    pub verify: super::verify::VerifyReport,
    pub drill: super::drill::DrillReport,
}

impl DemoReport {
    /// Backed up complete, verified clean, drilled successfully.
    pub fn ok(&self) -> bool {
        self.backup.status == crate::repo::manifest::SetStatus::Complete
            && self.verify.ok
            && self.drill.ok
    }
}

#[derive(Debug, Serialize)]
pub struct StoreSummary {
    pub storage_backend: String,
    pub referenced_instances: usize,
    pub tables: usize,
}

pub fn run(opts: &DemoOptions, progress: &dyn Progress) -> Result<DemoReport> {
    let dir = tempfile::Builder::new()
        .prefix("kcbackup-demo-")
        .tempdir()
        .context("while creating the demo directory")?;
    let sandbox = Sandbox::start(&SandboxOptions {
        keep: opts.keep,
        ..Default::default()
    })
    .context("while starting the throwaway MariaDB server")?;

    let spec = StoreSpec::small(Layout::FilesV1 { l1: 10, l2: 20 }, "kopano");
    let store = generator::generate(&sandbox, &dir.path().join("kopano"), &spec)
        .context("while generating the demo Kopano store")?;

    let config = store.write_tool_config(dir.path(), &dir.path().join("repository"))?;
    let settings = Settings::load(&Overrides {
        config: Some(config),
        ..Default::default()
    })?;
    let backup = backup::run(&settings, &BackupOptions::default(), progress)?;
    let verify = super::verify::run(
        &settings,
        &super::verify::VerifyOptions {
            set: backup.set.clone(),
        },
        progress,
    )?;
    let drill = super::drill::run(
        &settings,
        &super::drill::DrillOptions {
            set: backup.set.clone(),
            ..Default::default()
        },
    )?;

    sandbox.stop()?;
    let path = dir.path().to_path_buf();
    if opts.keep {
        let _ = dir.keep();
    }
    Ok(DemoReport {
        dir: path,
        kept: opts.keep,
        store: StoreSummary {
            storage_backend: store.expected.attachment_storage.clone(),
            referenced_instances: store.expected.referenced.len(),
            tables: store.expected.row_counts.len(),
        },
        backup,
        verify,
        drill,
    })
}
