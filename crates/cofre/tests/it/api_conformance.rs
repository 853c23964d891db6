//! The OpenAPI document is held to the running server by schemathesis, the tool intrusion testers
//! point at an API: as a user and as an admin, no 5xx, no status the document does not list, no
//! body that breaks its schema, no undocumented content type or header.

use crate::harness::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What schemathesis checks: every conformance check of a response against the document, and
/// that the server never fails inside.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

/// Operations that can end the caller's own token, since the fuzzer reuses names it saw in
/// responses (its own included): a logout, a password change or reset, wrong passwords (a lock
/// ends the account's tokens), a new role, a disabled or deleted account (possible for the
/// admin itself once the fuzzer has made a second admin). They run last, in a pass of their own,
/// so that they cannot leave the other pass testing nothing but 401s.
const ENDS_OWN_TOKEN: [&str; 7] = [
    "/api/v1/auth/login",
    "/api/v1/auth/logout",
    "/api/v1/auth/password",
    "/api/v1/users/{username}/reset-password",
    "/api/v1/users/{username}/role",
    "/api/v1/users/{username}/disable",
    "/api/v1/users/{username}",
];

/// Disabling the application makes every other operation answer 503 (which the fuzzer counts
/// as a server error): it runs after everything else, in a pass with only the instance's
/// operations.
const DISABLES_THE_APPLICATION: [&str; 2] = ["/api/v1/instance/disable", "/api/v1/instance/enable"];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Pass {
    /// Everything but the operations of the later passes.
    Main,
    /// The operations that can end the caller's token.
    EndsOwnToken,
    /// Disable and enable the application.
    Disables,
}

fn schemathesis(server: &Server, cert: &Path, token: &str, work: &Path, pass: Pass) -> Out {
    schemathesis_with(server, cert, token, work, pass, 2)
}

fn schemathesis_with(
    server: &Server,
    cert: &Path,
    token: &str,
    work: &Path,
    pass: Pass,
    workers: u8,
) -> Out {
    let mut cmd = Command::new("schemathesis");
    cmd.current_dir(work)
        .env("HOME", work)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", server.url))
        .arg("--tls-verify")
        .arg(cert)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        // Small and deterministic: about half a minute per pass on two cores, the same inputs
        // every run.
        .args(["--max-examples", "8", "--generation-deterministic"])
        .args(["--workers", &workers.to_string()])
        // A pooled keep-alive connection the server closes as idle just as it is reused is a
        // transport error, not an answer: retried (the checks judge answers only).
        .args([
            "--request-timeout",
            "30",
            "--request-retries",
            "2",
            "--no-color",
        ]);
    let (flag, paths): (&str, Vec<&str>) = match pass {
        Pass::Main => (
            "--exclude-path",
            ENDS_OWN_TOKEN
                .iter()
                .chain(DISABLES_THE_APPLICATION.iter())
                .copied()
                .collect(),
        ),
        Pass::EndsOwnToken => ("--include-path", ENDS_OWN_TOKEN.to_vec()),
        Pass::Disables => ("--include-path", DISABLES_THE_APPLICATION.to_vec()),
    };
    for path in paths {
        cmd.args([flag, path]);
    }
    // A pass takes about half a minute on two quiet cores, several minutes on a loaded machine:
    // the deadline only guards against a hang.
    run_command_within(
        cmd,
        None,
        &format!("schemathesis ({pass:?})"),
        Duration::from_secs(600),
    )
}

/// The run failed only because the tool itself raised (its ERRORS are runtime errors), with no
/// failed check about the API.
fn only_the_tool_crashed(stdout: &str) -> bool {
    !stdout.contains(" FAILURES ") && stdout.contains("Runtime Error")
}

#[test]
fn schemathesis_finds_nothing_as_user_and_admin() {
    let inst = Instance::new(Backend::Sqlite);
    let server = inst.start();
    let (admin, _) = admin_cli(&inst, &server);
    let (user, _, _) = add_user_cli(&inst, &server, &admin, "ulla", "user", &[]);
    let cert = inst.data_dir.join("tls").join("cert.pem");
    let work = inst.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    // The user first: the admin's run may disable or delete users.
    for (who, cli) in [("user", &user), ("admin", &admin)] {
        let token = cli.token();
        let mut out = schemathesis(&server, &cert, &token, &work, Pass::Main);
        if out.code != Some(0) && only_the_tool_crashed(&out.stdout) {
            // A crash inside schemathesis or hypothesis (seen: "AST constructor recursion depth
            // mismatch", a KeyError in its value cache that its worker threads share) is not a
            // finding about the API: run once more, on one worker, so no two threads share
            // that cache. A failing check, or a crash that happens again, still fails the test.
            out = schemathesis_with(&server, &cert, &token, &work, Pass::Main, 1);
        }
        assert_eq!(out.code, Some(0), "schemathesis as {who}:\n{}", out.all());
        assert!(
            out.stdout.contains(" passed") && !out.stdout.contains("Failures:"),
            "{}",
            out.stdout
        );
        // The run tested the API, not a dead token: the token still works.
        // A fresh client: a pooled connection idle through the run was closed by the server.
        let alive = server.api().get("/api/v1/auth/whoami", Some(&token));
        assert_eq!(
            alive.status, 200,
            "the {who}'s token died during the run, which then tested nothing: {}",
            alive.text
        );
        if who == "admin" {
            let out = schemathesis(&server, &cert, &token, &work, Pass::Disables);
            assert_eq!(
                out.code,
                Some(0),
                "schemathesis as admin (disable and enable):\n{}",
                out.all()
            );
            // Whichever ran last, the next pass needs the application enabled.
            let enabled = server.api().post(
                "/api/v1/instance/enable",
                Some(&token),
                serde_json::json!({}),
            );
            assert!([200, 409].contains(&enabled.status), "{}", enabled.text);
        }
        let out = schemathesis(&server, &cert, &token, &work, Pass::EndsOwnToken);
        assert_eq!(
            out.code,
            Some(0),
            "schemathesis as {who} (the operations that end its token):\n{}",
            out.all()
        );
    }
    let stderr = server.stderr_text();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
