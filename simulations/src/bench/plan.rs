//! What a bench run does: the command line and the counts it resolves to
//! (full defaults, or the tiny `--quick` configuration the smoke test uses).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::bench::wan::{Delay, NonceMode, WanFault, WanPlan};

/// A `T-of-N` group shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GroupShape {
    /// Signers needed.
    pub threshold: u16,
    /// Members.
    pub members: u16,
}

impl GroupShape {
    /// `threshold`-of-`members`.
    pub const fn new(threshold: u16, members: u16) -> Self {
        Self { threshold, members }
    }

    /// Key group name for this shape, e.g. `dkg-7of10`.
    pub fn group_name(&self, prefix: &str) -> String {
        format!("{prefix}-{}of{}", self.threshold, self.members)
    }
}

impl Default for GroupShape {
    /// The warm group of `up`: 2-of-3.
    fn default() -> Self {
        Self::new(2, 3)
    }
}

impl fmt::Display for GroupShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-of-{}", self.threshold, self.members)
    }
}

impl FromStr for GroupShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not T-of-N (e.g. 2-of-3)");
        let (t, n) = s.trim().split_once("-of-").ok_or_else(bad)?;
        let threshold: u16 = t.parse().map_err(|_| bad())?;
        let members: u16 = n.parse().map_err(|_| bad())?;
        if threshold < 2 || threshold > members || members > 200 {
            return Err(format!(
                "{s:?}: need 2 <= T <= N <= 200 (FROST needs at least two signers)"
            ));
        }
        Ok(Self { threshold, members })
    }
}

fn parse_level(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(c) if (1..=4096).contains(&c) => Ok(c),
        _ => Err(format!("{v:?}: a level is 1..=4096 requests in flight")),
    }
}

/// Command line of `permafrost-sim bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Write every figure as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Tiny run for CI: 20 requests at 1 and at 8 in flight, DKG 2-of-3 only (explicit flags still win).
    #[arg(long)]
    pub quick: bool,
    /// Also a 67-of-100 group on 100 node processes (heavy: minutes and ~2 GiB on 2 cores).
    #[arg(long)]
    pub large: bool,
    /// Then hold 256 in flight for MINUTES on a fresh cluster, with kill -9 of a node and of the coordinator midway.
    #[arg(long, value_name = "MINUTES")]
    pub soak: Option<f64>,
    /// Shape of the warm group the load signs with, on the 5-node cluster (N <= 5).
    #[arg(long, value_name = "T-of-N", default_value = "2-of-3")]
    pub group: GroupShape,
    /// Sequential withdrawals (one in flight) [default: 200; --quick 20].
    #[arg(long, value_name = "N")]
    pub sequential: Option<usize>,
    /// Requests-in-flight levels [default: 8,64,256; --quick 8].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_level)]
    pub levels: Option<Vec<usize>>,
    /// Requests per level [default: max(4 x level, 200); --quick 20].
    #[arg(long, value_name = "N")]
    pub requests: Option<usize>,
    /// Key ceremonies to time, through the coordinator [default: 2-of-3,3-of-5,7-of-10; --quick 2-of-3].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub dkg: Option<Vec<GroupShape>>,
    /// Sequential signatures with the largest ceremony's group [default: 20; --quick 0].
    #[arg(long, value_name = "N")]
    pub wide_signatures: Option<usize>,
    /// In-process signatures timed for the floor [default: 200; --quick 20].
    #[arg(long, value_name = "N")]
    pub floor_signatures: Option<usize>,
    /// A request with no final status after this many seconds is a hang.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub hang_secs: u64,
    /// Client connections (HTTP/2, mTLS) the load spreads over.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub connections: u16,
    /// Upper bound on requests the soak starts.
    #[arg(long, value_name = "N", default_value_t = 500_000)]
    pub soak_max_requests: usize,
    /// Build the clusters under this (new or empty) directory instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the clusters' directories (configs, data, logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Directory holding permafrost-node and permafrost-coordinator (default: next to permafrost-sim).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Instead of the loopback bench: each region in its own network namespace, MS round trip
    /// (tc netem) between the coordinator's region and the others; latency in RTTs (root).
    #[arg(long, value_name = "MS")]
    pub wan: Option<f64>,
    /// With --wan: netem jitter per direction, in ms.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    pub wan_jitter: f64,
    /// With --wan: netem packet loss per direction, in percent.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub wan_loss: f64,
    /// With --wan: the groups measured (one cluster with as many nodes as the largest).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "3-of-5,7-of-10"
    )]
    pub wan_groups: Vec<GroupShape>,
    /// With --wan: sequential honest withdrawals per group.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub wan_requests: usize,
    /// With --wan: sequential withdrawals per group and fault, n − t members faulty.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub wan_fault_requests: usize,
    /// With --wan: the faults measured.
    #[arg(
        long,
        value_name = "LIST",
        value_enum,
        value_delimiter = ',',
        default_value = "silent-after-commit,bad-share,slow-under-deadline"
    )]
    pub wan_faults: Vec<WanFault>,
    /// With --wan: where the delay is applied [default: netem, or relay when the kernel has no netem].
    #[arg(long, value_name = "HOW", value_enum)]
    pub wan_delay: Option<Delay>,
    /// With --wan: also measure with banked nonces (the coordinator's
    /// default; commitments issued ahead of requests, one round trip fewer).
    #[arg(long)]
    pub banked_nonces: bool,
    /// With --wan: a policy without a daily limit, so no group-wide velocity
    /// round (Reserve, Attest) sits on the signing path.
    #[arg(long)]
    pub wan_no_velocity: bool,
}

impl Default for BenchArgs {
    /// The command line with no flags.
    fn default() -> Self {
        Self {
            json: None,
            quick: false,
            large: false,
            soak: None,
            group: GroupShape::default(),
            sequential: None,
            levels: None,
            requests: None,
            dkg: None,
            wide_signatures: None,
            floor_signatures: None,
            hang_secs: 30,
            connections: 4,
            soak_max_requests: 500_000,
            dir: None,
            keep: false,
            bin_dir: None,
            wan: None,
            wan_jitter: 0.0,
            wan_loss: 0.0,
            wan_groups: vec![GroupShape::new(3, 5), GroupShape::new(7, 10)],
            wan_requests: 40,
            wan_fault_requests: 10,
            wan_faults: vec![
                WanFault::SilentAfterCommit,
                WanFault::BadShare,
                WanFault::SlowUnderDeadline,
            ],
            wan_delay: None,
            banked_nonces: false,
            wan_no_velocity: false,
        }
    }
}

/// Checks and resolves the `--wan*` flags.
fn wan_plan(a: &BenchArgs, rtt_ms: f64) -> Result<WanPlan, String> {
    if !(rtt_ms.is_finite() && rtt_ms > 0.0 && rtt_ms <= 5_000.0) {
        return Err(format!(
            "--wan {rtt_ms}: give a round trip of 0 < MS <= 5000"
        ));
    }
    if !(a.wan_jitter.is_finite() && a.wan_jitter >= 0.0 && a.wan_jitter <= rtt_ms / 2.0) {
        return Err(format!(
            "--wan-jitter {}: give 0 <= MS <= half the round trip ({})",
            a.wan_jitter,
            rtt_ms / 2.0
        ));
    }
    if !(a.wan_loss.is_finite() && (0.0..=50.0).contains(&a.wan_loss)) {
        return Err(format!("--wan-loss {}: give 0 <= PCT <= 50", a.wan_loss));
    }
    if a.wan_groups.is_empty() || a.wan_groups.iter().any(|g| g.members > 30) {
        return Err("--wan-groups: give one to a few groups of at most 30 members".into());
    }
    if a.wan_requests == 0 {
        return Err("--wan-requests must be at least 1".into());
    }
    let mut nonce_modes = vec![NonceMode::TwoRounds];
    if a.banked_nonces {
        nonce_modes.push(NonceMode::Banked);
    }
    Ok(WanPlan {
        rtt_ms,
        jitter_ms: a.wan_jitter,
        loss_pct: a.wan_loss,
        groups: a.wan_groups.clone(),
        requests: a.wan_requests,
        fault_requests: a.wan_fault_requests,
        faults: a.wan_faults.clone(),
        nonce_modes,
        delay: a.wan_delay,
        group_wide_velocity: !a.wan_no_velocity,
    })
}

/// A resolved bench run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchPlan {
    /// The tiny configuration.
    pub quick: bool,
    /// Shape of the load's group on the 5-node cluster.
    pub group: GroupShape,
    /// Sequential withdrawals.
    pub sequential: usize,
    /// In-flight levels.
    pub levels: Vec<usize>,
    /// Requests per level (`None`: max(4 x level, 200)).
    pub requests_per_level: Option<usize>,
    /// Ceremonies to time.
    pub dkg: Vec<GroupShape>,
    /// Signatures with the largest ceremony's group.
    pub wide_signatures: usize,
    /// Floor signatures.
    pub floor_signatures: usize,
    /// The 67-of-100 group.
    pub large: Option<GroupShape>,
    /// Signatures with the large group.
    pub large_signatures: usize,
    /// Soak length.
    #[serde(serialize_with = "secs_opt")]
    pub soak: Option<Duration>,
    /// Soak request bound.
    pub soak_max_requests: usize,
    /// Soak requests in flight.
    pub soak_concurrency: usize,
    /// Hang limit.
    #[serde(serialize_with = "secs")]
    pub hang: Duration,
    /// Client connections.
    pub connections: usize,
    /// JSON output.
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// Parent directory of the clusters.
    #[serde(skip)]
    pub dir: Option<PathBuf>,
    /// Keep the clusters' directories.
    #[serde(skip)]
    pub keep: bool,
    /// Binary directory.
    #[serde(skip)]
    pub bin_dir: Option<PathBuf>,
    /// The WAN bench instead of the loopback one.
    pub wan: Option<WanPlan>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn secs_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl BenchPlan {
    /// Resolves the command line; explicit flags win over `--quick`.
    pub fn from_args(a: &BenchArgs) -> Result<Self, String> {
        let q = a.quick;
        if a.group.members > 5 {
            return Err(format!(
                "--group {}: the load cluster has 5 nodes (N <= 5)",
                a.group
            ));
        }
        let soak = match a.soak {
            None => None,
            Some(m) if m.is_finite() && m > 0.0 && m <= 24.0 * 60.0 => {
                Some(Duration::from_secs_f64(m * 60.0))
            }
            Some(m) => return Err(format!("--soak {m}: give 0 < MINUTES <= 1440")),
        };
        if a.hang_secs == 0 {
            return Err("--hang-secs must be at least 1".into());
        }
        let pick = |explicit: Option<usize>, full: usize, quick: usize| {
            explicit.unwrap_or(if q { quick } else { full })
        };
        Ok(Self {
            quick: q,
            group: a.group,
            sequential: pick(a.sequential, 200, 20),
            levels: a
                .levels
                .clone()
                .unwrap_or_else(|| if q { vec![8] } else { vec![8, 64, 256] }),
            requests_per_level: a.requests.or(if q { Some(20) } else { None }),
            dkg: a.dkg.clone().unwrap_or_else(|| {
                if q {
                    vec![GroupShape::new(2, 3)]
                } else {
                    vec![
                        GroupShape::new(2, 3),
                        GroupShape::new(3, 5),
                        GroupShape::new(7, 10),
                    ]
                }
            }),
            wide_signatures: pick(a.wide_signatures, 20, 0),
            floor_signatures: pick(a.floor_signatures, 200, 20).max(1),
            large: a.large.then_some(GroupShape::new(67, 100)),
            large_signatures: 5,
            soak,
            soak_max_requests: a.soak_max_requests.max(1),
            soak_concurrency: 256,
            hang: Duration::from_secs(a.hang_secs),
            connections: usize::from(a.connections),
            json: a.json.clone(),
            dir: a.dir.clone(),
            keep: a.keep,
            bin_dir: a.bin_dir.clone(),
            wan: a.wan.map(|rtt| wan_plan(a, rtt)).transpose()?,
        })
    }

    /// Requests sent at `level` in flight.
    pub fn requests_at(&self, level: usize) -> usize {
        self.requests_per_level
            .unwrap_or_else(|| (4 * level).max(200))
            .max(1)
    }

    /// The tiny plan of the smoke test, binaries from `bin_dir`.
    pub fn quick(bin_dir: Option<PathBuf>) -> Result<Self, String> {
        Self::from_args(&BenchArgs {
            quick: true,
            bin_dir,
            ..BenchArgs::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_levels_parse() {
        assert_eq!("7-of-10".parse::<GroupShape>(), Ok(GroupShape::new(7, 10)));
        assert!("1-of-3".parse::<GroupShape>().is_err());
        assert!("4-of-3".parse::<GroupShape>().is_err());
        assert!("seven".parse::<GroupShape>().is_err());
        assert_eq!(GroupShape::new(67, 100).group_name("dkg"), "dkg-67of100");
        assert_eq!(parse_level("64"), Ok(64));
        assert!(parse_level("0").is_err());
    }

    #[test]
    fn quick_is_small_and_explicit_flags_win() {
        let q = BenchPlan::quick(None).expect("quick plan");
        assert_eq!(
            (q.sequential, q.levels.clone(), q.requests_at(8)),
            (20, vec![8], 20)
        );
        assert_eq!(q.dkg, vec![GroupShape::new(2, 3)]);
        let full = BenchPlan::from_args(&BenchArgs::default()).expect("defaults");
        assert_eq!(full.levels, vec![8, 64, 256]);
        assert_eq!((full.requests_at(8), full.requests_at(256)), (200, 1024));
        let mixed = BenchPlan::from_args(&BenchArgs {
            quick: true,
            sequential: Some(7),
            group: GroupShape::new(3, 5),
            ..BenchArgs::default()
        })
        .expect("quick with a flag");
        assert_eq!((mixed.sequential, mixed.group), (7, GroupShape::new(3, 5)));
        assert!(BenchPlan::from_args(&BenchArgs {
            group: GroupShape::new(3, 7),
            ..BenchArgs::default()
        })
        .is_err());
    }
}

#[cfg(test)]
mod cli_tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        bench: super::BenchArgs,
    }

    #[test]
    fn explicit_lists_parse() {
        let w = Wrap::try_parse_from(["bench", "--levels", "8,64", "--dkg", "2-of-3,3-of-5"])
            .expect("parses");
        assert_eq!(w.bench.levels, Some(vec![8, 64]));
        assert_eq!(w.bench.dkg.map(|d| d.len()), Some(2));
        assert!(Wrap::try_parse_from(["bench", "--levels", "0"]).is_err());
    }

    #[test]
    fn wan_flags_resolve_and_are_checked() {
        let w = Wrap::try_parse_from(["bench", "--wan", "153", "--banked-nonces"]).expect("parses");
        let plan = super::BenchPlan::from_args(&w.bench).expect("plan");
        let wan = plan.wan.expect("wan plan");
        assert_eq!(wan.rtt_ms, 153.0);
        assert_eq!(wan.groups.len(), 2);
        assert_eq!(wan.faults.len(), 3);
        assert_eq!(wan.nonce_modes.len(), 2);
        for bad in [
            vec!["bench", "--wan", "0"],
            vec!["bench", "--wan", "100", "--wan-jitter", "80"],
            vec!["bench", "--wan", "100", "--wan-loss", "60"],
        ] {
            let w = Wrap::try_parse_from(bad.clone()).expect("parses");
            assert!(super::BenchPlan::from_args(&w.bench).is_err(), "{bad:?}");
        }
    }
}
