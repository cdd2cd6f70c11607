//! The real turnd binary in its own process, with its config file and log
//! in a temporary directory; signals sent with kill(1). Killed on drop.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

/// A UDP port free on 127.0.0.1 a moment ago (the daemon binds it next).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// A TCP port free on 127.0.0.1 a moment ago (the daemon binds it next).
pub fn free_tcp_port() -> u16 {
    free_tcp_port_on("127.0.0.1")
}

/// A TCP port free on `ip` (another loopback address, say) a moment ago.
pub fn free_tcp_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Proc {
    /// Writes `config` (with `{dir}` replaced by the temporary directory)
    /// and starts `turnd -c` on it with `env`.
    pub fn spawn(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn_in(dir, config, env)
    }

    pub fn spawn_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(dir, Some(config), env, None, None)
    }

    /// Like [`Proc::spawn`], inside network namespace `ns` (`ip netns exec`
    /// runs turnd in its own place: the child is turnd).
    pub fn spawn_netns(ns: &str, config: &str) -> Self {
        Self::spawn_netns_in(tempfile::tempdir().expect("tempdir"), ns, config)
    }

    /// [`Proc::spawn_netns`] in `dir` (a restart: take the directory of a
    /// stopped one).
    pub fn spawn_netns_in(dir: tempfile::TempDir, ns: &str, config: &str) -> Self {
        Self::spawn_with(dir, Some(config), &[], None, Some(ns))
    }

    /// Like [`Proc::spawn`], with at most `nofile` open file descriptors.
    pub fn spawn_limited(config: &str, nofile: u64) -> Self {
        Self::spawn_with(
            tempfile::tempdir().expect("tempdir"),
            Some(config),
            &[],
            Some(nofile),
            None,
        )
    }

    /// `turnd` with no configuration at all, as a new user first runs it:
    /// no `-c`, its home and working directory a fresh temporary directory
    /// (where it keeps what it generates, `~/.local/state/turnd`).
    pub fn spawn_bare() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn_with(dir, None, &[], None, None)
    }

    fn spawn_with(
        dir: tempfile::TempDir,
        config: Option<&str>,
        env: &[(&str, &str)],
        nofile: Option<u64>,
        netns: Option<&str>,
    ) -> Self {
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_turnd")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_turnd")),
        };
        match config {
            Some(config) => {
                let config = config.replace("{dir}", &dir.path().display().to_string());
                std::fs::write(dir.path().join("turnd.toml"), config).expect("config");
                cmd.arg("-c").arg(dir.path().join("turnd.toml"));
            }
            None => {
                cmd.current_dir(dir.path())
                    .env("HOME", dir.path())
                    .env_remove("XDG_STATE_HOME")
                    .env_remove("STATE_DIRECTORY");
            }
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("turnd starts");
        Self { child, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the config file (read on the next SIGHUP).
    pub fn rewrite_config(&self, config: &str) {
        let config = config.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(self.path("turnd.toml"), config).expect("config");
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{name}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `text`; returns the log.
    pub fn wait_log(&self, text: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let log = self.log();
            if log.contains(text) || Instant::now() > end {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until `addr` accepts TCP connections.
    pub fn wait_listening(&self, addr: SocketAddr) {
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < end, "turnd does not listen on {addr}: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the process ends within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `path` so that a reader never sees half of it.
pub fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
