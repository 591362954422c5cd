//! Sigil's binaries as child processes: built on demand, logging to files,
//! killed when their handle drops (a failing test leaves nothing running).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::repo_root;

/// The path of workspace binary `name` (e.g. `sigil-issuer`), built first so
/// the test always runs the current code.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(repo_root())
        .args(["build", "-q", "-p", package, "--bin", name])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p {package} --bin {name} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    target.join("debug").join(name)
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running child process; killed on drop.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program` with `args` and `env`, its stdout and stderr going to
    /// `log_dir/<name>.log`.
    pub fn start(name: &str, program: &Path, args: &[String], env: &[(&str, &str)], log_dir: &Path) -> Proc {
        std::fs::create_dir_all(log_dir).expect("log dir");
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc { name: name.to_owned(), log, child }
    }

    /// Stops the process now (SIGKILL): what a crash looks like to the others.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics (with its log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_tail());
        }
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
