//! Smoke test of `permafrost-sim bench --wan`: a 2-of-3 group in three
//! network namespaces at 40 ms round trip, a few honest requests and a few
//! with an invalid-share signer. Not timed, except the one bound the delay
//! itself guarantees (no signature in under one round trip, so the traffic
//! did cross the delayed links); afterwards no namespace of this process is
//! left. Runs only as root with `ip` and `tc` and namespaces allowed, and
//! with the binaries built (`cargo build --workspace --bins`); else skipped.

use std::path::PathBuf;
use std::process::Command;

use permafrost_simulations::bench::wan::{WanFault, WanNet};
use permafrost_simulations::bench::{BenchArgs, BenchPlan, GroupShape};

fn skip_reason(bin_dir: &std::path::Path) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Some("not root".into());
    }
    let probe = format!("pfwanprobe{}", std::process::id());
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        return Some("`ip netns add` is not available or not allowed here".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    [
        "permafrost-node",
        "permafrost-coordinator",
        "permafrost-liar",
    ]
    .iter()
    .map(|b| bin_dir.join(b))
    .find(|p| !p.is_file())
    .map(|p| format!("{} is missing: cargo build --workspace --bins", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_bench_signs_across_namespaces_and_cleans_up() {
    permafrost_proto::tls::install_crypto_provider();
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_permafrost-sim"));
    let bin_dir = sim.parent().expect("binary directory").to_path_buf();
    if let Some(why) = skip_reason(&bin_dir) {
        eprintln!("SKIPPED wan bench smoke test: {why}");
        return;
    }
    let plan = BenchPlan::from_args(&BenchArgs {
        wan: Some(40.0),
        wan_groups: vec![GroupShape::new(2, 3)],
        wan_requests: 3,
        wan_fault_requests: 2,
        wan_faults: vec![WanFault::BadShare],
        bin_dir: Some(bin_dir),
        ..BenchArgs::default()
    })
    .expect("plan");
    let wan = plan.wan.clone().expect("wan plan");
    let report = permafrost_simulations::bench::wan::run(&plan, &wan)
        .await
        .expect("WAN bench runs");
    let text = report.render();
    assert_eq!(report.cases.len(), 2, "{text}");
    for case in &report.cases {
        assert_eq!(
            (case.ok, case.requests),
            (case.requests, case.requests.max(1)),
            "{text}"
        );
        let p50 = case.p50_rtt.expect("measured");
        assert!(
            p50 >= 1.0,
            "signed in {p50} RTT: the delay was not applied\n{text}"
        );
    }
    assert!(
        WanNet::existing_of_this_process().is_empty(),
        "namespaces left behind: {:?}",
        WanNet::existing_of_this_process()
    );
}
