use std::collections::HashMap;
use std::fs;

use super::*;
use crate::error::{Exit, exit_for};

/// A temporary folder with a fake environment; nothing here reads the real
/// environment or /etc.
struct Fixture {
    dir: tempfile::TempDir,
    vars: HashMap<String, OsString>,
}

impl Fixture {
    /// Default server.cfg exists (empty), default TOML file does not.
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
            vars: HashMap::new(),
        };
        f.write("etc/kopano/server.cfg", "");
        f
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn set_var(&mut self, name: &str, value: &Path) {
        self.vars.insert(name.to_owned(), value.into());
    }

    fn load(&self, o: &Overrides) -> anyhow::Result<Settings> {
        let tool_config = self.path("etc/kcbackup/kcbackup.toml");
        let server_cfg = self.path("etc/kopano/server.cfg");
        let var = |name: &str| self.vars.get(name).cloned();
        let env = Environment {
            var: &var,
            tool_config: &tool_config,
            server_cfg: &server_cfg,
        };
        Settings::load_in(o, &env)
    }
}

fn with_config(path: PathBuf) -> Overrides {
    Overrides {
        config: Some(path),
        ..Overrides::default()
    }
}

fn message(err: &anyhow::Error) -> String {
    format!("{err:#}")
}

#[test]
fn missing_default_tool_config_means_kopano_defaults() {
    let f = Fixture::new();
    let s = f.load(&Overrides::default()).unwrap();
    assert_eq!(s.config_file, None);
    assert_eq!(s.server_cfg, f.path("etc/kopano/server.cfg"));
    assert_eq!(s.config_dir, f.path("etc/kopano"));
    assert_eq!(s.repository, RepoSpec::Local("/var/lib/kcbackup".into()));
    assert_eq!(s.snapshot, SnapshotMethod::Auto);
    assert_eq!(s.attachment_storage, "auto");
    assert_eq!(
        s.attachment_path,
        PathBuf::from("/var/lib/kopano/attachments")
    );
    let m = &s.mysql;
    assert_eq!(
        (m.host.as_str(), m.port, m.user.as_str()),
        ("localhost", 3306, "root")
    );
    assert_eq!((m.password.expose(), m.database.as_str()), ("", "kopano"));
    assert_eq!((m.socket.clone(), m.dump_command.clone()), (None, None));
}

#[test]
fn default_tool_config_is_read_when_present() {
    let f = Fixture::new();
    let toml = f.write(
        "etc/kcbackup/kcbackup.toml",
        "[snapshot]\nmethod = \"none\"\n",
    );
    let s = f.load(&Overrides::default()).unwrap();
    assert_eq!(s.config_file, Some(toml));
    assert_eq!(s.snapshot, SnapshotMethod::None);
}

#[test]
fn server_cfg_overrides_kopano_defaults() {
    let f = Fixture::new();
    f.write(
        "etc/kopano/server.cfg",
        "mysql_host = db.example\nmysql_port = 3307\nmysql_user = kopano\n\
         mysql_password = p#w = x\nmysql_database = kc\nmysql_socket = /run/m.sock\n\
         attachment_storage = files\nattachment_path = /srv/att\n",
    );
    let s = f.load(&Overrides::default()).unwrap();
    let m = &s.mysql;
    assert_eq!(
        (m.host.as_str(), m.port, m.user.as_str()),
        ("db.example", 3307, "kopano")
    );
    assert_eq!(
        (m.password.expose(), m.database.as_str()),
        ("p#w = x", "kc")
    );
    assert_eq!(m.socket, Some(PathBuf::from("/run/m.sock")));
    assert_eq!(s.attachment_storage, "files");
    assert_eq!(s.attachment_path, PathBuf::from("/srv/att"));
}

#[test]
fn empty_mysql_socket_means_client_default() {
    let f = Fixture::new();
    f.write("etc/kopano/server.cfg", "mysql_socket =\n");
    assert_eq!(f.load(&Overrides::default()).unwrap().mysql.socket, None);
}

#[test]
fn tool_config_overrides_server_cfg() {
    let f = Fixture::new();
    f.write(
        "etc/kopano/server.cfg",
        "mysql_host = a\nmysql_port = 1\nmysql_user = a\nmysql_password = a\n\
         mysql_database = a\nmysql_socket = /a\nattachment_storage = files\n\
         attachment_path = /a\n",
    );
    f.write("secret/pw", "from-file\n");
    let toml = f.write(
        "conf/kcbackup.toml",
        "[kopano]\nattachment_path = \"/b\"\nattachment_storage = \"files_v2\"\n\
         [mysql]\nhost = \"b\"\nport = 2\nuser = \"b\"\ndatabase = \"b\"\n\
         socket = \"/b.sock\"\npassword_file = \"../secret/pw\"\ndump_command = \"mysqldump\"\n",
    );
    let s = f.load(&with_config(toml.clone())).unwrap();
    assert_eq!(s.config_file, Some(toml));
    let m = &s.mysql;
    assert_eq!((m.host.as_str(), m.port, m.user.as_str()), ("b", 2, "b"));
    assert_eq!(
        (m.password.expose(), m.database.as_str()),
        ("from-file", "b")
    );
    assert_eq!(m.socket, Some(PathBuf::from("/b.sock")));
    assert_eq!(m.dump_command.as_deref(), Some("mysqldump"));
    assert_eq!(s.attachment_storage, "files_v2");
    assert_eq!(s.attachment_path, PathBuf::from("/b"));
}

#[test]
fn empty_socket_in_tool_config_cancels_server_cfg_socket() {
    let f = Fixture::new();
    f.write("etc/kopano/server.cfg", "mysql_socket = /a.sock\n");
    let toml = f.write("k.toml", "[mysql]\nsocket = \"\"\n");
    assert_eq!(f.load(&with_config(toml)).unwrap().mysql.socket, None);
}

#[test]
fn command_line_overrides_tool_config() {
    let f = Fixture::new();
    let toml = f.write(
        "k.toml",
        "[repository]\npath = \"/t\"\n[snapshot]\nmethod = \"lvm\"\n",
    );
    let s = f.load(&with_config(toml.clone())).unwrap();
    assert_eq!(
        (s.repository, s.snapshot),
        (RepoSpec::Local("/t".into()), SnapshotMethod::Lvm)
    );
    let o = Overrides {
        config: Some(toml),
        snapshot: Some(SnapshotMethod::Btrfs),
        repository: Some("/cli".into()),
        repository_only: false,
    };
    let s = f.load(&o).unwrap();
    assert_eq!(
        (s.repository, s.snapshot),
        (RepoSpec::Local("/cli".into()), SnapshotMethod::Btrfs)
    );
}

#[test]
fn config_flag_beats_env_which_beats_default() {
    let mut f = Fixture::new();
    f.write(
        "etc/kcbackup/kcbackup.toml",
        "[repository]\npath = \"/default\"\n",
    );
    assert_eq!(
        f.load(&Overrides::default()).unwrap().repository,
        RepoSpec::Local("/default".into())
    );
    let env_file = f.write("env.toml", "[repository]\npath = \"/env\"\n");
    f.set_var("KCBACKUP_CONFIG", &env_file);
    assert_eq!(
        f.load(&Overrides::default()).unwrap().repository,
        RepoSpec::Local("/env".into())
    );
    let flag_file = f.write("flag.toml", "[repository]\npath = \"/flag\"\n");
    assert_eq!(
        f.load(&with_config(flag_file)).unwrap().repository,
        RepoSpec::Local("/flag".into())
    );
}

#[test]
fn missing_config_named_by_flag_is_a_config_error() {
    let f = Fixture::new();
    let err = f.load(&with_config(f.path("nope.toml"))).unwrap_err();
    assert!(message(&err).contains("nope.toml"), "{}", message(&err));
    assert!(message(&err).contains("--config"), "{}", message(&err));
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn missing_config_named_by_env_is_a_config_error() {
    let mut f = Fixture::new();
    f.set_var("KCBACKUP_CONFIG", &f.path("nope.toml"));
    let err = f.load(&Overrides::default()).unwrap_err();
    assert!(message(&err).contains("nope.toml"), "{}", message(&err));
    assert!(
        message(&err).contains("KCBACKUP_CONFIG"),
        "{}",
        message(&err)
    );
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn unknown_key_is_a_config_error_naming_key_and_file() {
    let f = Fixture::new();
    let toml = f.write("k.toml", "[repository]\nreposity = \"/x\"\n");
    let err = f.load(&with_config(toml.clone())).unwrap_err();
    let msg = message(&err);
    assert!(
        msg.contains("reposity") && msg.contains(&toml.display().to_string()),
        "{msg}"
    );
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn kopano_config_path_locates_server_cfg() {
    let mut f = Fixture::new();
    f.write("other/server.cfg", "mysql_user = other\n");
    f.set_var("KOPANO_CONFIG_PATH", &f.path("other"));
    let s = f.load(&Overrides::default()).unwrap();
    assert_eq!(s.server_cfg, f.path("other/server.cfg"));
    assert_eq!(s.config_dir, f.path("other"));
    assert_eq!(s.mysql.user, "other");
}

#[test]
fn tool_server_cfg_beats_kopano_config_path() {
    let mut f = Fixture::new();
    f.set_var("KOPANO_CONFIG_PATH", &f.path("other"));
    f.write("mine/server.cfg", "mysql_user = mine\n");
    let toml = f.write(
        "k.toml",
        "[kopano]\nserver_cfg = \"mine/server.cfg\"\nconfig_dir = \"/cd\"\n",
    );
    let s = f.load(&with_config(toml)).unwrap();
    assert_eq!(s.server_cfg, f.path("mine/server.cfg"));
    assert_eq!(s.config_dir, PathBuf::from("/cd"));
    assert_eq!(s.mysql.user, "mine");
}

#[test]
fn missing_server_cfg_says_where_and_how_to_fix() {
    let f = Fixture::new();
    fs::remove_file(f.path("etc/kopano/server.cfg")).unwrap();
    let err = f.load(&Overrides::default()).unwrap_err();
    let msg = message(&err);
    assert!(
        msg.contains(&f.path("etc/kopano/server.cfg").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("[kopano] server_cfg"), "{msg}");
    assert!(msg.contains("kcbackup.toml"), "{msg}");
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn bad_mysql_port_names_setting_and_file() {
    let f = Fixture::new();
    let cfg = f.write("etc/kopano/server.cfg", "mysql_port = 33o6\n");
    let err = f.load(&Overrides::default()).unwrap_err();
    let msg = message(&err);
    assert!(
        msg.contains("mysql_port") && msg.contains(&cfg.display().to_string()),
        "{msg}"
    );
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn tool_port_overrides_a_bad_server_cfg_port() {
    let f = Fixture::new();
    f.write("etc/kopano/server.cfg", "mysql_port = nonsense\n");
    let toml = f.write("k.toml", "[mysql]\nport = 3310\n");
    assert_eq!(f.load(&with_config(toml)).unwrap().mysql.port, 3310);
}

#[test]
fn password_file_loses_exactly_one_line_end() {
    let f = Fixture::new();
    let toml = f.write("k.toml", "[mysql]\npassword_file = \"pw\"\n");
    for (content, expected) in [
        ("a b", "a b"),
        ("pw\n", "pw"),
        ("pw\r\n", "pw"),
        ("pw\n\n", "pw\n"),
        (" pw \r", " pw \r"),
    ] {
        f.write("pw", content);
        let s = f.load(&with_config(toml.clone())).unwrap();
        assert_eq!(s.mysql.password.expose(), expected, "{content:?}");
    }
}

#[test]
fn unreadable_password_file_is_named_but_not_shown() {
    let f = Fixture::new();
    let toml = f.write("k.toml", "[mysql]\npassword_file = \"pw\"\n");
    let err = f.load(&with_config(toml.clone())).unwrap_err();
    assert!(message(&err).contains(&f.path("pw").display().to_string()));
    assert_eq!(exit_for(&err), Exit::Usage);

    fs::write(f.path("pw"), b"hunter2\xff\n").unwrap();
    let err = f.load(&with_config(toml)).unwrap_err();
    let msg = message(&err);
    assert!(msg.contains(&f.path("pw").display().to_string()), "{msg}");
    assert!(
        !msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{msg}"
    );
}

#[test]
fn non_utf8_password_in_server_cfg_is_refused_without_showing_it() {
    let f = Fixture::new();
    fs::write(
        f.path("etc/kopano/server.cfg"),
        b"mysql_password = hunter2\xe9\n",
    )
    .unwrap();
    let msg = message(&f.load(&Overrides::default()).unwrap_err());
    assert!(
        msg.contains("mysql_password") && !msg.contains("hunter2"),
        "{msg}"
    );
}

#[test]
fn debug_output_never_shows_the_password() {
    let f = Fixture::new();
    f.write("etc/kopano/server.cfg", "mysql_password = s3cr3t-pw\n");
    let s = f.load(&Overrides::default()).unwrap();
    assert_eq!(s.mysql.password.expose(), "s3cr3t-pw");
    let shown = format!("{s:?} {s:#?}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
}

#[test]
fn relative_paths_in_toml_follow_the_toml_folder() {
    let f = Fixture::new();
    f.write("conf/kopano/server.cfg", "");
    let toml = f.write(
        "conf/kcbackup.toml",
        "[kopano]\nserver_cfg = \"kopano/server.cfg\"\nattachment_path = \"att\"\n\
         [repository]\npath = \"repo\"\n",
    );
    let s = f.load(&with_config(toml)).unwrap();
    assert_eq!(s.server_cfg, f.path("conf/kopano/server.cfg"));
    assert_eq!(s.config_dir, f.path("conf/kopano"));
    assert_eq!(s.attachment_path, f.path("conf/att"));
    assert_eq!(s.repository, RepoSpec::Local(f.path("conf/repo")));
}

#[test]
fn server_cfg_includes_are_followed() {
    let f = Fixture::new();
    f.write(
        "etc/kopano/server.cfg",
        "mysql_user = main\n!include db.cfg\n",
    );
    f.write("etc/kopano/db.cfg", "mysql_user = included\n");
    assert_eq!(
        f.load(&Overrides::default()).unwrap().mysql.user,
        "included"
    );
}

#[test]
fn empty_env_var_counts_as_unset() {
    let mut f = Fixture::new();
    f.set_var("KOPANO_CONFIG_PATH", Path::new(""));
    f.set_var("KCBACKUP_CONFIG", Path::new(""));
    let s = f.load(&Overrides::default()).unwrap();
    assert_eq!(
        (s.config_file, s.server_cfg),
        (None, f.path("etc/kopano/server.cfg"))
    );
}

#[test]
fn lvm_size_accepts_units_and_rejects_nonsense() {
    assert_eq!(tool::parse_size("2G"), Some(2 << 30));
    assert_eq!(tool::parse_size("512 MiB"), Some(512 << 20));
    assert_eq!(tool::parse_size("1.5g"), Some(3 << 29));
    assert_eq!(tool::parse_size("4096"), Some(4096));
    assert_eq!(tool::parse_size("lots"), None);
    assert_eq!(tool::parse_size("2X"), None);
    assert_eq!(tool::parse_size("0"), None);
}

#[test]
fn mysql_timeouts_default_to_30_and_600_seconds_and_are_configurable() {
    use std::time::Duration;
    let f = Fixture::new();
    let t = f.load(&Overrides::default()).unwrap().mysql.timeouts;
    assert_eq!(t.connect, Duration::from_secs(30));
    assert_eq!(t.stall, Duration::from_secs(600));
    let toml = f.write(
        "k.toml",
        "[mysql]\nconnect_timeout_s = 3\nstall_timeout_s = 7\n",
    );
    let t = f.load(&with_config(toml)).unwrap().mysql.timeouts;
    assert_eq!(
        (t.connect, t.stall),
        (Duration::from_secs(3), Duration::from_secs(7))
    );
    let toml = f.write("zero.toml", "[mysql]\nconnect_timeout_s = 0\n");
    let err = f.load(&with_config(toml)).unwrap_err();
    assert!(
        message(&err).contains("[mysql] connect_timeout_s = 0"),
        "{err:#}"
    );
    assert_eq!(exit_for(&err), Exit::Usage);
}

#[test]
fn s3_settings_come_from_server_cfg_with_kopanos_rules() {
    let f = Fixture::new();
    f.write(
        "etc/kopano/server.cfg",
        "attachment_s3_hostname = s3.example:9000\n\
         attachment_s3_protocol = http\n\
         attachment_s3_uristyle = path\n\
         attachment_s3_bucketname = kopano\n\
         attachment_s3_accesskeyid = AKID\n\
         attachment_s3_secretaccesskey = se#cr=et\n",
    );
    let s = f.load(&Overrides::default()).unwrap();
    assert!(s.s3.path_style);
    assert_eq!(s.s3.secret.expose(), "se#cr=et");
    assert_eq!(s.s3.downloads, s3::DEFAULT_DOWNLOADS);
    let config = s.s3.client_config().unwrap();
    assert_eq!(config.retries, crate::s3::DEFAULT_RETRIES);
    assert_eq!(config.endpoint.to_string(), "http://s3.example:9000");
    assert_eq!(config.signing_region(), crate::s3::DEFAULT_REGION);
    assert!(!format!("{s:?}").contains("se#cr=et"));
}

#[test]
fn s3_overrides_in_the_tool_config_win_and_the_secret_comes_from_a_file() {
    let f = Fixture::new();
    f.write(
        "etc/kopano/server.cfg",
        "attachment_s3_hostname = old.example\n\
         attachment_s3_bucketname = kopano\n\
         attachment_s3_accesskeyid = OLD\n\
         attachment_s3_secretaccesskey = old-secret\n",
    );
    f.write("etc/kcbackup/s3.secret", "new-secret\n");
    let toml = f.write(
        "etc/kcbackup/kcbackup.toml",
        "[s3]\nendpoint = \"http://127.0.0.1:8333\"\nregion = \"eu-west-1\"\n\
         access_key_id = \"NEW\"\nsecret_access_key_file = \"s3.secret\"\n\
         path_style = true\ndownloads = 8\nretries = 7\n",
    );
    let s = f.load(&with_config(toml)).unwrap();
    let config = s.s3.client_config().unwrap();
    assert_eq!(config.retries, 7);
    assert_eq!(config.endpoint.to_string(), "http://127.0.0.1:8333");
    assert_eq!(config.signing_region(), "eu-west-1");
    assert_eq!(config.access_key_id, "NEW");
    assert_eq!(config.secret.expose(), "new-secret");
    assert!(config.path_style);
    assert_eq!(s.s3.downloads, 8);
    // Kopano's default is virtual-host style over https.
    let f = Fixture::new();
    f.write(
        "etc/kopano/server.cfg",
        "attachment_s3_hostname = s3.example\n",
    );
    let s = f.load(&Overrides::default()).unwrap();
    assert!(!s.s3.path_style);
    let err = s.s3.client_config().unwrap_err();
    assert!(err.0.contains("attachment_s3_bucketname"), "{}", err.0);
}
