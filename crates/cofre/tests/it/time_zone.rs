//! `[instance] time_zone`: policies' hours are read in the instance's zone, through the real
//! server and CLI. (Across a daylight-saving change: `cofre-core`
//! `policy::tests::a_window_across_daylight_saving_follows_the_zone` and the service-level
//! `cofre-app approvals::policy_hours_follow_the_zone_across_daylight_saving`, which move the
//! clock.)

use crate::harness::*;
use std::process::Command;

/// The hour of the day now in UTC and in Tokyo (UTC+9 all year).
fn hours_now() -> (u64, u64) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let utc = secs / 3600 % 24;
    (utc, (utc + 9) % 24)
}

/// Two hours from the start of `hour`: now is inside for at least another hour.
fn window_from(hour: u64) -> String {
    format!("{hour:02}:00-{:02}:00", (hour + 2) % 24)
}

#[test]
fn policy_hours_are_read_in_the_instance_time_zone() {
    let inst = Instance::new(Backend::Sqlite);
    let config = inst.path().join("cofre.toml");
    std::fs::write(&config, "[instance]\ntime_zone = \"Asia/Tokyo\"\n").unwrap();
    let server = inst.start_with_env(&[("COFRE_CONFIG", config.to_str().unwrap())]);
    let (admin, _) = admin_cli(&inst, &server);
    admin.ok(&["group", "add", "ops"]);
    let (alice, _, _) = add_user_cli(&inst, &server, &admin, "alice", "user", &["ops"]);
    let (utc_hour, tokyo_hour) = hours_now();
    for (target, hours) in [
        ("tokyo01", window_from(tokyo_hour)),
        ("utc01", window_from(utc_hour)),
    ] {
        admin.ok(&["target", "add", target, "--host", "10.0.0.5"]);
        admin.ok_in(
            &["credential", "add", target, "root", "--password-stdin"],
            &format!("{target}-pw\n"),
        );
        admin.ok(&[
            "policy",
            "add",
            &format!("{target}-hours"),
            "--group",
            "ops",
            "--targets",
            target,
            "--allow",
            "reveal",
            "--outcome",
            "allow",
            "--hours",
            &hours,
        ]);
    }
    // Tokyo's hours are now; UTC's hours are 9 hours ago in Tokyo.
    alice
        .ok(&["credential", "reveal", "tokyo01", "root"])
        .assert_stdout_contains("tokyo01-pw");
    alice
        .fail(&["credential", "reveal", "utc01", "root"])
        .assert_stderr_contains(&format!(
            "does not grant reveal on utc01 now: it applies {} only",
            window_from(utc_hour)
        ));
}

#[test]
fn a_time_zone_that_does_not_exist_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "[instance]\ntime_zone = \"Mars/Olympus\"\n",
            "is not a time zone",
        ),
        (
            "[approvals]\nutc_offset = \"+01:00\"\n",
            "replaced by [instance] time_zone",
        ),
    ] {
        let config = dir.path().join("cofre.toml");
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["server", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0"])
            .env("COFRE_CONFIG", &config);
        let out = run_command(cmd, None, "cofre server");
        assert_ne!(out.code, Some(0), "{out:?}");
        out.assert_stderr_contains(needle);
        assert!(
            !dir.path().join("data").exists(),
            "nothing is created with a bad config"
        );
    }
}
