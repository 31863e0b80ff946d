//! The lying signer node behind `permafrost-liar` (test-only; threats C1, K1, N2).
//!
//! It presents the real node's identity (a certificate the local CA issued
//! for the same node id, role node), forwards every call to the real node
//! with a coordinator certificate, and lies as configured: a wrong signature
//! share, commitments from a fresh random nonce pair, or an altered DKG
//! message relayed to the node it fronts; or, on withdrawals, it answers
//! round 1 and then stays silent, answers round 2 only just before the
//! coordinator's deadline, or adapts (honest, lying or silent, chosen per
//! session from its seed). As an honest tap it reports what
//! passes (commitments, forwarded shares) and can hold the first withdrawal
//! round 2 so the harness can kill a process at that exact point. It reads
//! `resume` lines on stdin and writes one JSON event per line on stdout.
//!
//! The same liar serves in-process too ([`serve`], used by `permafrost-testkit`):
//! the caller hands it a listener, the node's TLS identity, a client of the real
//! node and [`LiarOptions`], and chooses where its [`EventSink`] sends events.
//!
//! None of this is in `permafrost-node`: a production build cannot lie.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use frost_secp256k1::keys::SigningShare;
use frost_secp256k1::round1::SigningCommitments;
use frost_secp256k1::{Identifier, SigningPackage};
use permafrost_proto::signer_node_client::SignerNodeClient;
use permafrost_proto::signer_node_server::{SignerNode, SignerNodeServer};
use permafrost_proto::tls::TlsMaterial;
use permafrost_proto::{self as pb, ProtoError};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How the node lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lie {
    /// Forwards faithfully (a tap: reports events, can pause).
    Honest,
    /// Returns a well-formed but wrong signature share for withdrawals (C1).
    BadShare,
    /// Announces commitments of a fresh random nonce pair instead of its own and
    /// signs with its real ones, so its share cannot verify (C1).
    BadCommitments,
    /// Answers round 1, then never answers round 2 of a withdrawal: the
    /// coordinator can only wait out its deadline (F1, C1 liveness).
    SilentAfterCommit,
    /// Answers round 2 of a withdrawal correctly, but only after
    /// `--sign-delay-ms` (set just under the coordinator's deadline; F1).
    SlowSign,
    /// Honest in round 1 and to every probe, so it keeps being chosen; in
    /// round 2 of each withdrawal it signs honestly, sends a wrong share or
    /// stays silent, picked from its seed and the request id: it lies only
    /// once chosen, and not the same way from one session to the next (C1, F1).
    Adaptive,
    /// Alters `--tamper-sender`'s round-1 package in the set relayed to this node (K1).
    DkgRound1,
    /// Alters `--tamper-sender`'s echo in the echoes relayed to this node (K1).
    DkgEcho,
    /// Alters `--tamper-sender`'s encrypted round-2 share for this node (K4, K5).
    DkgRound2,
}

impl Lie {
    /// Whether the lie is about a DKG message (and needs `--tamper-sender`).
    pub fn is_dkg(self) -> bool {
        matches!(self, Lie::DkgRound1 | Lie::DkgEcho | Lie::DkgRound2)
    }
}

/// Where the first withdrawal round 2 is held until `resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PausePoint {
    /// Never.
    None,
    /// After the node answered round 1, before round 2 reaches it.
    BeforeSign,
    /// After the node released its share, before the share reaches the coordinator.
    AfterSign,
}

/// What the liar reports, one JSON object per stdout line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiarEvent {
    /// Serving on `addr`.
    Listening {
        /// Actual listen address.
        addr: String,
    },
    /// The node answered round 1 with these (real) commitments.
    Committed {
        /// Key group.
        group: String,
        /// The node's FROST identifier.
        identifier: u32,
        /// Hex of the serialized commitments.
        commitments: String,
    },
    /// A signing lie was told for `request`.
    Lied {
        /// Which lie.
        lie: Lie,
        /// Withdrawal request id.
        request: String,
    },
    /// A DKG message from `sender` was altered on its way to the node.
    DkgTampered {
        /// Which lie.
        lie: Lie,
        /// Ceremony id.
        ceremony: String,
        /// Whose message was altered.
        sender: String,
    },
    /// Round 2 of `request` is held at `point` until `resume`.
    Paused {
        /// Where.
        point: PausePoint,
        /// Withdrawal request id.
        request: String,
    },
    /// Round 2 of `request` was forwarded to the node; what it answered.
    SignForwarded {
        /// Withdrawal request id.
        request: String,
        /// Whether the node released a share.
        ok: bool,
        /// gRPC code name (`Ok` on success).
        code: String,
        /// The node's message on refusal.
        message: String,
    },
}

/// Command line of `permafrost-liar`.
#[derive(Debug, Parser)]
#[command(
    name = "permafrost-liar",
    about = "Test-only lying signer node for Permafrost chaos runs (never deploy)",
    version
)]
pub struct LiarArgs {
    /// Address to listen on (port 0 picks one; the `listening` event says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// `host:port` of the real node.
    #[arg(long)]
    pub upstream: String,
    /// Id of the node it impersonates (its certificate's id).
    #[arg(long)]
    pub node_id: String,
    /// Cluster CA certificate (PEM).
    #[arg(long)]
    pub ca: PathBuf,
    /// Certificate for `--node-id`, role node (PEM), presented to the coordinator.
    #[arg(long)]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Certificate of role coordinator (PEM), presented to the real node.
    #[arg(long)]
    pub upstream_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub upstream_key: PathBuf,
    /// How to lie.
    #[arg(long, value_enum, default_value_t = Lie::Honest)]
    pub lie: Lie,
    /// Whose DKG message to alter (DKG lies only).
    #[arg(long)]
    pub tamper_sender: Option<String>,
    /// Hold the first withdrawal round 2 here until a `resume` line on stdin.
    #[arg(long, value_enum, default_value_t = PausePoint::None)]
    pub pause: PausePoint,
    /// Seed of the fake nonces and of `adaptive`'s choices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How long `slow-sign` holds each round-2 answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub sign_delay_ms: u64,
}

/// Where a liar's [`LiarEvent`]s go: stdout as JSON lines for the process,
/// nowhere or a collector for an in-process liar.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(&LiarEvent) + Send + Sync>);

impl EventSink {
    /// Calls `f` with every event, from whichever task reports it.
    pub fn new(f: impl Fn(&LiarEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// One JSON object per stdout line (what the chaos harness reads).
    pub fn json_lines_to_stdout() -> Self {
        Self::new(|event| match serde_json::to_string(event) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("permafrost-liar: cannot encode event {event:?}: {e}"),
        })
    }

    /// Drops every event.
    pub fn discard() -> Self {
        Self::new(|_| {})
    }

    fn emit(&self, event: &LiarEvent) {
        (self.0)(event)
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

/// How an in-process or stand-alone liar behaves.
#[derive(Clone, Debug)]
pub struct LiarOptions {
    /// How to lie.
    pub lie: Lie,
    /// Whose DKG message to alter (DKG lies only).
    pub tamper_sender: Option<String>,
    /// Hold the first withdrawal round 2 here until `resume` is notified.
    pub pause: PausePoint,
    /// Releases a held round 2 (one `notify_one` per pause).
    pub resume: Arc<Notify>,
    /// Seed of the fake nonces and of [`Lie::Adaptive`]'s choices.
    pub seed: u64,
    /// How long [`Lie::SlowSign`] holds each round-2 answer.
    pub sign_delay: Duration,
    /// Where events go.
    pub events: EventSink,
}

impl LiarOptions {
    /// `lie` with no tamper sender, no pause, seed 0, and events discarded.
    pub fn new(lie: Lie) -> Self {
        Self {
            lie,
            tamper_sender: None,
            pause: PausePoint::None,
            resume: Arc::new(Notify::new()),
            seed: 0,
            sign_delay: Duration::ZERO,
            events: EventSink::discard(),
        }
    }

    /// Refuses a DKG lie without a member whose message to alter.
    pub fn validate(&self) -> Result<(), String> {
        if self.lie.is_dkg() && self.tamper_sender.is_none() {
            return Err(format!(
                "--lie {:?} alters another member's message: give --tamper-sender ID",
                self.lie
            ));
        }
        if self.lie == Lie::SlowSign && self.sign_delay.is_zero() {
            return Err(
                "--lie slow-sign holds round 2 for a while: give --sign-delay-ms MS".into(),
            );
        }
        Ok(())
    }
}

/// What [`Lie::Adaptive`] does in round 2 of `request`: a pure function of
/// the seed and the request id, so a run replays whatever order the
/// coordinator asks in.
pub fn adaptive_choice(seed: u64, request: &str) -> Lie {
    use sha2::{Digest, Sha256};
    let h = Sha256::new()
        .chain_update(seed.to_be_bytes())
        .chain_update(request.as_bytes())
        .finalize();
    [Lie::Honest, Lie::BadShare, Lie::SilentAfterCommit][usize::from(h[0]) % 3]
}

/// Real commitments hidden behind fake ones, by nonce handle.
type Swapped = HashMap<Vec<u8>, (u32, Vec<u8>)>;

/// Most hidden commitments kept; older ones belong to abandoned rounds.
const MAX_SWAPPED: usize = 1024;

struct Liar {
    upstream: SignerNodeClient<Channel>,
    lie: Lie,
    tamper_sender: Option<String>,
    pause: Mutex<PausePoint>,
    resume: Arc<Notify>,
    rng: Mutex<StdRng>,
    swapped: Mutex<Swapped>,
    seed: u64,
    sign_delay: Duration,
    events: EventSink,
}

fn poisoned() -> Status {
    Status::internal("liar: lock poisoned")
}

fn flip_last(bytes: &mut [u8]) -> bool {
    match bytes.last_mut() {
        Some(last) => {
            *last ^= 0x01;
            true
        }
        None => false,
    }
}

impl Liar {
    fn upstream(&self) -> SignerNodeClient<Channel> {
        self.upstream.clone()
    }

    /// How round 2 of withdrawal `request` is answered (DKG lies and bad
    /// commitments are told elsewhere; here they sign honestly).
    fn round2_lie(&self, request: &str) -> Lie {
        match self.lie {
            Lie::Adaptive => adaptive_choice(self.seed, request),
            lie @ (Lie::BadShare | Lie::SilentAfterCommit | Lie::SlowSign) => lie,
            _ => Lie::Honest,
        }
    }

    /// Commitments of a fresh random nonce pair (for a random share): well
    /// formed, but not the ones the node will sign with.
    fn fake_commitments(&self) -> Result<Vec<u8>, Status> {
        let mut rng = self.rng.lock().map_err(|_| poisoned())?;
        let share = loop {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            if let Ok(share) = SigningShare::deserialize(&bytes) {
                break share;
            }
        };
        let (_nonces, commitments) = frost_secp256k1::round1::commit(&share, &mut *rng);
        commitments
            .serialize()
            .map_err(|e| Status::internal(format!("liar: serialize commitments: {e}")))
    }

    /// The coordinator's package with our real commitments put back, so the node signs.
    fn restore_commitments(package: &[u8], identifier: u32, real: &[u8]) -> Option<Vec<u8>> {
        let package = SigningPackage::deserialize(package).ok()?;
        let id = Identifier::try_from(u16::try_from(identifier).ok()?).ok()?;
        let mut commitments = package.signing_commitments().clone();
        commitments.insert(id, SigningCommitments::deserialize(real).ok()?);
        SigningPackage::new(commitments, package.message())
            .serialize()
            .ok()
    }

    fn tamper(&self, lie: Lie, ceremony: &str, senders: &mut [(&str, &mut Vec<u8>)]) {
        if self.lie != lie {
            return;
        }
        let Some(target) = self.tamper_sender.as_deref() else {
            return;
        };
        for (sender, bytes) in senders.iter_mut() {
            if *sender == target && flip_last(bytes) {
                self.events.emit(&LiarEvent::DkgTampered {
                    lie,
                    ceremony: ceremony.to_string(),
                    sender: target.to_string(),
                });
            }
        }
    }
}

#[tonic::async_trait]
impl SignerNode for Liar {
    async fn get_status(
        &self,
        r: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        self.upstream().get_status(r.into_inner()).await
    }

    async fn dkg_start(
        &self,
        r: Request<pb::DkgStartRequest>,
    ) -> Result<Response<pb::DkgRound1Message>, Status> {
        self.upstream().dkg_start(r.into_inner()).await
    }

    async fn dkg_echo(
        &self,
        r: Request<pb::DkgEchoRequest>,
    ) -> Result<Response<pb::DkgEchoMessage>, Status> {
        let mut req = r.into_inner();
        let ceremony = req.ceremony_id.clone();
        let mut fields: Vec<_> = req
            .round1
            .iter_mut()
            .map(|m| (m.sender.as_str(), &mut m.package))
            .collect();
        self.tamper(Lie::DkgRound1, &ceremony, &mut fields);
        self.upstream().dkg_echo(req).await
    }

    async fn dkg_round2(
        &self,
        r: Request<pb::DkgRound2Request>,
    ) -> Result<Response<pb::DkgRound2Response>, Status> {
        let mut req = r.into_inner();
        let ceremony = req.ceremony_id.clone();
        let mut fields: Vec<_> = req
            .echoes
            .iter_mut()
            .map(|m| (m.sender.as_str(), &mut m.set_hash))
            .collect();
        self.tamper(Lie::DkgEcho, &ceremony, &mut fields);
        self.upstream().dkg_round2(req).await
    }

    async fn dkg_finish(
        &self,
        r: Request<pb::DkgFinishRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        let mut req = r.into_inner();
        let ceremony = req.ceremony_id.clone();
        let mut fields: Vec<_> = req
            .shares
            .iter_mut()
            .map(|m| (m.sender.as_str(), &mut m.ciphertext))
            .collect();
        self.tamper(Lie::DkgRound2, &ceremony, &mut fields);
        self.upstream().dkg_finish(req).await
    }

    async fn activate_group(
        &self,
        r: Request<pb::ActivateGroupRequest>,
    ) -> Result<Response<pb::ActivateGroupResponse>, Status> {
        self.upstream().activate_group(r.into_inner()).await
    }

    async fn commit_refresh(
        &self,
        r: Request<pb::CommitRefreshRequest>,
    ) -> Result<Response<pb::CommitRefreshResponse>, Status> {
        self.upstream().commit_refresh(r.into_inner()).await
    }

    async fn get_commit_certificate(
        &self,
        r: Request<pb::CommitCertificateRequest>,
    ) -> Result<Response<pb::CommitCertificate>, Status> {
        self.upstream().get_commit_certificate(r.into_inner()).await
    }

    async fn abandon_refresh(
        &self,
        r: Request<pb::AbandonRefreshRequest>,
    ) -> Result<Response<pb::RefreshAbandonPromise>, Status> {
        self.upstream().abandon_refresh(r.into_inner()).await
    }

    async fn drop_pending_refresh(
        &self,
        r: Request<pb::DropPendingRefreshRequest>,
    ) -> Result<Response<pb::DropPendingRefreshResponse>, Status> {
        self.upstream().drop_pending_refresh(r.into_inner()).await
    }

    async fn retire_group(
        &self,
        r: Request<pb::RetireGroupRequest>,
    ) -> Result<Response<pb::RetireGroupResponse>, Status> {
        self.upstream().retire_group(r.into_inner()).await
    }

    async fn change_registry(
        &self,
        r: Request<pb::ChangeRegistryRequest>,
    ) -> Result<Response<pb::ChangeRegistryResponse>, Status> {
        self.upstream().change_registry(r.into_inner()).await
    }

    async fn leave_group(
        &self,
        r: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        self.upstream().leave_group(r.into_inner()).await
    }

    async fn prepare_repair(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairAck>, Status> {
        self.upstream().prepare_repair(r.into_inner()).await
    }

    async fn repair_deltas(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairMessages>, Status> {
        self.upstream().repair_deltas(r.into_inner()).await
    }

    async fn repair_sigma(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgSealedShare>, Status> {
        self.upstream().repair_sigma(r.into_inner()).await
    }

    async fn repair_receive(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::DkgKeyReport>, Status> {
        self.upstream().repair_receive(r.into_inner()).await
    }

    async fn replace_member(
        &self,
        r: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::ReplaceMemberResponse>, Status> {
        self.upstream().replace_member(r.into_inner()).await
    }

    async fn announce(
        &self,
        r: Request<pb::SignedWithdrawal>,
    ) -> Result<Response<pb::AnnounceResponse>, Status> {
        self.upstream().announce(r.into_inner()).await
    }

    async fn reserve(
        &self,
        r: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        self.upstream().reserve(r.into_inner()).await
    }

    async fn attest(
        &self,
        r: Request<pb::AttestRequest>,
    ) -> Result<Response<pb::AttestResponse>, Status> {
        self.upstream().attest(r.into_inner()).await
    }

    async fn commit(
        &self,
        r: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let group = r.get_ref().key_group.clone();
        let mut resp = self.upstream().commit(r.into_inner()).await?;
        // What the first nonce really commits to, for the event log.
        let real = resp
            .get_ref()
            .nonces
            .first()
            .map(|n| n.commitments.clone())
            .unwrap_or_default();
        self.events.emit(&LiarEvent::Committed {
            group,
            identifier: resp.get_ref().identifier,
            commitments: hex::encode(&real),
        });
        if self.lie == Lie::BadCommitments {
            // Round 1 cannot tell a withdrawal from an activation test: the
            // chaos scenarios put a liar in place only after activation.
            // Every nonce of the batch: a coordinator's bank (many at once,
            // for no request yet) as much as one request's round 1.
            let identifier = resp.get_ref().identifier;
            let mut swapped = self.swapped.lock().map_err(|_| poisoned())?;
            if swapped.len() + resp.get_ref().nonces.len() > MAX_SWAPPED {
                swapped.clear();
            }
            for nonce in resp.get_mut().nonces.iter_mut() {
                let real = std::mem::replace(&mut nonce.commitments, self.fake_commitments()?);
                swapped.insert(nonce.handle.clone(), (identifier, real));
            }
        }
        Ok(resp)
    }

    async fn sign(
        &self,
        r: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let mut req = r.into_inner();
        let request_id = match &req.target {
            Some(pb::sign_request::Target::Withdrawal(w)) => Some(
                w.request
                    .as_ref()
                    .map(|r| r.request_id.clone())
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        let round2 = request_id
            .as_deref()
            .map_or(Lie::Honest, |r| self.round2_lie(r));
        if round2 == Lie::SilentAfterCommit {
            // Round 2 never reaches the node and nothing comes back: the
            // coordinator's deadline is the only way out of this call.
            self.events.emit(&LiarEvent::Lied {
                lie: round2,
                request: request_id.unwrap_or_default(),
            });
            return std::future::pending().await;
        }
        if self.lie == Lie::BadCommitments {
            let hidden = self
                .swapped
                .lock()
                .map_err(|_| poisoned())?
                .remove(req.nonce_handles.first().map_or(&[][..], Vec::as_slice));
            if let Some((identifier, real)) = hidden {
                if let Some(package) = req
                    .signing_packages
                    .first()
                    .and_then(|p| Liar::restore_commitments(p, identifier, &real))
                {
                    req.signing_packages[0] = package;
                    self.events.emit(&LiarEvent::Lied {
                        lie: Lie::BadCommitments,
                        request: request_id.clone().unwrap_or_default(),
                    });
                }
            }
        }
        let pause = match &request_id {
            Some(_) => std::mem::replace(
                &mut *self.pause.lock().map_err(|_| poisoned())?,
                PausePoint::None,
            ),
            None => PausePoint::None,
        };
        let request = request_id.clone().unwrap_or_default();
        // Forwarded from a task of its own: if the coordinator dies or gives up
        // meanwhile, round 2 still reaches the node and its answer is reported.
        let (tx, rx) = oneshot::channel();
        let upstream = self.upstream();
        let resume = self.resume.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            if pause == PausePoint::BeforeSign {
                events.emit(&LiarEvent::Paused {
                    point: pause,
                    request: request.clone(),
                });
                resume.notified().await;
            }
            let result = upstream.clone().sign(req).await;
            if !request.is_empty() {
                let (ok, code, message) = match &result {
                    Ok(_) => (true, "Ok".to_string(), String::new()),
                    Err(s) => (false, format!("{:?}", s.code()), s.message().to_string()),
                };
                events.emit(&LiarEvent::SignForwarded {
                    request: request.clone(),
                    ok,
                    code,
                    message,
                });
            }
            if pause == PausePoint::AfterSign {
                events.emit(&LiarEvent::Paused {
                    point: pause,
                    request,
                });
                resume.notified().await;
            }
            let _ = tx.send(result);
        });
        let mut resp = rx
            .await
            .map_err(|_| Status::internal("liar: the forwarding task vanished"))??;
        if round2 == Lie::SlowSign {
            tokio::time::sleep(self.sign_delay).await;
            self.events.emit(&LiarEvent::Lied {
                lie: round2,
                request: request_id.clone().unwrap_or_default(),
            });
        }
        if round2 == Lie::BadShare {
            if let Some(request) = request_id {
                // Add one to the scalar: still a valid encoding, never a valid share.
                let share = resp.get_mut().signature_shares.first_mut();
                if let Some(last) = share.and_then(|s| s.last_mut()) {
                    *last = last.wrapping_add(1);
                    self.events.emit(&LiarEvent::Lied {
                        lie: Lie::BadShare,
                        request,
                    });
                }
            }
        }
        Ok(resp)
    }
}

/// Serves a liar in front of the node `upstream` reaches, on `listener`, with
/// the node's identity `identity`, until `shutdown` resolves. The first event
/// is [`LiarEvent::Listening`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    identity: &TlsMaterial,
    upstream: SignerNodeClient<Channel>,
    options: LiarOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProtoError> {
    let max = permafrost_proto::server::MAX_MESSAGE_BYTES;
    let addr = listener
        .local_addr()
        .map_err(|e| ProtoError::Server(format!("listener address: {e}")))?;
    let events = options.events.clone();
    let liar = Liar {
        upstream: upstream.max_decoding_message_size(max),
        lie: options.lie,
        tamper_sender: options.tamper_sender,
        pause: Mutex::new(options.pause),
        resume: options.resume,
        rng: Mutex::new(StdRng::seed_from_u64(options.seed)),
        swapped: Mutex::new(HashMap::new()),
        seed: options.seed,
        sign_delay: options.sign_delay,
        events: options.events,
    };
    let routes =
        tonic::service::Routes::new(SignerNodeServer::new(liar).max_decoding_message_size(max));
    events.emit(&LiarEvent::Listening {
        addr: addr.to_string(),
    });
    permafrost_proto::server::serve(
        listener,
        identity,
        routes,
        &["permafrost.v1.SignerNode"],
        None,
        permafrost_proto::server::ServerLimits::default(),
        shutdown,
    )
    .await
}

mod process;
pub use process::run;

#[cfg(test)]
mod tests;
