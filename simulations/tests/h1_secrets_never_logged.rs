//! H1: no secret in logs, error strings, panics, `Debug` output or files on disk.
//!
//! A whole cluster runs in this process (DKG, a signed withdrawal, and a series of refused
//! calls) while every `tracing` event of every crate is captured, in both the text and the
//! JSON format, together with every gRPC error string the test receives. Then the nodes are
//! stopped, their real secrets unsealed from their stores (each key share, the identity
//! secret, the TLS private key), and each is searched for, as raw bytes, lower- and
//! upper-case hex, and Rust `Debug`/JSON byte-array notation, in the captured text and in
//! every file under the cluster's directory (sealed stores, audit logs, configs, the
//! coordinator's store). Zero hits are allowed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use permafrost_core::identity::NodeIdentity;
use permafrost_core::{Role, Tier};
use permafrost_hsm::{PassphraseSealer, SealContext, Sealer};
use permafrost_node::store::NodeStore;
use permafrost_node::vault::ShareVault;
use permafrost_proto as pb;
use permafrost_proto::WithdrawalState;
use permafrost_testkit::{rogue, TestCluster};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const PASSPHRASE: &str = "correct horse battery staple";

/// Everything the process said: log lines, error strings, panic messages.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn push(&self, text: &str) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
    }

    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Write for Captured {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (all permafrost crates at TRACE, dependencies at DEBUG)
/// and a panic hook that records panic messages too.
fn capture_everything() -> Captured {
    let captured = Captured::default();
    let text = {
        let c = captured.clone();
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || c.clone())
    };
    let json = {
        let c = captured.clone();
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(move || c.clone())
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "debug,permafrost_node=trace,permafrost_coordinator=trace,permafrost_core=trace,\
             permafrost_proto=trace,permafrost_hsm=trace",
        ))
        .with(text)
        .with(json)
        .init();
    let hook_capture = captured.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook_capture.push(&format!("PANIC: {info}"));
        default_hook(info);
    }));
    captured
}

/// Records a gRPC outcome's error text (message, `Display` and `Debug`, which carries
/// metadata and details) and returns whether it failed.
fn record<T>(captured: &Captured, what: &str, result: Result<T, tonic::Status>) -> bool {
    match result {
        Ok(_) => false,
        Err(status) => {
            captured.push(&format!(
                "{what}: {} | {status} | {status:?}",
                status.message()
            ));
            true
        }
    }
}

/// A secret and the forms it could leak in.
struct Needle {
    what: String,
    forms: Vec<(String, Vec<u8>)>,
}

impl Needle {
    fn new(what: impl Into<String>, secret: &[u8]) -> Self {
        assert!(
            secret.len() >= 16,
            "needles must be long enough never to match by chance"
        );
        let forms = vec![
            ("raw bytes".to_string(), secret.to_vec()),
            ("lower hex".to_string(), hex::encode(secret).into_bytes()),
            (
                "upper hex".to_string(),
                hex::encode_upper(secret).into_bytes(),
            ),
            (
                "Debug bytes".to_string(),
                format!("{secret:?}").into_bytes(),
            ),
            (
                "JSON bytes".to_string(),
                serde_json::to_vec(secret).expect("json"),
            ),
        ];
        Self {
            what: what.into(),
            forms,
        }
    }
}

/// A needle's name, a form's name, and the form's bytes.
type Candidate<'a> = (&'a str, &'a str, &'a [u8]);

/// Where any form of any needle occurs in `haystack`, e.g. `"n1 share of warm-1 (lower hex)"`.
/// One pass over the haystack, indexing forms by their first four bytes.
fn hits(needles: &[Needle], haystack: &[u8]) -> Vec<String> {
    let mut by_prefix: HashMap<&[u8], Vec<Candidate<'_>>> = HashMap::new();
    for needle in needles {
        for (form, bytes) in &needle.forms {
            by_prefix
                .entry(&bytes[..4])
                .or_default()
                .push((&needle.what, form, bytes));
        }
    }
    let mut found = Vec::new();
    for at in 0..haystack.len().saturating_sub(3) {
        if let Some(candidates) = by_prefix.get(&haystack[at..at + 4]) {
            for (what, form, bytes) in candidates {
                if haystack[at..].starts_with(bytes) {
                    found.push(format!("{what} ({form})"));
                }
            }
        }
    }
    found
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                pending.push(entry.path());
            }
        } else if meta.is_file() {
            files.push(path);
        }
    }
    files
}

/// The 32-byte private scalar of a P-256 PKCS#8 key (what rcgen generates for node TLS keys):
/// it follows the `ECPrivateKey` header `02 01 01 04 20`. Searching for the scalar rather
/// than the PEM avoids the header bytes every P-256 key file shares.
fn p256_scalar(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem).expect("TLS key PEM");
    let der = der.secret_der();
    let header = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = der
        .windows(header.len())
        .position(|w| w == header)
        .expect("a P-256 PKCS#8 key: if rcgen's default changed, update this test");
    der[at + header.len()..at + header.len() + 32].to_vec()
}

/// Opens node `i`'s store (retrying while the stopped node's sled instance lets go of its
/// lock) and unseals every secret in it.
async fn unseal_node_secrets(cluster: &TestCluster, i: usize) -> (Vec<Needle>, Vec<String>) {
    let config = &cluster.nodes[i].config;
    let id = config.id.as_str();
    let sealer = PassphraseSealer::open(&config.data_dir, PASSPHRASE).expect("open sealer");
    let mut store = None;
    for _ in 0..100 {
        match NodeStore::open(&config.data_dir) {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let store = store.expect("open the stopped node's store");
    let mut needles = Vec::new();
    let mut debug_outputs = Vec::new();

    for group in store.groups().expect("groups") {
        let package = ShareVault::open_offline(
            &sealer,
            &config.data_dir,
            &config.id,
            &group.name,
            &group.sealed_key_package,
        )
        .expect("unseal key package");
        let share = package.signing_share().serialize();
        needles.push(Needle::new(format!("{id} share of {}", group.name), &share));
        debug_outputs.push(format!("{package:?}"));
        debug_outputs.push(format!("{:?}", package.signing_share()));
        debug_outputs.push(format!("{group:?}"));
    }

    let identity = sealer
        .unseal(
            &SealContext::new(id, "identity"),
            &store.sealed("identity").expect("read").expect("identity"),
        )
        .expect("unseal identity");
    assert_eq!(
        identity.len(),
        64,
        "identity secret: Ed25519 key then X25519 seed"
    );
    needles.push(Needle::new(
        format!("{id} Ed25519 identity key"),
        &identity[..32],
    ));
    needles.push(Needle::new(
        format!("{id} X25519 encryption seed"),
        &identity[32..],
    ));
    let parsed = NodeIdentity::from_secret_bytes(&identity).expect("identity");
    debug_outputs.push(format!("{parsed:?}"));

    let tls_key = sealer
        .unseal(
            &SealContext::new(id, "tls-key"),
            &store.sealed("tls-key").expect("read").expect("TLS key"),
        )
        .expect("unseal TLS key");
    needles.push(Needle::new(
        format!("{id} TLS private key"),
        &p256_scalar(&tls_key),
    ));

    debug_outputs.push(format!("{sealer:?}"));
    (needles, debug_outputs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_no_share_or_identity_secret_in_logs_errors_panics_debug_or_files() {
    let captured = capture_everything();
    let mut cluster = TestCluster::start(&["eu", "us", "ap"]).await;

    // DKG and a signed withdrawal: every code path that touches a share runs.
    let group = cluster
        .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
        .await
        .expect("DKG");
    assert!(group.active);
    let request = cluster.request("wd-h1-1", "warm-1", Tier::Warm);
    let signed = cluster
        .custody()
        .submit_withdrawal(cluster.sign(&request))
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(signed.state(), WithdrawalState::Signed, "{}", signed.detail);
    captured.push(&format!("withdrawal detail: {}", signed.detail));

    // Refused calls: each error string is captured.
    let mut failures = 0;
    let mut forged = cluster.sign(&cluster.request("wd-h1-forged", "warm-1", Tier::Warm));
    forged.custody_signature[0] ^= 1;
    failures += usize::from(record(
        &captured,
        "forged custody signature",
        cluster.custody().submit_withdrawal(forged).await,
    ));
    let wrong_tier = cluster.sign(&cluster.request("wd-h1-tier", "warm-1", Tier::Cold));
    failures += usize::from(record(
        &captured,
        "tier mismatch",
        cluster.custody().submit_withdrawal(wrong_tier).await,
    ));
    let unknown = cluster.sign(&cluster.request("wd-h1-unknown", "warm-9", Tier::Warm));
    failures += usize::from(record(
        &captured,
        "unknown group",
        cluster.custody().submit_withdrawal(unknown).await,
    ));
    failures += usize::from(record(
        &captured,
        "duplicate group",
        cluster
            .create_group("warm-1", Tier::Warm, 2, &[0, 1, 2])
            .await,
    ));
    failures += usize::from(record(
        &captured,
        "threshold above members",
        cluster
            .create_group("warm-2", Tier::Warm, 4, &[0, 1, 2])
            .await,
    ));
    failures += usize::from(record(
        &captured,
        "unknown withdrawal",
        cluster
            .custody()
            .get_withdrawal(pb::GetWithdrawalRequest {
                request_id: "wd-h1-never".into(),
            })
            .await,
    ));
    let mut as_custody = cluster.node_client(0, Role::Custody, "custody-1");
    failures += usize::from(record(
        &captured,
        "wrong role",
        as_custody.get_status(pb::NodeStatusRequest {}).await,
    ));
    // A rogue coordinator: a signing package over bytes no withdrawal authorized (X1), and
    // garbage where a signing package should be.
    let mut rogues = vec![
        cluster.node_client(0, Role::Coordinator, "rogue"),
        cluster.node_client(1, Role::Coordinator, "rogue"),
    ];
    let (commitments, handles) = rogue::commit_all(&mut rogues, "warm-1").await;
    let package = rogue::package(&commitments, b"not the authorized payload");
    let valid = cluster.sign(&cluster.request("wd-h1-x1", "warm-1", Tier::Warm));
    failures += usize::from(record(
        &captured,
        "rogue message",
        rogues[0]
            .sign(rogue::sign_withdrawal(
                "warm-1",
                &handles[0],
                &package,
                &valid,
            ))
            .await,
    ));
    failures += usize::from(record(
        &captured,
        "garbage package",
        rogues[1]
            .sign(rogue::sign_withdrawal(
                "warm-1",
                &handles[1],
                b"garbage",
                &valid,
            ))
            .await,
    ));
    assert!(
        failures >= 8,
        "every hostile call must be refused ({failures} were)"
    );

    // Stop the nodes (sled holds a lock on each store) but keep every file.
    for i in 0..cluster.nodes.len() {
        cluster.stop_node(i).await;
    }
    let mut needles = Vec::new();
    let mut debug_outputs = Vec::new();
    for i in 0..cluster.nodes.len() {
        let (n, d) = unseal_node_secrets(&cluster, i).await;
        needles.extend(n);
        debug_outputs.extend(d);
    }
    assert_eq!(
        needles
            .iter()
            .filter(|n| n.what.contains("share of warm-1"))
            .count(),
        3,
        "one share of warm-1 per node"
    );

    // The search itself works: every form of a secret is found where it was planted.
    for needle in needles.iter().take(1) {
        for (form, bytes) in &needle.forms {
            let mut planted = b"prefix ".to_vec();
            planted.extend_from_slice(bytes);
            assert!(
                !hits(&needles, &planted).is_empty(),
                "the search misses {form}"
            );
        }
    }

    let logs = captured.bytes();
    assert!(
        logs.len() > 10_000,
        "the run logged ({} bytes captured)",
        logs.len()
    );
    let in_output = hits(&needles, &logs);
    assert!(
        in_output.is_empty(),
        "secrets in logs or error strings: {in_output:?}"
    );

    let debug_text = debug_outputs.join("\n");
    assert!(
        debug_text.contains("<redacted>"),
        "secret types redact in Debug"
    );
    let in_debug = hits(&needles, debug_text.as_bytes());
    assert!(in_debug.is_empty(), "secrets in Debug output: {in_debug:?}");

    let files = files_under(cluster.dir.path());
    assert!(
        files.len() > 10,
        "the cluster wrote its files ({} found)",
        files.len()
    );
    let mut on_disk = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for hit in hits(&needles, &bytes) {
            on_disk.push(format!("{}: {hit}", file.display()));
        }
    }
    assert!(
        on_disk.is_empty(),
        "secrets in plaintext on disk: {on_disk:?}"
    );
    cluster.shutdown().await;
}
