//! The node registry (issue 17): two servers on one PostgreSQL database (the same keyring, TLS
//! certificate and host key, each its own node id) see each other in `cofre node list`; one
//! killed is reported dead after three missed heartbeats, and rejoins when it starts again.

use crate::harness::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `node list` as JSON, again until `done` holds (each heartbeat is an event the list shows).
fn nodes_until(cli: &Cli, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = cli.ok(&["--output", "json", "node", "list"]).json();
        let list = v.as_array().cloned().unwrap_or_default();
        if done(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|n| n["name"] == name)
}

#[test]
fn nodes_on_one_database_see_each_other_and_a_dead_one_is_reported() {
    let inst = Instance::new(Backend::Postgres);
    let config = inst.path().join("cluster.toml");
    std::fs::write(&config, "[cluster]\nheartbeat_seconds = 1\n").unwrap();
    let config = config.to_str().unwrap().to_owned();
    let server1 = inst.start_with_env(&[
        ("COFRE_LOG", "info"),
        ("COFRE_CONFIG", &config),
        ("COFRE_NODE_NAME", "n1"),
    ]);
    let (admin, admin_pw) = admin_cli(&inst, &server1);

    // A second node: a copy of the data dir (the keyring opens the shared database), its own
    // node id, the same database.
    let second = Instance::new(Backend::Sqlite);
    copy_dir(&inst.data_dir, &second.data_dir);
    std::fs::remove_file(second.data_dir.join("node-id")).unwrap();
    let url = inst.database_url().unwrap();
    let env = [
        ("COFRE_LOG", "info"),
        ("COFRE_CONFIG", config.as_str()),
        ("COFRE_NODE_NAME", "n2"),
        ("COFRE_DATABASE_URL", url.as_str()),
        // SIGKILL below must stop the serving process itself, not a supervisor above it.
        ("COFRE_NO_SUPERVISOR", "true"),
    ];
    let mut server2 = second.start_with_env(&env);
    let both = nodes_until(&admin, "both nodes alive", |l| {
        node(l, "n1").is_some_and(|n| n["alive"] == true)
            && node(l, "n2").is_some_and(|n| n["alive"] == true)
    });
    let n1 = node(&both, "n1").unwrap();
    let n2 = node(&both, "n2").unwrap();
    assert_eq!(n1["this_node"], true, "{both:?}");
    assert_eq!(n2["this_node"], false, "{both:?}");
    assert_ne!(n1["node_id"], n2["node_id"], "{both:?}");
    assert!(
        server2.url.contains(n2["api_address"].as_str().unwrap()),
        "{} {n2}",
        server2.url
    );
    // n2 serves the same instance: the same admin logs in there and sees itself as n2.
    let on_n2 = Cli::new(&second, "admin-on-n2").at(&server2);
    on_n2.login("admin", &admin_pw);
    let seen = nodes_until(&on_n2, "n2 sees itself", |l| {
        node(l, "n2").is_some_and(|n| n["this_node"] == true)
    });
    assert!(node(&seen, "n1").is_some(), "{seen:?}");
    admin
        .ok(&["node", "list"])
        .assert_stdout_contains("n2\talive");

    server2.kill9();
    nodes_until(&admin, "n2 reported dead", |l| {
        node(l, "n2").is_some_and(|n| n["alive"] == false)
            && node(l, "n1").is_some_and(|n| n["alive"] == true)
    });
    admin
        .ok(&["node", "list"])
        .assert_stdout_contains("n2\tDEAD");

    let _server2 = second.start_with_env(&env);
    nodes_until(&admin, "n2 alive again", |l| {
        node(l, "n2").is_some_and(|n| n["alive"] == true)
    });
    drop(server1);
}
