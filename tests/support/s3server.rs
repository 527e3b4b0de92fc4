//! Real S3 servers for the tests: SeaweedFS (`weed mini`, checks SigV4
//! signatures, supports versioning) and moto (keeps a leading `/` in keys,
//! as AWS does), from the project's `.venv` (`scripts/install-deps --tests`).
//! Each runs on free 127.0.0.1 ports in a temporary directory under the
//! sandbox's supervisor, which stops it and removes the directory when the
//! server is dropped or the test binary exits in any way.
#![allow(dead_code)] // each test binary uses a different part

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kcbackup::s3::{Client, Endpoint, S3Config};
use kcbackup::sandbox::{process_alive, read_pid_line, spawn_supervised};
use kcbackup::settings::Secret;

/// The identity SeaweedFS is configured with; moto accepts any.
pub const ACCESS_KEY: &str = "KCBACKUPTESTKEY";
pub const SECRET_KEY: &str = "kcbackup-test-secret-0f3a9c51e7";
const START_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Seaweed,
    Moto,
}

/// One running server; stopped and removed when dropped.
pub struct S3Server {
    pub kind: Kind,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub pid: u32,
    dir: PathBuf,
    supervisor: Option<Child>,
}

/// The project's virtual environment's `bin/NAME`, if installed.
pub fn venv_bin(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    path.exists().then_some(path)
}

/// Whether the servers can run here; when they cannot, prints SKIPPED and
/// returns false, except under `CI=true`, where a missing server fails.
pub fn available(test: &str) -> bool {
    if venv_bin("weed").is_some() && venv_bin("moto_server").is_some() {
        return true;
    }
    let why = "the S3 test servers are not installed (run scripts/install-deps --tests)";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}"
    );
    println!("SKIPPED {test}: {why}");
    false
}

/// A bucket name no other test of this binary uses.
pub fn unique_bucket(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One SeaweedFS shared by the tests of a binary that do not stop it; the
/// supervisor removes it when the binary exits.
pub fn shared_seaweed() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| S3Server::start(Kind::Seaweed))
}

/// One moto shared by the tests of a binary.
pub fn shared_moto() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| S3Server::start(Kind::Moto))
}

/// `n` ports that were free a moment ago (the server binds them next; a
/// lost race makes it exit, and [`S3Server::start`] tries new ones).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

impl S3Server {
    /// Starts a server of its own (for a test that stops it); panics when
    /// it cannot (call [`available`] first).
    pub fn start(kind: Kind) -> S3Server {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(kind) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("starting the {kind:?} S3 server: {last}");
    }

    fn try_start(kind: Kind) -> Result<S3Server, String> {
        let tmp = tempfile::Builder::new()
            .prefix("kcs3-")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().to_path_buf();
        let log = dir.join("server.log");
        let (program, args, port) = match kind {
            Kind::Seaweed => seaweed_command(&dir)?,
            Kind::Moto => {
                let port = free_ports(1)[0];
                let moto = venv_bin("moto_server").ok_or("moto_server is not installed")?;
                let args = vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ];
                (moto, args, port)
            }
        };
        // The supervisor silences its child; the wrapper keeps a log.
        let mut command = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!("exec \"$0\" \"$@\" >{} 2>&1", log.display()),
            program.display().to_string(),
        ];
        command.extend(args);
        let supervisor_log = File::create(dir.join("supervisor.log")).map_err(|e| e.to_string())?;
        let mut child = spawn_supervised(&dir, false, &command, supervisor_log)
            .map_err(|e| format!("{e:#}"))?;
        let _ = tmp.keep();
        let pid = read_pid_line(&mut child).ok_or("the supervisor reported no pid")?;
        let mut server = S3Server {
            kind,
            endpoint: format!("http://127.0.0.1:{port}"),
            pid,
            dir,
            supervisor: Some(child),
        };
        server.wait_ready(&log)?;
        Ok(server)
    }

    /// Until a signed request is answered.
    fn wait_ready(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut config = self.config();
        config.retries = 0;
        config.timeout = Duration::from_secs(5);
        let client = Client::new(config);
        let probe = "kcbackup-ready";
        loop {
            if client.create_bucket(probe).is_ok() && client.head_bucket(probe).is_ok() {
                return Ok(());
            }
            if !process_alive(self.pid) || Instant::now() > deadline {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                self.stop();
                return Err(format!(
                    "{:?} did not come up at {}:\n{}",
                    self.kind,
                    self.endpoint,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The client configuration for this server (path style, signed).
    pub fn config(&self) -> S3Config {
        S3Config::new(
            Endpoint::parse(&self.endpoint, None).expect("endpoint"),
            "us-east-1",
            true,
            ACCESS_KEY,
            Secret::new(SECRET_KEY),
        )
    }

    pub fn client(&self) -> Client {
        Client::new(self.config())
    }

    /// A new empty bucket on this server.
    pub fn bucket(&self, prefix: &str) -> String {
        let name = unique_bucket(prefix);
        self.client()
            .create_bucket(&name)
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        name
    }

    /// Stops the server and waits until its directory is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.supervisor.take() else {
            return;
        };
        // Closing the pipe is the supervisor's stop signal.
        drop(child.stdin.take());
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `weed mini` with every port it would bind set to a free one, the data
/// in `dir`, and one identity (all actions) for SigV4.
fn seaweed_command(dir: &Path) -> Result<(PathBuf, Vec<String>, u16), String> {
    let weed = venv_bin("weed").ok_or("weed is not installed")?;
    let identities = serde_json::json!({
        "identities": [{
            "name": "kcbackup",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]
    });
    let config = dir.join("s3.json");
    std::fs::write(&config, identities.to_string()).map_err(|e| e.to_string())?;
    let data = dir.join("data");
    std::fs::create_dir(&data).map_err(|e| e.to_string())?;
    let names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
        "admin.port",
        "admin.port.grpc",
        "metricsPort",
        "debug.port",
    ];
    let ports = free_ports(names.len());
    let mut args = vec!["mini".to_owned()];
    args.extend(
        names
            .iter()
            .zip(&ports)
            .map(|(name, port)| format!("-{name}={port}")),
    );
    args.extend([
        format!("-dir={}", data.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-s3.config={}", config.display()),
        format!("-filer.localSocket={}", dir.join("filer.sock").display()),
        format!("-admin.dataDir={}", dir.join("admin").display()),
        "-webdav=false".into(),
        "-admin.ui=false".into(),
        "-master.telemetry=false".into(),
        "-master.volumeSizeLimitMB=64".into(),
    ]);
    let s3_port = ports[names.iter().position(|n| *n == "s3.port").expect("s3.port")];
    Ok((weed, args, s3_port))
}
