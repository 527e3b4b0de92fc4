//! `kcbackup generate`: man pages and shell completions made from the clap
//! definitions, so they never drift from `--help`. Hidden; `make deb` runs
//! it (ripgrep's approach) and the package ships what it writes.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The manual section: kcbackup is installed in /usr/sbin.
pub const MAN_SECTION: &str = "8";

/// Writes `kcbackup.8` and one `kcbackup-<command>.8` per visible
/// subcommand into `dir` (created if missing); returns the files written.
pub fn man_pages(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    cmd: clap::Command,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd)
        .section(MAN_SECTION)
        .manual("System Administration");
    let path = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text)
        .with_context(|| format!("while rendering {}", path.display()))?;
    fs::write(&path, text).with_context(|| format!("while writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "kcbackup", out);
    out.flush().context("while writing the completion script")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_visible_command_and_not_generate() {
        let dir = tempfile::tempdir().unwrap();
        let files = man_pages(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["kcbackup.8", "kcbackup-backup.8", "kcbackup-drill.8"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let main = fs::read_to_string(dir.path().join("kcbackup.8")).unwrap();
        assert!(main.starts_with(".ie"), "not roff: {}", &main[..40]);
        assert!(main.contains("Exit codes"), "{main}");
    }

    #[test]
    fn the_cli_definition_is_consistent_and_q_v_set_the_log_level() {
        use clap::Parser;
        Cli::command().debug_assert();
        let level = |args: &[&str]| Cli::parse_from(args).log_level();
        assert_eq!(level(&["kcbackup", "list"]), "warn");
        assert_eq!(level(&["kcbackup", "-q", "list"]), "error");
        assert_eq!(level(&["kcbackup", "list", "-v"]), "info");
        assert_eq!(level(&["kcbackup", "-vv", "verify"]), "debug");
        assert!(Cli::try_parse_from(["kcbackup", "-q", "-v", "list"]).is_err());
    }

    #[test]
    fn completions_name_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("drill"), "{shell}: {text}");
        }
    }
}
