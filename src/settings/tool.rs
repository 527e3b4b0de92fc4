//! The tool's own TOML configuration (`/etc/kcbackup/kcbackup.toml`).
//! Unknown keys are errors, so that a typo never silently falls back.
