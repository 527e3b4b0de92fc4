//! Restoring a set: the dump into a database, objects into an attachment
//! tree, the config archive into a directory. Every path is checked first.

pub mod bucket;
pub mod checks;
pub mod config;
pub mod database;
pub mod files;
pub mod parallel;
pub mod paths;
pub mod s3;
pub mod split;
