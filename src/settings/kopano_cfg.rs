//! Reader for Kopano's `server.cfg` syntax (kopano-facts.md, section 1):
//! split at the first `=`, no inline comments, `!include` relative to the
//! including file, later settings win.
