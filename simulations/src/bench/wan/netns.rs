//! The network of `bench --wan`: one Linux network namespace per region on
//! this host, a veth link from the coordinator's region to every other region
//! with `tc netem` delay (half the round trip each way), jitter and loss on
//! both ends, and one undelayed link from the host (where the bench client
//! runs, beside the coordinator) into the coordinator's region.
//!
//! A kernel built without netem (`CONFIG_NET_SCH_NETEM`) cannot delay
//! packets; there [`Delay::Relay`] links every region to the host instead,
//! undelayed, and the caller delays the coordinator's connections to other
//! regions in user space (the chaos link proxy on the host's end of the
//! coordinator's link). Region addresses are the same either way.
//!
//! Addresses are private (10.203.K.0/24, K the region's index) and exist only
//! inside the namespaces and on the one host-side veth; no route leaves this
//! machine. Dropping [`WanNet`] deletes every namespace, and with each its
//! links; namespaces left by a run that was killed outright are deleted by the
//! next run (their names carry the owning process id).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use crate::SimError;

/// Names of every namespace and host link this module creates start with this.
const PREFIX: &str = "pfwan";
/// First two octets of every address on the links.
const NET: [u8; 2] = [10, 203];

/// Where the inter-region delay is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Delay {
    /// `tc netem` on the veth links between regions (per packet, in the kernel).
    Netem,
    /// A user-space relay on the host, per chunk of each connection (kernels without netem).
    Relay,
}

/// Delay, jitter and loss between the coordinator's region and every other.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WanProfile {
    /// Round-trip time added between regions (half on each direction).
    pub rtt: Duration,
    /// netem jitter per direction (normal around the delay).
    pub jitter: Duration,
    /// Packet loss per direction, in percent.
    pub loss_pct: f64,
}

/// One region: its namespace and the address its daemons listen on.
#[derive(Clone, Debug)]
pub struct RegionNet {
    /// Region name, e.g. `us-east`.
    pub name: String,
    /// Network namespace (for `ip netns exec`).
    pub netns: String,
    /// Where daemons in this region listen (reachable from the coordinator's region).
    pub addr: Ipv4Addr,
}

/// The namespaces of one run; deleted on drop.
#[derive(Debug)]
pub struct WanNet {
    regions: Vec<RegionNet>,
    created: Vec<String>,
    delay: Delay,
}

/// Refuses to go on without root (namespaces and qdiscs need CAP_NET_ADMIN)
/// or without `ip` and `tc`.
pub fn preflight() -> Result<(), SimError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        return Err(SimError::Setup(
            "--wan creates network namespaces and netem qdiscs: run it as root (e.g. sudo); nothing was changed".into(),
        ));
    }
    for tool in ["ip", "tc"] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Err(SimError::Setup(format!(
                "--wan needs `{tool}` from iproute2 (apt-get install -y iproute2)"
            )));
        }
    }
    Ok(())
}

/// Refuses when the host already uses the links' addresses.
/// Links a run just deleted leave the host's routes a moment later (the
/// kernel tears veths down asynchronously): waits up to 5 s for those.
fn check_addresses_free() -> Result<(), SimError> {
    let ours = format!("{}.{}.", NET[0], NET[1]);
    let mut routes = output("ip", &["-4", "route", "show"])?;
    for _ in 0..50 {
        let mine: Vec<&str> = routes.lines().filter(|l| l.starts_with(&ours)).collect();
        if mine.is_empty() || !mine.iter().all(|l| l.contains(" dev pfwan")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        routes = output("ip", &["-4", "route", "show"])?;
    }
    if routes.lines().any(|l| l.starts_with(&ours)) {
        return Err(SimError::Setup(format!(
            "this host already routes {ours}0.0/16; --wan uses it for its private links, so it will not add another"
        )));
    }
    Ok(())
}

fn run(program: &str, args: &[&str]) -> Result<(), SimError> {
    output(program, args).map(|_| ())
}

fn output(program: &str, args: &[&str]) -> Result<String, SimError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| SimError::Setup(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SimError::Setup(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `delay D [J] loss L%` for one direction of `profile`.
fn netem_args(profile: &WanProfile) -> Vec<String> {
    let ms = |d: Duration| format!("{:.3}ms", d.as_secs_f64() * 1000.0);
    let mut args = vec!["delay".to_string(), ms(profile.rtt / 2)];
    if !profile.jitter.is_zero() {
        args.push(ms(profile.jitter));
    }
    if profile.loss_pct > 0.0 {
        args.extend(["loss".to_string(), format!("{}%", profile.loss_pct)]);
    }
    args
}

/// Deletes namespaces of earlier runs whose process is gone (killed with -9).
fn delete_stale() {
    let Ok(list) = output("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

impl WanNet {
    /// Builds the namespaces for `regions` (the first holds the coordinator).
    pub fn create(
        regions: &[&str],
        profile: &WanProfile,
        delay: Option<Delay>,
    ) -> Result<Self, SimError> {
        preflight()?;
        delete_stale();
        check_addresses_free()?;
        let pid = std::process::id();
        let mut net = Self {
            regions: Vec::new(),
            created: Vec::new(),
            delay: Delay::Netem,
        };
        for (k, name) in regions.iter().enumerate() {
            let netns = format!("{PREFIX}{pid}-{k}");
            run("ip", &["netns", "add", &netns])?;
            net.created.push(netns.clone());
            run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
            let k = u8::try_from(k).map_err(|_| SimError::Setup("too many regions".into()))?;
            net.regions.push(RegionNet {
                name: (*name).to_string(),
                netns,
                addr: Ipv4Addr::new(NET[0], NET[1], k, 2),
            });
        }
        let home = net
            .regions
            .first()
            .cloned()
            .ok_or_else(|| SimError::Setup("--wan needs at least one region".into()))?;
        let netem_works = {
            let probe = [
                "-n",
                home.netns.as_str(),
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
            ];
            let ok = run("tc", &probe).is_ok();
            if ok {
                run(
                    "tc",
                    &["-n", &home.netns, "qdisc", "del", "dev", "lo", "root"],
                )?;
            }
            ok
        };
        net.delay = match (delay, netem_works) {
            (Some(Delay::Netem), false) => {
                return Err(SimError::Setup(
                    "--wan-delay netem: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM); use --wan-delay relay".into(),
                ))
            }
            (Some(d), _) => d,
            (None, true) => Delay::Netem,
            (None, false) => {
                eprintln!("permafrost-sim: this kernel has no netem qdisc; delaying in a user-space relay instead (--wan-delay relay)");
                Delay::Relay
            }
        };
        // The host side: the bench client reaches the coordinator over this, undelayed.
        let host = format!("{PREFIX}{pid}h");
        let subnet = |k: u8, host: u8| format!("{}.{}.{k}.{host}/24", NET[0], NET[1]);
        run(
            "ip",
            &[
                "link",
                "add",
                &host,
                "type",
                "veth",
                "peer",
                "name",
                "host0",
                "netns",
                &home.netns,
            ],
        )?;
        run("ip", &["addr", "add", &subnet(0, 1), "dev", &host])?;
        run("ip", &["link", "set", &host, "up"])?;
        run(
            "ip",
            &[
                "-n",
                &home.netns,
                "addr",
                "add",
                &subnet(0, 2),
                "dev",
                "host0",
            ],
        )?;
        run("ip", &["-n", &home.netns, "link", "set", "host0", "up"])?;
        let netem = netem_args(profile);
        for (k, region) in net.regions.iter().enumerate().skip(1) {
            let k = u8::try_from(k).map_err(|_| SimError::Setup("too many regions".into()))?;
            if net.delay == Delay::Relay {
                let host = format!("{PREFIX}{pid}h{k}");
                run(
                    "ip",
                    &[
                        "link",
                        "add",
                        &host,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        "wan0",
                        "netns",
                        &region.netns,
                    ],
                )?;
                run("ip", &["addr", "add", &subnet(k, 1), "dev", &host])?;
                run("ip", &["link", "set", &host, "up"])?;
                run(
                    "ip",
                    &[
                        "-n",
                        &region.netns,
                        "addr",
                        "add",
                        &subnet(k, 2),
                        "dev",
                        "wan0",
                    ],
                )?;
                run("ip", &["-n", &region.netns, "link", "set", "wan0", "up"])?;
                continue;
            }
            let near = format!("to{k}");
            run(
                "ip",
                &[
                    "-n",
                    &home.netns,
                    "link",
                    "add",
                    &near,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "wan0",
                    "netns",
                    &region.netns,
                ],
            )?;
            for (ns, dev, host) in [(&home.netns, near.as_str(), 1), (&region.netns, "wan0", 2)] {
                run(
                    "ip",
                    &["-n", ns, "addr", "add", &subnet(k, host), "dev", dev],
                )?;
                run("ip", &["-n", ns, "link", "set", dev, "up"])?;
                let mut args = vec![
                    "-n",
                    ns.as_str(),
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "netem",
                ];
                args.extend(netem.iter().map(String::as_str));
                run("tc", &args)?;
            }
        }
        Ok(net)
    }

    /// Where the delay is applied.
    pub fn delay(&self) -> Delay {
        self.delay
    }

    /// The host's end of the link into the coordinator's region (where a relay listens).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], 0, 1)
    }

    /// The regions, the coordinator's first.
    pub fn regions(&self) -> &[RegionNet] {
        &self.regions
    }

    /// Namespaces of this process that exist right now (for tests: none after drop).
    pub fn existing_of_this_process() -> Vec<String> {
        let mine = format!("{PREFIX}{}-", std::process::id());
        output("ip", &["netns", "list"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&mine))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for WanNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of every veth, and with it the other end.
        for netns in self.created.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", netns]) {
                eprintln!("permafrost-sim: cannot delete network namespace {netns}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_splits_the_round_trip() {
        let p = WanProfile {
            rtt: Duration::from_millis(153),
            jitter: Duration::ZERO,
            loss_pct: 0.0,
        };
        assert_eq!(netem_args(&p), ["delay", "76.500ms"]);
        let p = WanProfile {
            jitter: Duration::from_millis(5),
            loss_pct: 0.5,
            ..p
        };
        assert_eq!(
            netem_args(&p),
            ["delay", "76.500ms", "5.000ms", "loss", "0.5%"]
        );
    }
}
