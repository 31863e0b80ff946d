//! The `permafrost-liar` process: the liar of [`super`] on its own, driven
//! by `resume` lines on stdin and reporting JSON lines on stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use permafrost_core::Role;
use permafrost_proto::signer_node_client::SignerNodeClient;
use permafrost_proto::tls::TlsMaterial;
use tokio::sync::{oneshot, Notify};

use super::{serve, EventSink, LiarArgs, LiarOptions};

/// Runs the `permafrost-liar` process until stdin closes (the harness went
/// away): `resume` lines on stdin, events as JSON lines on stdout.
pub async fn run(args: LiarArgs) -> Result<(), String> {
    let options = LiarOptions {
        lie: args.lie,
        tamper_sender: args.tamper_sender,
        pause: args.pause,
        resume: Arc::new(Notify::new()),
        seed: args.seed,
        sign_delay: Duration::from_millis(args.sign_delay_ms),
        events: EventSink::json_lines_to_stdout(),
    };
    options.validate()?;
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let ca = read(&args.ca)?;
    let identity = TlsMaterial::from_pem(&ca, &read(&args.cert)?, &read(&args.key)?);
    let as_coordinator =
        TlsMaterial::from_pem(&ca, &read(&args.upstream_cert)?, &read(&args.upstream_key)?);
    let channel = as_coordinator
        .channel(
            &args.upstream,
            &permafrostctl::pki::server_name(Role::Node, &args.node_id),
            Duration::from_secs(10),
        )
        .map_err(|e| e.to_string())?;
    let upstream = SignerNodeClient::new(channel);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let (closed_tx, closed_rx) = oneshot::channel::<()>();
    {
        // A plain thread: blocking stdin reads must not hold a runtime worker.
        let resume = options.resume.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                match line.trim() {
                    "resume" => resume.notify_one(),
                    "" => {}
                    other => eprintln!("permafrost-liar: unknown command {other:?}"),
                }
            }
            let _ = closed_tx.send(());
        });
    }
    serve(listener, &identity, upstream, options, async {
        let _ = closed_rx.await;
    })
    .await
    .map_err(|e| e.to_string())
}
