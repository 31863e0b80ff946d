//! H2: a crashing node writes no core file. The real binary runs under a shell that raised
//! the core size limit (`ulimit -c unlimited`), is killed with SIGSEGV, SIGABRT and SIGQUIT while
//! serving with its identity and TLS key unsealed, and the test checks, from outside:
//!
//! - the kernel reports no core dump for it (`WCOREDUMP` clear in its wait status), and no
//!   core file appears in its working directory or data dir;
//! - before the crash, `/proc/<pid>/limits` shows a core size limit of 0 (soft and hard),
//!   though the parent set it unlimited, and `/proc/<pid>/status` a umask of 0077;
//! - the process is non-dumpable: it reports `PR_GET_DUMPABLE` = 0 read back from the kernel,
//!   and, when the test is not root, `/proc/<pid>` is owned by root (the kernel's sign of a
//!   non-dumpable process) although the node runs as the test's user.
//!
//! A control process (`sleep`) under the same shell shows that this machine would write a
//! core file, when `core_pattern` names a file in the working directory: the node's lack of
//! one is then down to the node. Where `core_pattern` pipes to a handler (systemd-coredump,
//! apport), the wait status and the non-dumpable checks still hold.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{process, NodeDir};

/// Files under `root` that look like core dumps for `pattern` (`/proc/sys/kernel/core_pattern`
/// when it names a file relative to the working directory), or named `core*` otherwise.
fn core_files(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let prefix = match pattern.split('%').next() {
        Some(p) if !p.is_empty() && !p.starts_with('|') && !p.contains('/') => p.to_string(),
        _ => "core".to_string(),
    };
    common::snapshot(root)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

fn core_pattern() -> String {
    std::fs::read_to_string("/proc/sys/kernel/core_pattern")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `core_pattern` writes plain files relative to the crashing process's working directory.
fn pattern_writes_to_cwd(pattern: &str) -> bool {
    !pattern.is_empty() && !pattern.starts_with('|') && !pattern.starts_with('/')
}

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("read /proc");
    text.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}:\n{text}"))
        .trim_start_matches(key)
        .trim()
        .trim_start_matches(':')
        .trim()
        .to_string()
}

/// Shows whether this machine writes core files for an ordinary process under the same shell.
fn control_dumps_core(cwd: &Path, pattern: &str) -> bool {
    let mut control = process::spawn_program("sleep", &["30"], cwd);
    std::thread::sleep(Duration::from_millis(200));
    control.signal("SEGV");
    let status = control.wait_exit(Duration::from_secs(30));
    let files = core_files(cwd, pattern);
    for file in &files {
        let _ = std::fs::remove_file(file);
    }
    status.core_dumped() && !files.is_empty()
}

/// Sends `signal` until the process is gone. Rust's runtime handles the first SIGSEGV itself
/// (its stack-overflow guard handler): for a fault that is not a stack overflow it restores
/// the default action and returns, and a real fault then recurs and kills the process. A
/// SIGSEGV sent with `kill` does not recur, so it takes a second one.
fn crash(node: &mut process::Running, signal: &str) {
    for _ in 0..3 {
        node.signal(signal);
        for _ in 0..50 {
            if node.child.try_wait().expect("wait").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn h2_crashing_node_writes_no_core_file_and_is_not_dumpable() {
    let dir = NodeDir::passphrase();
    let config = dir.config_path();
    let config_arg = config.to_str().expect("UTF-8 path");
    let info = process::init(&config, dir.root.path());
    dir.enroll(&info);
    let pattern = core_pattern();
    let cwd = dir.root.path();

    let control = pattern_writes_to_cwd(&pattern) && control_dumps_core(cwd, &pattern);
    if !control {
        eprintln!(
            "note: an ordinary process does not dump core here (core_pattern {pattern:?}); \
             the wait-status and non-dumpable checks carry this test"
        );
    }

    for signal in ["SEGV", "ABRT", "QUIT"] {
        let mut node = process::spawn(&["run", "--config", config_arg], cwd, true);
        node.wait_for_line("serving", Duration::from_secs(60));
        let pid = node.pid();
        let hardened = node
            .stderr
            .iter()
            .any(|l| l.contains("process hardened") && l.contains("not dumpable"));
        assert!(
            hardened,
            "the node reports PR_GET_DUMPABLE = 0:\n{}",
            node.stderr_text()
        );

        let core_limit = proc_field(pid, "limits", "Max core file size");
        let fields: Vec<&str> = core_limit.split_whitespace().collect();
        assert_eq!(
            &fields[..2],
            ["0", "0"],
            "core size limit (soft, hard): {core_limit}"
        );
        assert_eq!(proc_field(pid, "status", "Umask"), "0077");
        if rustix::process::geteuid().as_raw() != 0 {
            let owner = std::fs::metadata(format!("/proc/{pid}"))
                .expect("stat /proc/pid")
                .uid();
            assert_eq!(
                owner, 0,
                "a non-dumpable process's /proc entry belongs to root"
            );
        }
        if node.stderr.iter().any(|l| l.contains("memory locked")) {
            let locked = proc_field(pid, "status", "VmLck");
            assert_ne!(
                locked, "0 kB",
                "the node says memory is locked, the kernel disagrees"
            );
        }

        crash(&mut node, signal);
        let status = node.wait_exit(Duration::from_secs(30));
        let expected = match signal {
            "SEGV" => 11,
            "ABRT" => 6,
            _ => 3,
        };
        assert_eq!(
            status.signal(),
            Some(expected),
            "killed by SIG{signal}: {status:?}"
        );
        assert!(
            !status.core_dumped(),
            "the kernel dumped core for SIG{signal}"
        );
        let cores = core_files(cwd, &pattern);
        assert!(cores.is_empty(), "core files after SIG{signal}: {cores:?}");
    }
}
