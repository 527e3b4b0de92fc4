//! Running the dump command and streaming its output once through a
//! SHA-256 hasher, a zstd compressor and the SQL [`scanner`].

pub mod scanner;
pub mod sql_lexer;
