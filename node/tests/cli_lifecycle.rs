//! The `permafrost-node` binary end to end, per sealer backend: `init` prints the public
//! info, `run` refuses an unusable sealer with a message naming the cause (exit status 1,
//! data dir byte-identical), and with the right secret it serves until SIGTERM.

mod common;

use std::time::Duration;

use common::{process, NodeDir};

fn init_refuse_then_serve(dir: &NodeDir, expected_refusal: &str) {
    let config = dir.config_path();
    let config_arg = config.to_str().expect("UTF-8 path");
    let info = process::init(&config, dir.root.path());
    assert_eq!(info.id.as_str(), common::NODE_ID);
    dir.enroll(&info);

    let before = dir.snapshot();
    dir.use_wrong_secret();
    let (status, stderr) = process::run_to_exit(&["run", "--config", config_arg], dir.root.path());
    assert_eq!(
        status.code(),
        Some(1),
        "refused start exits 1; stderr:\n{stderr}"
    );
    assert!(stderr.contains(expected_refusal), "{stderr}");
    assert!(
        !stderr.contains(common::PASSPHRASE) && !stderr.contains(common::USER_PIN),
        "{stderr}"
    );
    common::assert_unchanged(&before, &dir.snapshot());

    dir.use_right_secret();
    let mut node = process::spawn(&["run", "--config", config_arg], dir.root.path(), false);
    node.wait_for_line("serving", Duration::from_secs(60));
    // "serving" is logged just before the server starts; the SIGTERM handler is installed
    // when the shutdown future is first polled, a moment later. Until then SIGTERM's default
    // action would end the process without the shutdown audit record.
    std::thread::sleep(Duration::from_millis(500));
    node.signal("TERM");
    let status = node.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean shutdown on SIGTERM: {status:?}; stderr:\n{}",
        node.stderr_text()
    );
}

#[test]
fn passphrase_node_binary_init_refuse_and_serve() {
    init_refuse_then_serve(
        &NodeDir::passphrase(),
        "permafrost-node: sealer: wrong passphrase",
    );
}

#[test]
fn pkcs11_node_binary_init_refuse_and_serve() {
    let Some(dir) = NodeDir::pkcs11("cli") else {
        return;
    };
    init_refuse_then_serve(
        &dir,
        "permafrost-node: sealer: wrong PIN for the PKCS#11 token",
    );
}

#[test]
fn pkcs11_node_binary_refuses_a_missing_module_naming_it() {
    let Some(dir) = NodeDir::pkcs11("cli-module") else {
        return;
    };
    let config = dir.config_path();
    let info = process::init(&config, dir.root.path());
    dir.enroll(&info);
    let before = dir.snapshot();
    let original = std::fs::read_to_string(&config).expect("read config");
    let module = common::module_path().display().to_string();
    common::write(
        &config,
        &original.replace(&module, "/opt/hsm/lib/libvendor-pkcs11.so"),
    );
    let (status, stderr) = process::run_to_exit(
        &["run", "--config", config.to_str().expect("UTF-8 path")],
        dir.root.path(),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sealer: HSM unavailable: PKCS#11 module /opt/hsm/lib/libvendor-pkcs11.so"),
        "{stderr}"
    );
    common::assert_unchanged(&before, &dir.snapshot());
}

/// `--log-format` picks the log format on either side of the subcommand and
/// wins over `PERMAFROST_LOG_JSON`, which still works on its own.
#[test]
fn log_format_flag_wins_over_the_environment() {
    let dir = NodeDir::passphrase();
    let config = dir.config_path();
    let config_arg = config.to_str().expect("UTF-8 path");
    let info = process::init(&config, dir.root.path());
    dir.enroll(&info);
    /// Arguments, environment, and whether the lines must be JSON.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 4] = [
        (
            &["run", "--config", config_arg, "--log-format", "json"],
            &[],
            true,
        ),
        (
            &["--log-format", "json", "run", "--config", config_arg],
            &[],
            true,
        ),
        (
            &["run", "--config", config_arg, "--log-format", "text"],
            &[("PERMAFROST_LOG_JSON", "1")],
            false,
        ),
        (
            &["run", "--config", config_arg],
            &[("PERMAFROST_LOG_JSON", "1")],
            true,
        ),
    ];
    for (args, env, json) in cases {
        let mut node = process::spawn_with_env(args, dir.root.path(), env);
        let line = node.wait_for_line("serving", Duration::from_secs(60));
        let parsed = serde_json::from_str::<serde_json::Value>(&line);
        if json {
            let record = parsed.unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            assert_eq!(record["fields"]["message"], "serving", "{line}");
            assert_eq!(record["level"], "INFO", "{line}");
        } else {
            assert!(
                parsed.is_err(),
                "{args:?} {env:?}: JSON where text was asked: {line}"
            );
            assert!(line.contains("INFO") && line.contains("serving"), "{line}");
        }
        std::thread::sleep(Duration::from_millis(500));
        node.signal("TERM");
        let status = node.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "{args:?}: {status:?}\n{}",
            node.stderr_text()
        );
    }
    let (status, stderr) = process::run_to_exit(
        &["run", "--config", config_arg, "--log-format", "yaml"],
        dir.root.path(),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("yaml") && stderr.contains("json"),
        "{stderr}"
    );
}
