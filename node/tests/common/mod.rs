//! Fixtures for the node's lifecycle tests: a node directory with CA, certificate, manifest
//! and policy around a data dir (laid out by `permafrost_testkit::layout`, as every
//! cluster is), for either sealer backend, its SoftHSM2 tokens from
//! `permafrost_testkit::softhsm`; snapshots of the data dir; tampering with sealed blobs.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use permafrost_node::config::NodeConfig;
use permafrost_node::store::NodeStore;
use permafrost_node::{NodeError, NodePublicInfo, SignerNode};
use permafrost_testkit::layout::{ClusterLayout, ClusterPlan, NodeSpec, SealerSpec};
pub use permafrost_testkit::softhsm::{module_path, SoftHsm, USER_PIN};
use permafrostctl::pki;

pub const PASSPHRASE: &str = "correct horse battery staple";
pub const NODE_ID: &str = "n1";

/// The `[sealer]` section of a test node.
#[derive(Clone, Debug)]
pub enum SealerSection {
    /// Passphrase from the file `<root>/passphrase` (fast KDF).
    Passphrase,
    /// A SoftHSM2 token; the PIN from the file `<root>/pin`.
    Pkcs11 {
        token_label: String,
        key_label: String,
    },
}

/// One node's files in a tempdir: `ca/`, `ca.pem`, `node.toml`, `passphrase`/`pin`,
/// `policy.toml`, `manifest.json`, the node certificate, and the data dir `data/`.
pub struct NodeDir {
    pub root: tempfile::TempDir,
    pub sealer: SealerSection,
    /// The one-node cluster the directory holds.
    layout: ClusterLayout,
    /// Set for PKCS#11 nodes: `init` and `open` are serialised with its slot listing.
    pub hsm: Option<&'static SoftHsm>,
}

impl NodeDir {
    /// A passphrase node.
    pub fn passphrase() -> Self {
        Self::new(SealerSection::Passphrase, None)
    }

    /// A PKCS#11 node on a fresh SoftHSM token, or `None` when SoftHSM is absent outside CI.
    pub fn pkcs11(name: &str) -> Option<Self> {
        let hsm = softhsm()?;
        let sealer = SealerSection::Pkcs11 {
            token_label: hsm.new_token(name).label,
            key_label: permafrost_testkit::softhsm::KEY_LABEL.into(),
        };
        Some(Self::new(sealer, Some(hsm)))
    }

    fn new(sealer: SealerSection, hsm: Option<&'static SoftHsm>) -> Self {
        permafrost_proto::tls::install_crypto_provider();
        let root = tempfile::tempdir().expect("tempdir");
        let custody = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        let mut node = NodeSpec::new(
            NODE_ID,
            "eu",
            "",
            "127.0.0.1:0".parse().expect("addr"),
            sealer_spec(&sealer, "passphrase", "pin"),
        );
        // Nothing listens there: these tests never dial the node.
        node.endpoint = Some("127.0.0.1:1".into());
        let plan = ClusterPlan {
            ca_name: "Permafrost node-test CA".into(),
            ca_dir: None,
            daemon_cert: pki::Extra {
                ips: vec!["127.0.0.1".parse().expect("ip")],
                ..Default::default()
            },
            nodes: vec![node],
            coordinator: None,
            groups: Vec::new(),
            policy: "[groups]\n".into(),
            custody_keys: vec![custody],
            operators: None,
        };
        let layout = ClusterLayout::write(root.path(), plan).expect("node layout");
        let dir = Self {
            root,
            sealer,
            hsm,
            layout,
        };
        write(&dir.path("passphrase"), &format!("{PASSPHRASE}\n"));
        write(&dir.path("pin"), &format!("{USER_PIN}\n"));
        write(&dir.path("wrong-secret"), "not-the-secret-0000\n");
        dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("node.toml")
    }

    /// Rewrites `node.toml` for `sealer`, reading the passphrase or PIN from the given files.
    pub fn write_config(&self, sealer: &SealerSection, passphrase_file: &str, pin_file: &str) {
        self.write_config_for(sealer_spec(sealer, passphrase_file, pin_file));
    }

    /// Rewrites `node.toml` with a literal `[sealer]` section body.
    pub fn write_config_with_sealer(&self, sealer_section: &str) {
        self.write_config_for(toml::from_str(sealer_section).expect("a [sealer] section"));
    }

    fn write_config_for(&self, sealer: SealerSpec) {
        let node = NodeSpec {
            sealer,
            ..self.layout.plan().nodes[0].clone()
        };
        self.layout.write_node_config(&node).expect("node config");
    }

    pub fn config(&self) -> NodeConfig {
        NodeConfig::load(&self.config_path()).expect("node config loads")
    }

    /// What an operator does after `permafrost-node init`: the CA signs the CSR and the node
    /// is listed in the manifest.
    pub fn enroll(&self, info: &NodePublicInfo) {
        let entry = self.layout.enroll(info).expect("node certificate");
        self.layout.write_manifest(vec![entry]).expect("manifest");
    }

    /// `init` in-process, then enrolment.
    pub fn init(&self) -> NodePublicInfo {
        let info = self.try_init().expect("init");
        self.enroll(&info);
        info
    }

    pub fn try_init(&self) -> Result<NodePublicInfo, NodeError> {
        let config = self.config();
        self.serialized(|| permafrost_node::init(&config))
    }

    /// Opens the node as `run` does (nothing is served).
    pub fn open(&self) -> Result<Arc<SignerNode>, NodeError> {
        let config = self.config();
        self.serialized(|| SignerNode::open(&config))
    }

    fn serialized<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.hsm {
            Some(hsm) => hsm.serialized(f),
            None => f(),
        }
    }

    /// Rewrites the config to read the passphrase or PIN from the wrong file.
    pub fn use_wrong_secret(&self) {
        self.write_config(&self.sealer, "wrong-secret", "wrong-secret");
    }

    /// Rewrites the config as it was created.
    pub fn use_right_secret(&self) {
        self.write_config(&self.sealer, "passphrase", "pin");
    }

    /// Every file under the data dir with its bytes.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(&self.data_dir())
    }

    /// Every file under the data dir outside the store file, plus every key and value of
    /// every table in the store (keyed `store.redb/<table>/<hex key>`).
    pub fn logical_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let store = self.data_dir().join(permafrost_store::STORE_FILE);
        let mut files: BTreeMap<PathBuf, Vec<u8>> = self
            .snapshot()
            .into_iter()
            .filter(|(path, _)| !path.starts_with(&store))
            .collect();
        let db = open_store(&self.data_dir());
        for (table, k, v) in db.dump().expect("dump store") {
            files.insert(store.join(table).join(hex::encode(&k)), v);
        }
        files
    }

    /// A sealed blob of the store's meta tree (`identity`, `tls-key`).
    pub fn sealed(&self, key: &str) -> Vec<u8> {
        NodeStore::open(&self.data_dir())
            .expect("open store")
            .sealed(key)
            .expect("read store")
            .unwrap_or_else(|| panic!("{key} missing from the store"))
    }

    /// Overwrites a sealed blob of the meta table, as an attacker with disk access could.
    /// `NodeStore` refuses to overwrite on purpose, so this goes to the store directly, at
    /// the same place (`<data>/store.redb`, table `meta`).
    pub fn overwrite_sealed(&self, key: &str, blob: &[u8]) {
        let db = open_store(&self.data_dir());
        db.write_blocking(|w| w.put(&META, key, &blob.to_vec()))
            .expect("overwrite");
    }
}

const META: permafrost_store::Table<permafrost_store::Bytes> =
    permafrost_store::Table::new("meta", "sealed blob");

/// Opens a stopped node's store directly, waiting while a previous handle lets go of it.
fn open_store(data_dir: &Path) -> permafrost_store::Store {
    for _ in 0..100 {
        if let Ok(s) = permafrost_store::Store::open(data_dir, &[META.name()]) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    permafrost_store::Store::open(data_dir, &[META.name()]).expect("open store")
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("dir entry").path());
            }
        } else {
            files.insert(path.clone(), std::fs::read(&path).expect("read file"));
        }
    }
    files
}

/// Panics naming the first file that differs, without printing contents.
pub fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "files were added or removed");
    for (path, bytes) in before {
        assert!(
            after.get(path) == Some(bytes),
            "{} was modified by a failed start",
            path.display()
        );
    }
}

/// Flips one bit in the middle of a blob (inside the ciphertext, past the header).
pub fn flip_one_byte(blob: &[u8]) -> Vec<u8> {
    let mut flipped = blob.to_vec();
    let at = blob.len() / 2;
    flipped[at] ^= 0x01;
    flipped
}

/// The `[sealer]` section of `sealer`, reading the passphrase or PIN from the given files
/// (relative to the node's directory, the root).
fn sealer_spec(sealer: &SealerSection, passphrase_file: &str, pin_file: &str) -> SealerSpec {
    match sealer {
        SealerSection::Passphrase => SealerSpec::fast_passphrase_file(passphrase_file),
        SealerSection::Pkcs11 {
            token_label,
            key_label,
        } => SealerSpec::Pkcs11 {
            module_path: module_path(),
            token_label: token_label.clone(),
            key_label: Some(key_label.clone()),
            pin_file: Some(pin_file.into()),
            pin_env: None,
        },
    }
}

/// The SoftHSM fixture, or `None` (with a message) when the module is absent outside CI.
pub fn softhsm() -> Option<&'static SoftHsm> {
    permafrost_testkit::softhsm::softhsm(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// The start-up checks every backend must pass; each test file calls them for its backend.
pub mod lifecycle {
    use super::*;

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    fn refusal(dir: &NodeDir) -> String {
        dir.open()
            .expect_err("the node must refuse to start")
            .to_string()
    }

    /// `init`, then open (twice, as after a restart): the identity and TLS key unseal and
    /// match the manifest. Right after `init` the data dir is 0700 and every file in it 0600.
    pub fn init_then_open(dir: &NodeDir) {
        let info = dir.init();
        assert_eq!(info.id.as_str(), NODE_ID);
        let data = dir.data_dir();
        assert_eq!(mode(&data), 0o700, "data dir mode");
        for path in snapshot(&data).keys() {
            assert_eq!(mode(path), 0o600, "{} mode", path.display());
        }
        for _ in 0..2 {
            let node = dir.open().expect("the node opens");
            assert_eq!(node.id().as_str(), NODE_ID);
            drop(node);
        }
    }

    /// A second `init` over an initialised data dir is refused and changes nothing.
    pub fn init_twice_refused(dir: &NodeDir) {
        dir.init();
        let before = dir.snapshot();
        let msg = dir.try_init().expect_err("second init").to_string();
        assert!(msg.contains("refusing to initialize"), "{msg}");
        assert!(msg.contains(&dir.data_dir().display().to_string()), "{msg}");
        assert_unchanged(&before, &dir.snapshot());
        dir.open().expect("the original node still opens");
    }

    /// S2: the wrong passphrase or PIN is refused with `expected` in the message, and the
    /// stored data is byte-identical afterwards; the right one still works.
    pub fn wrong_secret_refused(dir: &NodeDir, expected: &str) {
        dir.init();
        let before = dir.snapshot();
        dir.use_wrong_secret();
        let msg = refusal(dir);
        assert!(msg.contains(expected), "{msg}");
        assert!(
            !msg.contains(PASSPHRASE) && !msg.contains(USER_PIN),
            "{msg}"
        );
        assert_unchanged(&before, &dir.snapshot());
        dir.use_right_secret();
        dir.open().expect("the right secret still opens the node");
    }

    /// S2: one flipped byte in the sealed identity or TLS key, and the node refuses to start
    /// saying the blob failed authentication; restoring the blob makes it start again.
    pub fn flipped_byte_refused(dir: &NodeDir) {
        dir.init();
        for key in ["identity", "tls-key"] {
            let original = dir.sealed(key);
            dir.overwrite_sealed(key, &flip_one_byte(&original));
            let before = dir.logical_snapshot();
            let msg = refusal(dir);
            assert!(
                msg.contains("sealed blob failed authentication"),
                "{key}: {msg}"
            );
            // The store was opened to read the blob, and the engine may touch its file on
            // open: compare what is stored, not the engine's own bytes.
            assert_unchanged(&before, &dir.logical_snapshot());
            dir.overwrite_sealed(key, &original);
            dir.open()
                .unwrap_or_else(|e| panic!("{key} restored, but the node still refuses: {e}"));
        }
    }

    /// H2: a data dir that group or others can enter is refused before any secret is read,
    /// naming the path and mode.
    pub fn open_data_dir_refused(dir: &NodeDir) {
        use std::os::unix::fs::PermissionsExt;
        dir.init();
        let data = dir.data_dir();
        for bad in [0o750, 0o701, 0o755] {
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(bad)).expect("chmod");
            let msg = refusal(dir);
            assert!(msg.contains(&data.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{bad:04o}")), "{msg}");
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        dir.open().expect("0700 opens");
    }
}

/// The real `permafrost-node` binary as a child process, its stderr collected line by line.
pub mod process {
    use std::io::BufRead;
    use std::path::Path;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc::{Receiver, RecvTimeoutError};
    use std::time::{Duration, Instant};

    pub const BIN: &str = env!("CARGO_BIN_EXE_permafrost-node");

    /// A running child; killed on drop if still alive.
    pub struct Running {
        pub child: Child,
        lines: Receiver<String>,
        pub stderr: Vec<String>,
    }

    /// The node binary with `args`, in `cwd`. With `core_unlimited`, the parent shell raises
    /// the core file size limit first (`ulimit -c unlimited`, or to the hard limit when only
    /// that much is allowed), so that only the node itself can be what prevents a core dump.
    pub fn spawn(args: &[&str], cwd: &Path, core_unlimited: bool) -> Running {
        let script = if core_unlimited {
            r#"ulimit -c unlimited 2>/dev/null || ulimit -c "$(ulimit -H -c)"; exec "$0" "$@""#
        } else {
            r#"exec "$0" "$@""#
        };
        spawn_command(
            Command::new("sh").arg("-c").arg(script).arg(BIN).args(args),
            cwd,
        )
    }

    /// The node binary with `args` and the environment variables `env` set.
    pub fn spawn_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(BIN);
        command.args(args);
        spawn_command_env(&mut command, cwd, env)
    }

    /// Any program under the same shell set-up (for control experiments).
    pub fn spawn_program(program: &str, args: &[&str], cwd: &Path) -> Running {
        let script =
            r#"ulimit -c unlimited 2>/dev/null || ulimit -c "$(ulimit -H -c)"; exec "$0" "$@""#;
        spawn_command(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(program)
                .args(args),
            cwd,
        )
    }

    fn spawn_command(command: &mut Command, cwd: &Path) -> Running {
        spawn_command_env(command, cwd, &[])
    }

    fn spawn_command_env(command: &mut Command, cwd: &Path, env: &[(&str, &str)]) -> Running {
        command
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .env_remove("PERMAFROST_LOG_JSON");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stderr = child.stderr.take().expect("stderr pipe");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    impl Running {
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Waits for a stderr line containing `needle`; panics with all stderr so far if the
        /// child exits or `timeout` passes first.
        pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.lines.recv_timeout(left) {
                    Ok(line) => {
                        self.stderr.push(line.clone());
                        if line.contains(needle) {
                            return line;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        panic!(
                            "no line with {needle:?} within {timeout:?}; stderr:\n{}",
                            self.stderr.join("\n")
                        )
                    }
                    Err(RecvTimeoutError::Disconnected) => panic!(
                        "child exited before printing {needle:?}; stderr:\n{}",
                        self.stderr.join("\n")
                    ),
                }
            }
        }

        /// Waits for the child to exit, then collects the rest of its stderr.
        pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
            let deadline = Instant::now() + timeout;
            let status = loop {
                if let Some(status) = self.child.try_wait().expect("wait for child") {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "child still running after {timeout:?}; stderr:\n{}",
                    self.stderr.join("\n")
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                self.stderr.push(line);
            }
            status
        }

        pub fn signal(&self, name: &str) {
            let ok = std::process::Command::new("kill")
                .arg(format!("-{name}"))
                .arg(self.pid().to_string())
                .status()
                .expect("run kill")
                .success();
            assert!(ok, "kill -{name} {} failed", self.pid());
        }

        pub fn stderr_text(&self) -> String {
            self.stderr.join("\n")
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Runs the node binary to completion (for `init` and refused starts).
    pub fn run_to_exit(args: &[&str], cwd: &Path) -> (ExitStatus, String) {
        let mut running = spawn(args, cwd, false);
        let status = running.wait_exit(Duration::from_secs(60));
        (status, running.stderr_text())
    }

    /// `permafrost-node init --config <config>`, returning the public info it prints.
    pub fn init(config: &Path, cwd: &Path) -> permafrost_node::NodePublicInfo {
        let output = Command::new(BIN)
            .args(["init", "--config"])
            .arg(config)
            .current_dir(cwd)
            .output()
            .expect("run permafrost-node init");
        assert!(
            output.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("init prints the node's public info as JSON")
    }
}
