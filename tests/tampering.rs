//! What someone who can write to Redis or publish to the broker can make a worker run: with
//! signing keys, nothing that was not submitted; without them, nothing that is not a valid task.

#![allow(clippy::unwrap_used)]

use drover_core::status::TaskRecord;
use drover_tests::TestAccount;
use lapin::options::BasicPublishOptions;
use redis::AsyncCommands;
use serde_json::{json, Value};

const KEYS: &str = "k2 this-is-the-new-signing-key-0123456789\nk1 this-is-the-old-signing-key-0123456789\n";

/// Rewrites the stored record of `task` of job `j` with `edit`.
async fn edit_record(acct: &TestAccount, task: &str, edit: impl FnOnce(&mut Value)) {
    let client = redis::Client::open(acct.config.redis_url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("drover:{{{}:j}}:t:{task}", acct.name());
    let raw: Vec<u8> = con.get(&key).await.unwrap();
    let mut record = TaskRecord::decode(task, &raw).unwrap();
    let mut spec: Value = serde_json::from_str(&record.spec).unwrap();
    edit(&mut spec);
    record.spec = spec.to_string();
    let _: () = con.set(&key, record.encode(task).unwrap()).await.unwrap();
}

async fn publish(acct: &TestAccount, pool: &str, body: &Value) {
    let topology = drover_core::queue::Topology::new(acct.name());
    let ch = acct.channel().await;
    let confirm = ch
        .basic_publish(
            topology.tasks_exchange().into(),
            pool.into(),
            BasicPublishOptions::default(),
            body.to_string().as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    confirm.await.unwrap();
}

fn failure(acct: &TestAccount, task: &str) -> Value {
    acct.ok(&["task", "show", "--job-id", "j", "--task-id", task]).json()["executionInfo"]["failureInfo"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_signing_keys_a_worker_runs_only_what_was_submitted() {
    let mut acct = TestAccount::new("signed").await;
    acct.sign_with(KEYS);
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let work_dir = acct.work_dir.clone();
    let out = |name: &str| work_dir.join(name);
    let writes = |name: &str| format!("/bin/sh -c 'echo ran > {}'", out(name).display());
    let tasks = [
        json!({"id": "genuine", "commandLine": writes("genuine")}),
        json!({"id": "edited", "commandLine": writes("edited")}),
        json!({"id": "wide", "commandLine": writes("wide"), "requiredSlots": 2}),
    ];
    acct.add_tasks("j", &tasks);
    // A Redis writer changes what a queued task runs.
    edit_record(&acct, "edited", |spec| spec["commandLine"] = writes("injected").into()).await;
    // A broker publisher forges messages: unsigned, and a signed one with its slots changed.
    publish(&acct, "p", &json!({"v": 1, "jobId": "j", "taskId": "genuine"})).await;
    let client = redis::Client::open(acct.config.redis_url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let raw: Vec<u8> = con.get(format!("drover:{{{}:j}}:t:wide", acct.name())).await.unwrap();
    let msig = TaskRecord::decode("wide", &raw).unwrap().msig.unwrap();
    publish(&acct, "p", &json!({"v": 1, "jobId": "j", "taskId": "wide", "sig": msig})).await;
    // A task added without the keys (by a submitter that has none) is not signed.
    let keys = acct.config.signing_key_file.take();
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "unsigned", "--command-line", &writes("unsigned")]);
    acct.config.signing_key_file = keys;

    acct.start_worker("p", &[]);
    // The forged messages and the refused record's message are dead letters, with the reason.
    let want = [
        ("the unsigned message", "j/genuine: it is not signed"),
        ("the message with changed slots", "j/wide: its signature (key \"k2\") does not verify"),
        ("the edited record's message", "the task's record was refused"),
        ("the unsigned task's message", "j/unsigned: it is not signed"),
    ];
    let dead = acct
        .until_json(&["dead-letter", "list"], "the dead letters of what was forged", |dead| {
            let reasons: Vec<&str> = dead.as_array().unwrap().iter().filter_map(|d| d["reason"].as_str()).collect();
            want.iter().all(|(_, reason)| reasons.iter().any(|r| r.contains(reason)))
        })
        .await;
    assert_eq!(dead.as_array().unwrap().len(), want.len(), "{dead}");
    let counts = acct
        .until_json(&["job", "task-counts", "--job-id", "j"], "the submitted tasks end", |c| {
            c["taskCounts"]["completed"] == 3
        })
        .await;
    assert_eq!(
        (counts["taskCounts"]["succeeded"].as_i64(), counts["taskCounts"]["failed"].as_i64()),
        (Some(2), Some(1))
    );
    assert!(out("genuine").exists() && out("wide").exists(), "the genuine tasks ran");
    assert!(!out("injected").exists() && !out("edited").exists(), "the edited task did not run");
    let edited = failure(&acct, "edited");
    assert_eq!(edited["code"], "TaskRecordRefused", "{edited}");
    assert!(edited["message"].as_str().unwrap().contains("changed after it was signed"), "{edited}");
    // What the workers cannot verify stays where the operator sees it, never run.
    let unsigned = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "unsigned"]).json();
    assert_eq!(unsigned["state"], "active", "{unsigned}");
    assert!(!out("unsigned").exists(), "the unsigned task did not run");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_keys_a_worker_still_runs_only_valid_tasks_and_files_are_read_as_checked() {
    let mut acct = TestAccount::new("revalid").await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    acct.add_tasks("j", &[json!({"id": "t", "commandLine": "/bin/true"})]);
    // A resource file written outside the task's directory, stored behind the submitter's back.
    let escape = acct.work_dir.join("escaped");
    edit_record(&acct, "t", |spec| {
        spec["resourceFiles"] =
            json!([{"httpUrl": "http://127.0.0.1:1/x", "filePath": format!("../../../../{}", escape.display())}])
    })
    .await;
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let refused = failure(&acct, "t");
    assert_eq!(refused["code"], "TaskRecordRefused", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("filePath"), "{refused}");

    // A task file that is not a regular file could read differently the second time.
    let fifo = acct.work_dir.join("tasks.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let piped = acct.drover(&["task", "create", "--job-id", "j", "--json-file", fifo.to_str().unwrap()]);
    assert!(piped.code == 1 && piped.stderr.contains("not a regular file"), "{piped:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_signing_keys_job_and_pool_records_are_checked_too() {
    let mut acct = TestAccount::new("signedjob").await;
    acct.sign_with(KEYS);
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let marker = acct.work_dir.join("injected");
    acct.add_tasks("j", &[json!({"id": "t", "commandLine": "/bin/sh -c 'echo \"$INJECTED\"'"})]);
    let client = redis::Client::open(acct.config.redis_url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    // A Redis writer gives the job an environment, and the pool a start task.
    let job_key = format!("drover:{{{}:j}}:job", acct.name());
    let spec: String = con.hget(&job_key, "spec").await.unwrap();
    let mut spec: Value = serde_json::from_str(&spec).unwrap();
    spec["commonEnvironmentSettings"] = json!([{"name": "INJECTED", "value": "from-redis"}]);
    let _: () = con.hset(&job_key, "spec", spec.to_string()).await.unwrap();
    acct.start_worker("p", &[]);
    let counts = acct
        .until_json(&["job", "task-counts", "--job-id", "j"], "the task ends", |c| c["taskCounts"]["completed"] == 1)
        .await;
    assert_eq!(counts["taskCounts"]["failed"], 1, "{counts}");
    let refused = failure(&acct, "t");
    assert_eq!(refused["code"], "TaskRecordRefused", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("job \"j\"'s record was refused"), "{refused}");

    let pool_key = format!("drover:{}:pool:p", acct.name());
    let raw: String = con.get(&pool_key).await.unwrap();
    let mut record: Value = serde_json::from_str(&raw).unwrap();
    record["spec"]["startTask"] = json!({"commandLine": format!("/bin/touch {}", marker.display())});
    let _: () = con.set(&pool_key, record.to_string()).await.unwrap();
    let mut worker = std::process::Command::new(drover_tests::bin_dir().join("drover-worker"));
    acct.env(&mut worker);
    let run = worker.args(["--pool-id", "p", "--work-dir"]).arg(acct.work_dir.join("nodes")).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("pool \"p\"'s record was refused"), "{stderr}");
    assert!(!marker.exists(), "the start task did not run");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_message_was_taken_by_someone_else_still_runs() {
    let mut acct = TestAccount::new("stolen").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    acct.add_tasks("j", &[json!({"id": "t", "commandLine": "/bin/true"})]);
    // Something that is not a node takes the message and acks it.
    let ch = acct.channel().await;
    let queue = drover_core::queue::Topology::new(acct.name()).pool_queue("p");
    let taken = ch.basic_get(queue.as_str().into(), lapin::options::BasicGetOptions::default()).await.unwrap();
    let taken = taken.expect("the task's message is queued");
    taken.delivery.ack(lapin::options::BasicAckOptions::default()).await.unwrap();
    acct.start_worker("p", &[]);
    // An idle node of the pool finds it queued with nothing to deliver it and publishes it again.
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    assert!(acct.worker_logs().contains("publishing them again"), "{}", acct.worker_logs());
}

/// A broker user of the test's own (on the default vhost); deleted when dropped.
struct BrokerUser(String);

impl BrokerUser {
    fn new(name: &str, configure: &str, write: &str, read: &str) -> Self {
        drover_tests::rabbitmqctl(&["add_user", name, "pw"]);
        let user = BrokerUser(name.to_string());
        drover_tests::rabbitmqctl(&["set_permissions", "-p", "/", name, configure, write, read]);
        user
    }

    fn url(&self) -> String {
        format!("amqp://{}:pw@127.0.0.1:5672/%2f", self.0)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["delete_user", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_needs_no_configure_right_and_names_a_right_it_lacks() {
    let mut acct = TestAccount::new("rights").await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    acct.add_tasks("j", &[json!({"id": "t", "commandLine": "/bin/true"})]);
    let a = regex_escape(acct.name());
    // The worker's rights: consume its pool's queues, publish to its account's exchanges.
    let worker = BrokerUser::new(
        &format!("{}-worker", acct.name()),
        "^$",
        &format!("^drover\\.{a}\\.(tasks|dead)$"),
        &format!("^drover\\.{a}\\.(pool\\.p(\\.high|\\.low)?|tasks|dead)$"),
    );
    let admin_urls = std::mem::replace(&mut acct.config.amqp_url, vec![worker.url()]);
    acct.start_worker("p", &[]);
    acct.config.amqp_url = admin_urls.clone();
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());

    // Without the right to read its queues, a worker says so and stops, instead of retrying.
    let blind = BrokerUser::new(&format!("{}-blind", acct.name()), "^$", "^$", "^$");
    let mut cmd = std::process::Command::new(drover_tests::bin_dir().join("drover-worker"));
    acct.config.amqp_url = vec![blind.url()];
    acct.env(&mut cmd);
    acct.config.amqp_url = admin_urls;
    let mut child = cmd
        .args(["--pool-id", "p", "--work-dir"])
        .arg(acct.work_dir.join("nodes"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drover_tests::eventually(std::time::Duration::from_secs(30), "the worker without rights exits", || {
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        async move { exited }
    })
    .await;
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("ACCESS_REFUSED") && said.contains(&format!("drover.{}.", acct.name())), "{said}");
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_ascii_alphanumeric() { vec![c] } else { vec!['\\', c] }).collect()
}

/// A Redis ACL user of the test's own; deleted when dropped.
struct RedisUser(String);

impl RedisUser {
    fn new(name: &str, rules: &[&str]) -> Self {
        let user = RedisUser(name.to_string());
        let mut args = vec!["ACL", "SETUSER", name, "reset", "on", ">pw"];
        args.extend_from_slice(rules);
        let out = std::process::Command::new("redis-cli").args(&args).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK", "{args:?}: {out:?}");
        user
    }

    fn url(&self) -> String {
        format!("redis://{}:pw@127.0.0.1:6379/0", self.0)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["--user", &self.0, "--pass", "pw", "--no-auth-warning"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("redis-cli").args(["ACL", "DELUSER", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_runs_with_redis_users_that_reach_only_its_keys() {
    let mut acct = TestAccount::new("redisacl").await;
    let a = acct.name().to_string();
    // What README's security model gives the submitter and the worker: the account's keys only,
    // no dangerous or administrative command.
    let account_keys = [format!("~drover:{a}:*"), format!("~drover:{{{a}:*")];
    let rules: Vec<&str> = account_keys.iter().map(String::as_str).chain(["+@all", "-@dangerous", "-@admin"]).collect();
    let submitter = RedisUser::new(&format!("{a}-submitter"), &rules);
    let worker = RedisUser::new(&format!("{a}-worker"), &rules);
    let admin_url = std::mem::replace(&mut acct.config.redis_url, submitter.url());
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let tasks: Vec<Value> = (0..4).map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/true"})).collect();
    acct.add_tasks("j", &tasks);
    acct.config.redis_url = worker.url();
    acct.start_worker("p", &[]);
    acct.config.redis_url = submitter.url();
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    acct.config.redis_url = admin_url;
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    // Another account's keys are out of reach.
    assert!(worker.run(&["GET", "drover:someone-else:pool:p"]).contains("NOPERM"));
    assert!(worker.run(&["KEYS", "*"]).contains("NOPERM"));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_show_in_help_logs_records_or_tables() {
    let mut acct = TestAccount::new("secrets").await;
    // --help never echoes a value from the environment that may hold a password.
    for (program, args) in [
        ("drover", vec!["--help"]),
        ("drover", vec!["task", "create", "--help"]),
        ("drover-worker", vec!["--help"]),
        ("drover-monitor", vec!["--help"]),
    ] {
        let out = std::process::Command::new(drover_tests::bin_dir().join(program))
            .args(&args)
            .env("DROVER_AMQP_URL", "amqp://u:HELP-SECRET-1@h:5672/%2f")
            .env("DROVER_REDIS_URL", "redis://u:HELP-SECRET-2@h:6379/0")
            .env("DROVER_RABBITMQ_API", "http://u:HELP-SECRET-3@h:15672/")
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !said.contains("HELP-SECRET"), "{program} {args:?}: {said}");
    }

    // A SAS signature in a failing httpUrl stays out of the logs and the task's record.
    acct.sign_with("k 0123456789abcdef0123456789abcdef\n");
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let sas = "http://127.0.0.1:1/c/in.txt?sv=2022-11-02&sp=r&sig=SAS-SECRET-4";
    let task =
        json!({"id": "t", "commandLine": "/bin/true", "resourceFiles": [{"httpUrl": sas, "filePath": "in.txt"}]});
    acct.add_tasks("j", &[task]);
    acct.start_worker("p", &["--storage-retry-seconds", "2"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    let failed = failure(&acct, "t");
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("sig=***") && !message.contains("SAS-SECRET"), "{failed}");
    assert!(!acct.worker_logs().contains("SAS-SECRET"), "{}", acct.worker_logs());

    // Dead letters show in a table without their escape sequences, however long.
    let topology = drover_core::queue::Topology::new(acct.name());
    let ch = acct.channel().await;
    for body in ["\u{1b}[31mRED\u{1b}[0m".to_string(), "x".repeat(70_000)] {
        let confirm = ch
            .basic_publish(
                topology.dead_letters().into(),
                "".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
        confirm.await.unwrap();
    }
    let table = acct.ok(&["dead-letter", "list", "-o", "table"]);
    assert!(!table.stdout.contains('\u{1b}') && table.stdout.contains("RED"), "{table:?}");
    let json = acct.ok(&["dead-letter", "list"]).json();
    assert!(
        json.as_array().unwrap().iter().any(|d| d["body"].as_str().is_some_and(|b| b.len() == 70_000)),
        "JSON keeps it whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confined_worker_keeps_tasks_to_their_accounts_storage() {
    let mut acct = TestAccount::new("confined").await;
    let (bucket, a) = (acct.config.bucket.clone(), acct.name().to_string());
    let s3 = acct.s3().await;
    // Another account's object, and a place this account may also use.
    let (theirs, extra) = (format!("{a}-other/secret.txt"), format!("{a}-extra/in.txt"));
    for key in [&theirs, &extra] {
        let body = aws_sdk_s3::primitives::ByteStream::from_static(b"data");
        s3.put_object().bucket(&bucket).key(key).body(body).send().await.unwrap();
    }
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let out_to = |url: String| {
        json!([{"filePattern": "out.txt", "destination": {"container": {"containerUrl": url}},
        "uploadOptions": {"uploadCondition": "taskCompletion"}}])
    };
    let writes = "/bin/sh -c 'echo x > out.txt'";
    acct.add_tasks(
        "j",
        &[
            json!({"id": "read-theirs", "commandLine": "/bin/true",
                "resourceFiles": [{"httpUrl": format!("s3://{bucket}/{theirs}"), "filePath": "in.txt"}]}),
            json!({"id": "write-theirs", "commandLine": writes, "outputFiles": out_to(format!("s3://{bucket}/{a}-other/out"))}),
            json!({"id": "allowed", "commandLine": writes,
                "resourceFiles": [{"httpUrl": format!("s3://{bucket}/{extra}"), "filePath": "in.txt"}],
                "outputFiles": out_to(acct.s3_url("out"))}),
        ],
    );
    acct.start_worker("p", &["--storage-allow", &format!("s3://{bucket}/{a}-extra")]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}");
    for (task, code) in [("read-theirs", "ResourceFileDownloadError"), ("write-theirs", "FileUploadError")] {
        let f = failure(&acct, task);
        assert_eq!(f["code"], code, "{task}: {f}");
        assert!(f["message"].as_str().unwrap().contains("outside what this node lets tasks reach"), "{f}");
    }
    let allowed = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "allowed"]).json();
    assert_eq!(allowed["executionInfo"]["result"], "success", "{allowed}");
    let written = s3.head_object().bucket(&bucket).key(format!("{a}-other/out/out.txt")).send().await;
    assert!(written.is_err(), "nothing was written to the other account's prefix");
    for key in [&theirs, &extra] {
        let _ = s3.delete_object().bucket(&bucket).key(key).send().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_can_ask_for_a_password() {
    let mut acct = TestAccount::new("metricsauth").await;
    let auth = acct.work_dir.join("metrics.auth");
    std::fs::write(&auth, "prometheus:scrape-secret\n").unwrap();
    std::fs::set_permissions(&auth, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen, "--metrics-auth-file", auth.to_str().unwrap()]);
    let url = format!("http://{listen}/metrics");
    let http = reqwest::Client::new();
    drover_tests::eventually(std::time::Duration::from_secs(20), "the monitor serves", || async {
        reqwest::get(format!("http://{listen}/health")).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let wrong = http.get(&url).basic_auth("prometheus", Some("guess")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http.get(&url).basic_auth("prometheus", Some("scrape-secret")).send().await.unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("drover_"));
}
