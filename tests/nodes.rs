//! Pools and nodes on real services: node states and start tasks, requiredSlots, application
//! packages, autoscale formulas, the systemd units, and autoscaling with the process actuator.

#![allow(clippy::unwrap_used)]

use drover_tests::{bin_dir, eventually, TestAccount};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

fn create_pool(acct: &mut TestAccount, spec: Value) {
    let id = spec["id"].as_str().unwrap().to_string();
    let file = acct.file(&format!("pool-{id}.json"), &spec.to_string());
    acct.ok(&["pool", "create", "--json-file", file.to_str().unwrap()]);
    acct.remember_pool(&id);
}

async fn node_state(acct: &TestAccount, pool: &str, want: &str) -> Value {
    let what = format!("a node of {pool} is {want}");
    let nodes = acct
        .until_json(&["node", "list", "--pool-id", pool], &what, |nodes| {
            nodes.as_array().is_some_and(|n| n.iter().any(|n| n["state"] == want))
        })
        .await;
    nodes.as_array().and_then(|n| n.iter().find(|n| n["state"] == want)).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_task_gates_the_node_and_nodes_show_their_tasks() {
    let mut acct = TestAccount::new("starttask").await;
    create_pool(
        &mut acct,
        json!({"id": "good", "taskSlotsPerNode": 2,
        "startTask": {"commandLine": "/bin/sh -c 'until [ -f ../../go ]; do sleep 0.05; done'", "waitForSuccess": true}}),
    );
    create_pool(
        &mut acct,
        json!({"id": "bad", "taskSlotsPerNode": 2,
        "startTask": {"commandLine": "/bin/sh -c 'exit 4'", "maxTaskRetryCount": 1}}),
    );
    acct.start_worker("good", &[]);
    acct.start_worker("bad", &[]);

    // The start task runs until the test lets it finish: the node waits for it meanwhile.
    // (The node waits from its registration; its start task shows once it began to run.) The
    // two nodes share the work directory, not their start tasks' directories.
    acct.until_json(&["node", "list", "--pool-id", "good"], "the node waits for its running start task", |nodes| {
        nodes.as_array().is_some_and(|n| {
            n.iter().any(|n| n["state"] == "waitingForStartTask" && n["startTaskInfo"]["state"] == "running")
        })
    })
    .await;
    std::fs::write(acct.work_dir.join("nodes").join(acct.name()).join("startup/go"), "").unwrap();
    let idle = node_state(&acct, "good", "idle").await;
    assert_eq!(idle["startTaskInfo"]["result"], "success", "{idle}");
    assert_eq!(idle["taskSlots"], 2);
    assert_eq!(idle["nodeAgentInfo"]["version"], env!("CARGO_PKG_VERSION"));

    let failed = node_state(&acct, "bad", "startTaskFailed").await;
    let info = &failed["startTaskInfo"];
    assert_eq!((info["exitCode"].as_i64(), info["retryCount"].as_i64()), (Some(4), Some(1)), "{failed}");
    // A node whose start task failed takes no task: it does not even consume.
    let ch = acct.channel().await;
    let queue = drover_core::queue::Topology::new(acct.name()).pool_queue("bad");
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = ch.queue_declare(queue.into(), passive, Default::default()).await.unwrap();
    assert_eq!(declared.consumer_count(), 0);

    // A running task shows on its node.
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "good"]);
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "long", "--command-line", "/bin/sleep 600"]);
    let running = node_state(&acct, "good", "running").await;
    assert_eq!(running["recentTasks"], json!([{"jobId": "j", "taskId": "long", "taskState": "running"}]), "{running}");
    let id = running["id"].as_str().unwrap();
    let shown = acct.ok(&["node", "show", "--pool-id", "good", "--node-id", id]).json();
    assert_eq!(shown["runningTaskSlotsCount"], 1);
    let unknown = acct.drover(&["node", "show", "--pool-id", "good", "--node-id", "nope"]);
    assert!(unknown.code == 1 && unknown.stderr.contains("nope"), "{unknown:?}");
    acct.ok(&["task", "terminate", "--job-id", "j", "--task-id", "long"]);
    // Once it ended, the node counts it and lists it among its recent tasks.
    eventually(Duration::from_secs(15), "the node counts the task it ran", || async {
        let shown = acct.ok(&["node", "show", "--pool-id", "good", "--node-id", id]).json();
        shown["totalTasksRun"] == 1
            && shown["recentTasks"] == json!([{"jobId": "j", "taskId": "long", "taskState": "completed"}])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_never_runs_more_slots_than_it_has() {
    let mut acct = TestAccount::new("slots").await;
    create_pool(&mut acct, json!({"id": "p", "taskSlotsPerNode": 4}));
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let too_big =
        acct.file("big.json", &json!({"id": "big", "commandLine": "/bin/true", "requiredSlots": 5}).to_string());
    let refused = acct.drover(&["task", "create", "--job-id", "j", "--json-file", too_big.to_str().unwrap()]);
    assert!(refused.code == 1 && refused.stderr.contains("requiredSlots 5"), "{refused:?}");
    let tasks: Vec<Value> = (0..12)
        .map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/sleep 0.3", "requiredSlots": if n % 3 == 0 { 3 } else { 1 }}))
        .collect();
    acct.add_tasks("j", &tasks);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    let list = acct.ok(&["task", "list", "--job-id", "j"]).json();
    let time = |t: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(t["executionInfo"][k].as_str().unwrap()).unwrap().timestamp_millis()
    };
    let mut events: Vec<(i64, i64)> = list
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            let slots = t["requiredSlots"].as_i64().unwrap_or(1);
            [(time(t, "startTime"), slots), (time(t, "endTime"), -slots)]
        })
        .collect();
    events.sort_by_key(|(t, d)| (*t, *d));
    let (mut used, mut most) = (0, 0);
    for (_, d) in events {
        used += d;
        most = most.max(used);
    }
    assert!(most <= 4, "{most} slots in use at once on a 4-slot node");
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskSlotCounts"]["completed"], 20, "{counts}");
}

/// The nodes that ran a job's tasks, in task id order.
fn nodes_that_ran(acct: &TestAccount, job: &str) -> Vec<String> {
    let list = acct.ok(&["task", "list", "--job-id", job]).json();
    let mut tasks: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t["nodeInfo"]["nodeId"].as_str().unwrap_or("").to_string()))
        .collect();
    tasks.sort();
    tasks.into_iter().map(|(_, node)| node).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packing_pool_fills_its_first_node_before_the_next_and_spread_shares() {
    let mut acct = TestAccount::new("fill").await;
    for (pool, fill) in [("pack", "Pack"), ("spread", "spread")] {
        create_pool(
            &mut acct,
            json!({"id": pool, "taskSlotsPerNode": 2, "taskSchedulingPolicy": {"nodeFillType": fill}}),
        );
        let shown = acct.ok(&["pool", "show", "--pool-id", pool]).json();
        assert_eq!(shown["taskSchedulingPolicy"]["nodeFillType"], fill.to_lowercase(), "{shown}");
        // The first node is consuming before the second joins: it joined first, so it ranks first.
        for n in 0..2 {
            acct.start_worker_as(pool, &format!("{pool}{n}"), &[]);
            acct.until_json(&["node", "list", "--pool-id", pool], "the node is idle", |nodes| {
                nodes.as_array().is_some_and(|l| l.iter().filter(|n| n["state"] == "idle").count() == n + 1)
            })
            .await;
        }
        acct.ok(&["job", "create", "--job-id", pool, "--pool-id", pool]);
        let tasks: Vec<Value> =
            (0..2).map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/sleep 0.5"})).collect();
        acct.add_tasks(pool, &tasks);
        let wait = acct.drover(&["job", "wait", "--job-id", pool, "--timeout", "60"]);
        assert_eq!(wait.code, 0, "{wait:?}");
    }
    // Two tasks fit the first node's two slots: packed, both ran there; spread, one on each.
    assert_eq!(nodes_that_ran(&acct, "pack"), ["pack0", "pack0"]);
    let mut spread = nodes_that_ran(&acct, "spread");
    spread.sort();
    assert_eq!(spread, ["spread0", "spread1"]);
}

fn zip_package(path: &std::path::Path, script: &str) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    zip.start_file("bin/hello.sh", options).unwrap();
    zip.write_all(script.as_bytes()).unwrap();
    zip.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn application_packages_are_unpacked_once_and_named_like_azure() {
    let mut acct = TestAccount::new("apppkg").await;
    create_pool(&mut acct, json!({"id": "p", "taskSlotsPerNode": 3}));
    let v1 = acct.work_dir.join("tool-1.zip");
    zip_package(&v1, "#!/bin/sh\necho tool one\n");
    let src = acct.work_dir.join("v2src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/hello.sh"), "#!/bin/sh\necho tool two\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("bin/hello.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let v2 = acct.work_dir.join("tool-2.tar.gz");
    let tar = std::process::Command::new("tar").arg("czf").arg(&v2).arg("-C").arg(&src).arg("bin").status().unwrap();
    assert!(tar.success());
    for (version, file) in [("1.0", &v1), ("2", &v2)] {
        acct.ok(&[
            "application",
            "package",
            "upload",
            "--application-id",
            "tool",
            "--version",
            version,
            "--package-file",
            file.to_str().unwrap(),
        ]);
    }
    let bad = acct.drover(&[
        "application",
        "package",
        "upload",
        "--application-id",
        "tool",
        "--version",
        "3",
        "--package-file",
        acct.file("x.rar", "x").to_str().unwrap(),
    ]);
    assert!(bad.code == 1 && bad.stderr.contains("--package-file"), "{bad:?}");
    let apps = acct.ok(&["application", "list"]).json();
    assert_eq!(apps[0]["defaultVersion"], "2", "{apps}");

    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let mut tasks: Vec<Value> = (0..3)
        .map(|n| {
            json!({"id": format!("one{n}"), "commandLine": "/bin/sh -c '$AZ_BATCH_APP_PACKAGE_tool_1_0/bin/hello.sh'",
            "applicationPackageReferences": [{"applicationId": "tool", "version": "1.0"}]})
        })
        .collect();
    tasks.push(json!({"id": "default", "commandLine": "/bin/sh -c '$DROVER_APP_PACKAGE_tool/bin/hello.sh'",
        "applicationPackageReferences": [{"applicationId": "tool"}]}));
    tasks.push(json!({"id": "missing", "commandLine": "/bin/true",
        "applicationPackageReferences": [{"applicationId": "tool", "version": "9"}]}));
    acct.add_tasks("j", &tasks);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "one task fails: {wait:?}");
    for (task, expect) in [("one0", "tool one\n"), ("one2", "tool one\n"), ("default", "tool two\n")] {
        assert_eq!(acct.task_file("j", task, "stdout.txt"), expect, "{task}");
    }
    let missing = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "missing"]).json();
    let failure = &missing["executionInfo"]["failureInfo"];
    assert_eq!(
        (failure["category"].as_str(), failure["code"].as_str()),
        (Some("userError"), Some("ApplicationPackageError"))
    );
    assert!(failure["message"].as_str().unwrap().contains("tool 9"), "{failure}");
    let unpacked = acct.worker_logs().matches("application package unpacked").count();
    assert_eq!(unpacked, 2, "each version once:\n{}", acct.worker_logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn formulas_evaluate_without_acting_and_errors_say_where() {
    let mut acct = TestAccount::new("evaluate").await;
    create_pool(&mut acct, json!({"id": "p", "taskSlotsPerNode": 4}));
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let tasks: Vec<Value> =
        (0..10).map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/true", "requiredSlots": 2})).collect();
    acct.add_tasks("j", &tasks);
    let formula = "slots = $PendingTaskSlots.GetSample(1);\n$TargetDedicatedNodes = min(4, ceil(max(slots) / $TaskSlotsPerNode));\n$NodeDeallocationOption = taskcompletion;";
    let run = acct.ok(&["pool", "autoscale", "evaluate", "--pool-id", "p", "--formula", formula]).json();
    assert_eq!(run["targetDedicatedNodes"], 4, "20 pending slots / 4 per node, capped: {run}");
    assert!(run["results"].as_str().unwrap().contains("$TargetDedicatedNodes=4"), "{run}");
    assert_eq!(run["nodeDeallocationOption"], "taskcompletion");
    let bad = acct.drover(&[
        "pool",
        "autoscale",
        "evaluate",
        "--pool-id",
        "p",
        "--formula",
        "$TargetDedicatedNodes = max(1, ;",
    ]);
    assert!(bad.code == 1 && bad.stderr.contains("line 1, column 32"), "{bad:?}");
    let refused =
        acct.drover(&["pool", "autoscale", "enable", "--pool-id", "p", "--formula", "$TargetDedicatedNodes = mux(1)"]);
    assert!(refused.code == 1 && refused.stderr.contains("mux"), "{refused:?}");
    let pool = acct
        .ok(&["pool", "autoscale", "enable", "--pool-id", "p", "--formula", formula, "--evaluation-interval", "PT5S"])
        .json();
    assert_eq!(pool["enableAutoScale"], true, "{pool}");
    // A formula sizes the pool: a resize by hand is refused until it is disabled.
    let resize = ["pool", "resize", "--pool-id", "p", "--target-dedicated-nodes", "3"];
    let refused = acct.drover(&resize);
    assert!(refused.code == 1 && refused.stderr.contains("disable autoscaling"), "{refused:?}");
    let pool = acct.ok(&["pool", "autoscale", "disable", "--pool-id", "p"]).json();
    assert_eq!(pool["enableAutoScale"], false, "{pool}");
    let pool = acct.ok(&resize).json();
    assert_eq!((&pool["targetDedicatedNodes"], &pool["allocationState"]), (&json!(3), &json!("resizing")), "{pool}");
}

#[test]
fn the_systemd_units_verify() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = std::env::temp_dir().join(format!("drover-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The units name the installed binaries; check them against the ones just built.
    let bins = bin_dir();
    for unit in ["drover-worker@.service", "drover-monitor.service"] {
        let text = std::fs::read_to_string(root.join("deploy/systemd").join(unit)).unwrap();
        std::fs::write(dir.join(unit), text.replace("/usr/local/bin/", &format!("{}/", bins.display()))).unwrap();
    }
    for unit in ["drover-worker@render-1.service", "drover-monitor.service"] {
        let out = std::process::Command::new("systemd-analyze").arg("verify").arg(dir.join(unit)).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        // Lines about other units (systemd-analyze loads their dependencies) are not ours.
        let ours: Vec<&str> = said.lines().filter(|l| l.contains("drover")).collect();
        assert!(out.status.success() && ours.is_empty(), "{unit}: {said}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_autoscaler_follows_the_backlog_from_zero_to_four_and_back() {
    let mut acct = TestAccount::new("autoscale").await;
    // Four slots a node, at most four nodes; back to zero after five seconds without work.
    let formula = "pending = max($PendingTaskSlots.GetSample(5));\n\
                   $TargetDedicatedNodes = min(4, ceil(pending / $TaskSlotsPerNode));\n\
                   $NodeDeallocationOption = taskcompletion;";
    create_pool(
        &mut acct,
        json!({"id": "p", "taskSlotsPerNode": 4, "enableAutoScale": true,
        "autoScaleFormula": formula, "autoScaleEvaluationInterval": "PT1S"}),
    );
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen]);
    let store = acct.store().await;
    let tasks: Vec<Value> = (0..200).map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/sleep 1"})).collect();
    acct.add_tasks("j", &tasks);
    let backlog = Instant::now();
    let (mut first, mut fourth) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while fourth.is_none() && Instant::now() < deadline {
        let n = store.list_nodes("p").await.unwrap().len();
        if n >= 1 && first.is_none() {
            first = Some(backlog.elapsed());
        }
        if n >= 4 {
            fourth = Some(backlog.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (Some(first), Some(fourth)) = (first, fourth) else { panic!("never reached 4 nodes\n{}", acct.worker_logs()) };
    println!("autoscale: backlog of 200 tasks -> first node after {first:?}, fourth after {fourth:?}");
    assert!(fourth < Duration::from_secs(30), "{fourth:?}");

    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "120"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    let idle = Instant::now();
    eventually(Duration::from_secs(40), "the pool is back to zero nodes", || async {
        store.list_nodes("p").await.unwrap().is_empty()
    })
    .await;
    println!("autoscale: back to 0 nodes {:?} after the last task", idle.elapsed());
    // No task was killed or handed back by the scale-down.
    let list = acct.ok(&["task", "list", "--job-id", "j"]).json();
    for t in list.as_array().unwrap() {
        assert_eq!(t["executionInfo"]["requeueCount"], 0, "{t}");
        assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    }
    let pool = acct.ok(&["pool", "show", "--pool-id", "p"]).json();
    assert_eq!(pool["autoScaleRun"]["targetDedicatedNodes"], 0, "{pool}");
    assert_eq!(pool["currentDedicatedNodes"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_autoscaler_never_runs_more_workers_than_its_limits() {
    let mut acct = TestAccount::new("autoscalelimits").await;
    let huge = acct.file("huge.json", &json!({"id": "huge", "targetDedicatedNodes": 4_000_000_000u32}).to_string());
    let refused = acct.drover(&["pool", "create", "--json-file", huge.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("targetDedicatedNodes 4000000000: at most 10000"), "{refused:?}");

    // Pools list in id order: "a" asks for four billion and gets the per-pool limit, "b" asks
    // for three and gets what is left of the total.
    let formula = "$TargetDedicatedNodes = 4000000000;";
    create_pool(
        &mut acct,
        json!({"id": "a", "enableAutoScale": true, "autoScaleFormula": formula, "autoScaleEvaluationInterval": "PT1S"}),
    );
    create_pool(&mut acct, json!({"id": "b", "targetDedicatedNodes": 3}));
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen, "--max-pool-nodes", "2", "--max-nodes", "3"]);
    let store = acct.store().await;
    let counts = || async { (store.list_nodes("a").await.unwrap().len(), store.list_nodes("b").await.unwrap().len()) };
    eventually(Duration::from_secs(30), "pool a at 2 workers and b at 1", || async { counts().await == (2, 1) }).await;
    assert!(acct.worker_logs().contains("more workers than drover-monitor's limits"), "{}", acct.worker_logs());
    // Three more evaluations of a's formula change nothing.
    let run_time = || async {
        let pool = acct.ok(&["pool", "show", "--pool-id", "a"]).json();
        pool["autoScaleRun"]["timestamp"].as_str().unwrap_or_default().to_string()
    };
    for _ in 0..3 {
        let before = run_time().await;
        eventually(Duration::from_secs(10), "a new evaluation", || async { run_time().await != before }).await;
    }
    assert_eq!(counts().await, (2, 1));
}

/// How many consumers the pool's normal-band queue has.
async fn consumers(acct: &TestAccount, pool: &str) -> u32 {
    let ch = acct.channel().await;
    let queue = drover_core::queue::Topology::new(acct.name()).pool_queue(pool);
    let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(queue.into(), options, Default::default()).await.unwrap().consumer_count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_scheduling_disabled_hands_back_its_task_and_takes_none_until_enabled() {
    let mut acct = TestAccount::new("nodesched").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    acct.start_worker_as("p", "n1", &[]);
    acct.add_tasks("j", &[json!({"id": "long", "commandLine": "/bin/sleep 600"})]);
    node_state(&acct, "p", "running").await;
    let node =
        acct.ok(&["node", "disable-scheduling", "--pool-id", "p", "--node-id", "n1", "--option", "requeue"]).json();
    assert_eq!(node["schedulingState"], "disabled", "{node}");
    // With its next heartbeat the node stops consuming and hands its running task back; the
    // task's message waits in the queue, taken by no one.
    eventually(Duration::from_secs(20), "the node stops consuming", || async { consumers(&acct, "p").await == 0 })
        .await;
    let t = acct
        .until_json(&["task", "show", "--job-id", "j", "--task-id", "long"], "the task is handed back", |t| {
            t["state"] == "active"
        })
        .await;
    assert_eq!(t["executionInfo"]["requeueCount"], 1, "{t}");
    node_state(&acct, "p", "offline").await;
    let unknown = acct.drover(&["node", "disable-scheduling", "--pool-id", "p", "--node-id", "nope"]);
    assert!(unknown.code == 1 && unknown.stderr.contains("nope"), "{unknown:?}");
    let node = acct.ok(&["node", "enable-scheduling", "--pool-id", "p", "--node-id", "n1"]).json();
    assert_eq!(node["schedulingState"], "enabled", "{node}");
    eventually(Duration::from_secs(20), "the node consumes again", || async { consumers(&acct, "p").await == 1 }).await;
    acct.until_json(&["task", "show", "--job-id", "j", "--task-id", "long"], "the task runs again", |t| {
        t["state"] == "running"
    })
    .await;
}

/// The pool's nodes by id, with their lastBootTime.
async fn boots(acct: &TestAccount, pool: &str) -> Vec<(String, String, String)> {
    let nodes = acct.ok(&["node", "list", "--pool-id", pool]).json();
    let mut found: Vec<(String, String, String)> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let text = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            (text("id"), text("state"), text("lastBootTime"))
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebooted_node_comes_back_under_its_id_and_a_removed_one_goes_for_good() {
    let mut acct = TestAccount::new("reboot").await;
    create_pool(&mut acct, json!({"id": "p", "taskSlotsPerNode": 1, "targetDedicatedNodes": 2}));
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen]);
    let idle = |n: &Value| n.as_array().is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["state"] == "idle"));
    acct.until_json(&["node", "list", "--pool-id", "p"], "two idle nodes", idle).await;
    let before = boots(&acct, "p").await;
    let (first, second) = (before[0].0.clone(), before[1].0.clone());
    // A reboot with a running task hands it back; the node leaves and its actuator starts it
    // again under the same id.
    acct.add_tasks("j", &[json!({"id": "long", "commandLine": "/bin/sleep 600"})]);
    let t = acct
        .until_json(&["task", "show", "--job-id", "j", "--task-id", "long"], "the task runs", |t| {
            t["state"] == "running"
        })
        .await;
    let busy = t["nodeInfo"]["nodeId"].as_str().unwrap().to_string();
    let node = acct.ok(&["node", "reboot", "--pool-id", "p", "--node-id", &busy]).json();
    assert_eq!(node["state"], "rebooting", "{node}");
    let back = |n: &Value| {
        n.as_array().is_some_and(|n| {
            n.iter().any(|n| {
                n["id"] == busy.as_str() && n["state"] != "rebooting" && n["lastBootTime"] != node["lastBootTime"]
            })
        })
    };
    acct.until_json(&["node", "list", "--pool-id", "p"], "the rebooted node is back", back).await;
    let t = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "long"]).json();
    assert!(t["executionInfo"]["requeueCount"].as_u64() >= Some(1), "{t}");
    let ids: Vec<String> = boots(&acct, "p").await.into_iter().map(|n| n.0).collect();
    assert_eq!(ids, [first.clone(), second.clone()], "the same two node ids");
    // Removing a node: it goes, no replacement comes, and the pool asks for one node.
    acct.ok(&["node", "remove", "--pool-id", "p", "--node-id", &first, "--option", "requeue"]);
    let one = |n: &Value| n.as_array().is_some_and(|n| n.len() == 1 && n[0]["id"] == second.as_str());
    acct.until_json(&["node", "list", "--pool-id", "p"], "only the other node is left", one).await;
    let pool = acct.ok(&["pool", "show", "--pool-id", "p"]).json();
    assert_eq!(pool["targetDedicatedNodes"], 1, "{pool}");
    let unknown = acct.drover(&["node", "remove", "--pool-id", "p", "--node-id", &second, "--node-id", "nope"]);
    assert!(unknown.code == 1 && unknown.stderr.contains("nope"), "{unknown:?}");
    assert_eq!(boots(&acct, "p").await.len(), 1, "a refused removal removes nothing");
    // A node started by hand has nothing to start it again: a reboot is refused.
    acct.start_worker_as("p", "manual", &[]);
    acct.until_json(&["node", "list", "--pool-id", "p"], "the manual node joins", |n| {
        n.as_array().is_some_and(|n| n.iter().any(|n| n["id"] == "manual"))
    })
    .await;
    let refused = acct.drover(&["node", "reboot", "--pool-id", "p", "--node-id", "manual"]);
    assert!(refused.code == 1 && refused.stderr.contains("started by hand"), "{refused:?}");
}

/// Downloads a file with `args` (`task file download ...` or `node file download ...`): its
/// content, or the command's error.
fn download(acct: &TestAccount, args: &[&str]) -> Result<String, String> {
    let dest = acct.work_dir.join("downloaded");
    let _ = std::fs::remove_file(&dest);
    let run = acct.drover(&[args, &["--destination", dest.to_str().unwrap()]].concat());
    match run.code {
        0 => Ok(std::fs::read_to_string(&dest).unwrap()),
        _ => Err(run.stderr),
    }
}

fn names(listing: &Value) -> Vec<String> {
    listing.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
}

/// The status line of a raw request to a node's file service.
fn raw_status(url: &str, request: &str) -> String {
    use std::io::Read;
    let authority = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_files_are_served_by_the_node_itself_to_another_host() {
    let mut acct = TestAccount::new("nodefiles").await;
    let (amqp, redis) = (acct.config.amqp_url[0].clone(), acct.config.redis_url.clone());
    let s3 = acct.config.s3_endpoint.clone().unwrap();
    let host = drover_tests::Host::start(0, &[amqp.as_str(), redis.as_str(), s3.as_str()]).await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    // The task writes, leaves links that lead out of its directory, and waits until its `hold`
    // file is deleted through drover.
    let script = "echo started; echo data > out.txt; mkdir sub; echo deep > sub/deep.txt; \
                  ln -s /etc/passwd escape; ln -s ../../other sibling; touch hold; \
                  while [ -e hold ]; do sleep 0.1; done; echo done";
    let cmd = format!("/bin/sh -c '{script}'");
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "t", "--command-line", &cmd]);
    let direct = acct.config.clone();
    acct.config.amqp_url = vec![host.url(&amqp)];
    acct.config.redis_url = host.url(&redis);
    acct.config.s3_endpoint = Some(host.url(&s3));
    acct.start_worker_in(&host.exec(), "p", "node-a", &[]);
    acct.config = direct;

    // The node serves its files at the address it reaches Redis from: its own host's.
    let store = acct.store().await;
    eventually(Duration::from_secs(30), "node-a serves its files", || async {
        store.node_file_service("p", "node-a").await.ok().flatten().is_some()
    })
    .await;
    let url = store.node_file_service("p", "node-a").await.unwrap().unwrap().url;
    assert!(url.starts_with("http://10.231."), "{url}");

    let stdout = ["task", "file", "download", "--job-id", "j", "--task-id", "t", "--file-path", "stdout.txt"];
    eventually(Duration::from_secs(30), "the running task's output so far", || async {
        download(&acct, &stdout).as_deref() == Ok("started\n")
    })
    .await;
    let listing = acct.ok(&["task", "file", "list", "--job-id", "j", "--task-id", "t", "--recursive"]).json();
    let listed = names(&listing);
    for name in ["stdout.txt", "stderr.txt", "wd", "wd/out.txt", "wd/sub", "wd/sub/deep.txt", "wd/escape", "wd/hold"] {
        assert!(listed.contains(&name.to_string()), "{name} in {listed:?}");
    }
    let escape = listing.as_array().unwrap().iter().find(|f| f["name"] == "wd/escape").unwrap();
    assert_eq!(escape["isDirectory"], false, "a link is listed, never followed: {escape}");
    let file = |path: &str| {
        download(&acct, &["task", "file", "download", "--job-id", "j", "--task-id", "t", "--file-path", path])
    };
    assert_eq!(file("wd/sub/deep.txt").as_deref(), Ok("deep\n"));
    for (path, why) in [
        ("wd/escape", "leads outside"),
        ("wd/sibling/x", "leads outside"),
        ("../t/wd/out.txt", "without '.' or '..'"),
        ("wd/missing.txt", "does not exist"),
    ] {
        let err = file(path).unwrap_err();
        assert!(err.contains(why) && !err.contains("try again") && err.lines().count() == 1, "{path}: {err}");
    }
    let top = acct.ok(&["node", "file", "list", "--pool-id", "p", "--node-id", "node-a", "--recursive"]).json();
    assert!(names(&top).contains(&"jobs/j/t/wd/out.txt".to_string()), "{top}");
    let node_file = ["node", "file", "download", "--pool-id", "p", "--node-id", "node-a", "--file-path"];
    assert_eq!(download(&acct, &[&node_file[..], &["jobs/j/t/wd/out.txt"]].concat()).as_deref(), Ok("data\n"));

    // Only a request signed with the node's key (kept in Redis) is served.
    let unsigned = "GET /v1/list/?root= HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    assert!(raw_status(&url, unsigned).contains(" 403 "), "{}", raw_status(&url, unsigned));
    let forged = "GET /v1/list/?root= HTTP/1.1\r\nhost: x\r\nx-drover-signature: 99999999999999.AAAA\r\nconnection: close\r\n\r\n";
    assert!(raw_status(&url, forged).contains(" 403 "), "{}", raw_status(&url, forged));

    // Deleting its `hold` file lets the task finish; its output is then the copy kept in storage.
    acct.ok(&["task", "file", "delete", "--job-id", "j", "--task-id", "t", "--file-path", "wd/hold"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    assert_eq!(download(&acct, &stdout).as_deref(), Ok("started\ndone\n"));
    let gone = acct.drover(&["task", "file", "delete", "--job-id", "j", "--task-id", "t", "--file-path", "wd/hold"]);
    assert!(gone.code != 0 && gone.stderr.contains("does not exist"), "{gone:?}");
    acct.ok(&["task", "file", "delete", "--job-id", "j", "--task-id", "t", "--file-path", "wd/sub", "--recursive"]);
    let after = names(&acct.ok(&["task", "file", "list", "--job-id", "j", "--task-id", "t", "--recursive"]).json());
    assert!(after.contains(&"wd/out.txt".to_string()) && !after.iter().any(|n| n.starts_with("wd/sub")), "{after:?}");
    assert!(std::fs::read_to_string("/etc/passwd").unwrap().contains("root:"), "what a link pointed at is untouched");
    drop(host);
    drop(acct);
}

/// A node coalesces its acks (one that finished behind a task still running waits a moment to
/// join one `multiple` ack), but none waits for that task: while a long task holds the first
/// delivery, the short ones delivered after it are all acked.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_task_holds_back_no_other_ack() {
    let mut acct = TestAccount::new("acks").await;
    create_pool(&mut acct, json!({"id": "p", "taskSlotsPerNode": 4}));
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let mut tasks = vec![json!({"id": "long", "commandLine": "/bin/sleep 60"})];
    tasks.extend((0..30).map(|n| json!({"id": format!("t{n:02}"), "commandLine": "/bin/true"})));
    acct.add_tasks("j", &tasks);
    acct.start_worker("p", &[]);
    eventually(Duration::from_secs(15), "the short tasks complete", || async {
        let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
        counts["taskCounts"]["completed"] == 30
    })
    .await;
    let queue = format!("drover.{}.pool.p", acct.config.account);
    let unacked = || {
        let out = std::process::Command::new("rabbitmqctl")
            .args(["list_queues", "-q", "--no-table-headers", "name", "messages_unacknowledged"])
            .output()
            .expect("run rabbitmqctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.strip_prefix(queue.as_str())?.trim().parse::<u64>().ok())
    };
    eventually(Duration::from_secs(10), "only the long task's delivery is unacked", || async { unacked() == Some(1) })
        .await;
    let long = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "long"]).json();
    assert_eq!(long["state"], "running", "the long task still holds the first delivery: {long}");
}
