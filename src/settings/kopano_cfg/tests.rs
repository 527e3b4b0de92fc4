use std::fs;
use std::path::Path;

use super::*;
use crate::error::{Exit, exit_for};

fn parse(text: &str) -> KopanoCfg {
    KopanoCfg::parse_str(text, Path::new("/nonexistent")).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn splits_at_first_equals_sign() {
    let cfg = parse("mysql_password = a=b = c\n");
    assert_eq!(cfg.get("mysql_password"), Some("a=b = c"));
}

#[test]
fn trims_blanks_on_both_sides_but_keeps_inner_ones() {
    let cfg = parse(" \t name \t=\t  two  words \r\n");
    assert_eq!(cfg.get("name"), Some("two  words"));
}

#[test]
fn crlf_files_lose_their_cr() {
    let cfg = parse("a = 1\r\nb = 2\r\n");
    assert_eq!(cfg.get("a"), Some("1"));
    assert_eq!(cfg.get("b"), Some("2"));
}

#[test]
fn hash_at_line_start_is_a_comment() {
    let cfg = parse("#a = 1\n");
    assert_eq!(cfg.get("#a"), None);
    assert_eq!(cfg.get("a"), None);
}

#[test]
fn hash_after_leading_blanks_is_a_comment() {
    let cfg = parse("  \t# a = 1\n");
    assert_eq!(cfg.get("# a"), None);
    assert_eq!(cfg.get("a"), None);
}

#[test]
fn no_inline_comments() {
    let cfg = parse("mysql_password = a#b # not a comment\n");
    assert_eq!(cfg.get("mysql_password"), Some("a#b # not a comment"));
}

#[test]
fn quotes_and_backslashes_are_literal() {
    let cfg = parse(r#"p = "it's" \n\t\\ 'x'"#);
    assert_eq!(cfg.get("p"), Some(r#""it's" \n\t\\ 'x'"#));
}

#[test]
fn lines_without_equals_and_empty_names_are_ignored() {
    let cfg = parse("just words\n= orphan value\nx = 1\n");
    assert_eq!(cfg.get("just words"), None);
    assert_eq!(cfg.get(""), None);
    assert_eq!(cfg.get("x"), Some("1"));
}

#[test]
fn empty_value_is_present_and_empty() {
    let cfg = parse("mysql_socket =\n");
    assert_eq!(cfg.get("mysql_socket"), Some(""));
}

#[test]
fn names_are_case_sensitive() {
    let cfg = parse("MySQL_Host = db\n");
    assert_eq!(cfg.get("mysql_host"), None);
    assert_eq!(cfg.get("MySQL_Host"), Some("db"));
}

#[test]
fn later_settings_override_earlier_ones() {
    let cfg = parse("a = 1\na = 2\n");
    assert_eq!(cfg.get("a"), Some("2"));
}

#[test]
fn get_or_falls_back_only_when_absent() {
    let cfg = parse("a =\n");
    assert_eq!(cfg.get_or("a", "d"), "");
    assert_eq!(cfg.get_or("b", "d"), "d");
}

#[test]
fn bool_values_follow_kopano() {
    for v in ["0", "false", "FALSE", "No", "no"] {
        assert!(!bool_value(v), "{v} should be false");
    }
    for v in ["", "1", "yes", "true", "off", " no", "nope"] {
        assert!(bool_value(v), "{v:?} should be true");
    }
}

#[test]
fn line_of_max_length_is_accepted() {
    let line = format!("k = {}", "v".repeat(MAX_LINE - 4));
    assert_eq!(line.len(), MAX_LINE);
    let cfg = parse(&format!("{line}\n"));
    assert_eq!(cfg.get("k").unwrap().len(), MAX_LINE - 4);
}

#[test]
fn longer_line_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("a = 1\nk = {}\n", "v".repeat(MAX_LINE));
    let path = write(dir.path(), "server.cfg", &text);
    let err = KopanoCfg::read(&path).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn include_is_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "etc/server.cfg", "!include sub/a.cfg\n");
    write(dir.path(), "etc/sub/a.cfg", "!include b.cfg\na = 1\n");
    write(dir.path(), "etc/sub/b.cfg", "b = 2\n");
    let cfg = KopanoCfg::read(&main).unwrap();
    assert_eq!(cfg.get("a"), Some("1"));
    assert_eq!(cfg.get("b"), Some("2"));
    assert_eq!(cfg.files().len(), 3);
}

#[test]
fn include_of_an_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let inc = write(dir.path(), "elsewhere/x.cfg", "x = abs\n");
    let main = write(
        dir.path(),
        "etc/server.cfg",
        &format!("!include\t{}\n", inc.display()),
    );
    assert_eq!(KopanoCfg::read(&main).unwrap().get("x"), Some("abs"));
}

#[test]
fn include_takes_effect_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inc.cfg", "a = inc\nb = inc\n");
    let main = write(
        dir.path(),
        "main.cfg",
        "a = main\n!include inc.cfg\nb = main\n",
    );
    let cfg = KopanoCfg::read(&main).unwrap();
    assert_eq!(cfg.get("a"), Some("inc"));
    assert_eq!(cfg.get("b"), Some("main"));
}

#[test]
fn parse_str_resolves_includes_against_base_dir() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inc.cfg", "a = inc\n");
    let cfg = KopanoCfg::parse_str("!include inc.cfg\n", dir.path()).unwrap();
    assert_eq!(cfg.get("a"), Some("inc"));
}

#[test]
fn include_cycles_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.cfg", "x = a\n!include b.cfg\n");
    write(dir.path(), "b.cfg", "y = b\n!include a.cfg\n");
    let cfg = KopanoCfg::read(&a).unwrap();
    assert_eq!((cfg.get("x"), cfg.get("y")), (Some("a"), Some("b")));
    assert_eq!(cfg.files().len(), 2);
}

#[test]
fn a_file_already_read_is_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inc.cfg", "a = inc\n");
    let main = write(
        dir.path(),
        "main.cfg",
        "!include inc.cfg\na = main\n!include ./inc.cfg\n",
    );
    assert_eq!(KopanoCfg::read(&main).unwrap().get("a"), Some("main"));
}

#[test]
fn missing_include_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "main.cfg", "a = 1\n!include nothere.cfg\n");
    let err = KopanoCfg::read(&main).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("nothere.cfg"), "{msg}");
    assert!(
        msg.contains(&format!("while reading {}", main.display())),
        "{msg}"
    );
    assert!(msg.contains("line 2"), "{msg}");
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn error_in_included_file_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let inc = write(dir.path(), "inc.cfg", "!include gone.cfg\n");
    let main = write(dir.path(), "main.cfg", "!include inc.cfg\n");
    let msg = format!("{:#}", KopanoCfg::read(&main).unwrap_err());
    assert!(msg.contains(&main.display().to_string()), "{msg}");
    assert!(msg.contains(&inc.display().to_string()), "{msg}");
    assert!(msg.contains("gone.cfg"), "{msg}");
}

#[test]
fn include_without_file_name_is_an_error() {
    let err = KopanoCfg::parse_str("!include  \n", Path::new("/")).unwrap_err();
    assert!(format!("{err:#}").contains("without a file name"));
}

#[test]
fn indented_include_is_not_a_directive() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "inc.cfg", "a = inc\n");
    let cfg = KopanoCfg::parse_str("  !include inc.cfg\n", dir.path()).unwrap();
    assert_eq!(cfg.get("a"), None);
}

#[test]
fn other_directives_are_ignored() {
    let cfg = parse("!propmap /usr/share/kopano/ldap.propmap.cfg\n!x = y\na = 1\n");
    assert_eq!(cfg.get("a"), Some("1"));
    assert_eq!(cfg.get("!x"), None);
}

#[test]
fn missing_main_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.cfg");
    let msg = format!("{:#}", KopanoCfg::read(&path).unwrap_err());
    assert!(
        msg.contains(&format!("while reading {}", path.display())),
        "{msg}"
    );
}

#[test]
fn non_utf8_values_are_kept_as_bytes_and_shown_lossily() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.cfg");
    fs::write(&path, b"mysql_password = caf\xe9\n").unwrap();
    let cfg = KopanoCfg::read(&path).unwrap();
    assert_eq!(cfg.get_bytes("mysql_password"), Some(&b"caf\xe9"[..]));
    assert_eq!(cfg.get("mysql_password"), Some("caf\u{fffd}"));
    assert_eq!(
        cfg.get_path("mysql_password")
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"caf\xe9"
    );
}

#[test]
fn debug_output_hides_values() {
    let cfg = parse("mysql_password = hunter2\n");
    let shown = format!("{cfg:?}");
    assert!(shown.contains("mysql_password"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
