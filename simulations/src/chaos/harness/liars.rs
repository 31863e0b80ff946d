//! Lying nodes of a chaos cluster: the `permafrost-liar` command line (its
//! certificates issued from the run's CA) and putting a liar into a node's
//! link or taking it out again. The command line is shared with
//! `bench --wan`, which runs the same liar inside a region's namespace.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use permafrost_core::Role;
use permafrostctl::pki;

use super::{ChaosCluster, HARNESS_COORDINATOR_ID};
use crate::chaos::liar::{LiarEvent, Lie, PausePoint};
use crate::chaos::process::LiarProcess;
use crate::chaos::seed;
use crate::SimError;

/// How a liar behaves, beyond whom it fronts.
#[derive(Clone, Debug)]
pub struct LiarSpec {
    /// How to lie.
    pub lie: Lie,
    /// Where to hold the first withdrawal round 2.
    pub pause: PausePoint,
    /// Whose DKG message to alter (DKG lies only).
    pub tamper_sender: Option<String>,
    /// How long [`Lie::SlowSign`] holds each round-2 answer.
    pub sign_delay: Duration,
    /// Where the liar listens (`None`: a free port on 127.0.0.1).
    pub listen: Option<SocketAddr>,
    /// Seed of its fake nonces and of [`Lie::Adaptive`]'s choices.
    pub seed: u64,
}

impl LiarSpec {
    /// `lie` with no pause, no tamper sender, no delay, on a free port, seed 0.
    pub fn new(lie: Lie) -> Self {
        Self {
            lie,
            pause: PausePoint::None,
            tamper_sender: None,
            sign_delay: Duration::ZERO,
            listen: None,
            seed: 0,
        }
    }
}

/// The command-line spelling of a clap value.
fn value_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// Arguments of a `permafrost-liar` fronting node `id` (reached at
/// `upstream`) in the cluster at `cluster_dir`, and its log file. Issues the
/// liar a node certificate for `id` and, if the run has none yet, the
/// coordinator-role certificate it presents to the real node.
pub fn liar_args(
    cluster_dir: &Path,
    id: &str,
    upstream: SocketAddr,
    spec: &LiarSpec,
) -> Result<(Vec<OsString>, PathBuf), SimError> {
    let ca_dir = cluster_dir.join("ca");
    let chaos = cluster_dir.join("chaos");
    let upstream_cert = chaos.join(format!("{HARNESS_COORDINATOR_ID}.pem"));
    if !upstream_cert.is_file() {
        pki::issue_to_dir(
            &ca_dir,
            Role::Coordinator,
            HARNESS_COORDINATOR_ID,
            &pki::Extra::default(),
            None,
            &chaos,
        )?;
    }
    let dir = chaos.join(format!("liar-{id}"));
    pki::issue_to_dir(&ca_dir, Role::Node, id, &pki::Extra::default(), None, &dir)?;
    let mut args: Vec<OsString> = vec![
        "--upstream".into(),
        upstream.to_string().into(),
        "--node-id".into(),
        id.into(),
        "--ca".into(),
        cluster_dir.join(pki::CA_CERT).into(),
        "--cert".into(),
        dir.join(format!("{id}.pem")).into(),
        "--key".into(),
        dir.join(format!("{id}.key")).into(),
        "--upstream-cert".into(),
        upstream_cert.into(),
        "--upstream-key".into(),
        chaos.join(format!("{HARNESS_COORDINATOR_ID}.key")).into(),
        "--lie".into(),
        value_name(spec.lie).into(),
        "--pause".into(),
        value_name(spec.pause).into(),
        "--seed".into(),
        spec.seed.to_string().into(),
    ];
    if let Some(sender) = &spec.tamper_sender {
        args.push("--tamper-sender".into());
        args.push(sender.into());
    }
    if !spec.sign_delay.is_zero() {
        args.push("--sign-delay-ms".into());
        args.push(spec.sign_delay.as_millis().to_string().into());
    }
    if let Some(listen) = spec.listen {
        args.push("--listen".into());
        args.push(listen.to_string().into());
    }
    Ok((args, dir.join("liar.log")))
}

impl ChaosCluster {
    /// Puts a `permafrost-liar` between node `id` and its proxy; the coordinator
    /// reconnects through it at its next call.
    pub async fn start_liar(
        &mut self,
        id: &str,
        lie: Lie,
        pause: PausePoint,
        tamper_sender: Option<&str>,
    ) -> Result<(), SimError> {
        let mut spec = LiarSpec::new(lie);
        spec.pause = pause;
        spec.tamper_sender = tamper_sender.map(str::to_string);
        self.start_liar_with(id, spec).await
    }

    /// [`ChaosCluster::start_liar`] with every knob; the seed is the run's,
    /// derived for `id`.
    pub async fn start_liar_with(&mut self, id: &str, mut spec: LiarSpec) -> Result<(), SimError> {
        if self.liars.contains_key(id) {
            self.stop_liar(id).await?;
        }
        let node = self.node(id)?.clone();
        spec.seed = seed::derive(self.seed, &format!("liar/{id}"));
        let (args, log) = liar_args(&self.cluster.dir, id, node.addr, &spec)?;
        let liar = LiarProcess::spawn(&self.bins.liar, args, id, &log).await?;
        let proxy = self.proxy(id)?;
        proxy.set_upstream(liar.addr());
        proxy.reset_connections();
        self.liars.insert(id.to_string(), liar);
        Ok(())
    }

    /// The liar in front of `id`.
    pub fn liar(&mut self, id: &str) -> Result<&mut LiarProcess, SimError> {
        self.liars
            .get_mut(id)
            .ok_or_else(|| SimError::Setup(format!("no liar in front of {id}")))
    }

    /// Nodes with a liar in front of them right now.
    pub fn running_liars(&self) -> Vec<String> {
        self.liars.keys().cloned().collect()
    }

    /// Takes the liar out of `id`'s link again and keeps its events.
    pub async fn stop_liar(&mut self, id: &str) -> Result<(), SimError> {
        let addr = self.node(id)?.addr;
        let proxy = self.proxy(id)?;
        proxy.set_upstream(addr);
        proxy.reset_connections();
        if let Some(liar) = self.liars.remove(id) {
            for e in liar.stop().await {
                self.liar_events.push((id.to_string(), e));
            }
        }
        Ok(())
    }

    /// Every event of every liar of this run (stopped ones and running ones).
    pub fn liar_events(&mut self) -> Vec<(String, LiarEvent)> {
        let mut all = self.liar_events.clone();
        for (id, liar) in &mut self.liars {
            all.extend(liar.events().iter().cloned().map(|e| (id.clone(), e)));
        }
        all
    }
}
