//! Azure Batch JSON as `az batch ... --json-file` takes it runs unchanged: a byte-order mark,
//! enum values in any case, `null` for an absent field, numbers and booleans written as
//! strings, `maxTasksPerNode` for `taskSlotsPerNode`; a refusal names the field's path.

#![allow(clippy::unwrap_used)]

use drover_tests::TestAccount;
use serde_json::json;

/// `value` written as a Windows editor or PowerShell writes it: a byte-order mark first.
fn with_bom(value: &serde_json::Value) -> String {
    format!("\u{feff}{}", serde_json::to_string_pretty(value).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_written_as_az_accepts_them_run() {
    let mut acct = TestAccount::new("azlenient").await;
    let pool = json!({"id": "p", "vmSize": null, "maxTasksPerNode": "2", "enableAutoScale": "false",
                      "displayName": null});
    let file = acct.file("pool.json", &with_bom(&pool));
    acct.ok(&["pool", "create", "--json-file", file.to_str().unwrap()]);
    acct.remember_pool("p");
    let shown = acct.ok(&["pool", "show", "--pool-id", "p"]).json();
    assert_eq!(shown["taskSlotsPerNode"], 2, "{shown}");

    let job = json!({"id": "j", "poolInfo": {"poolId": "p"}, "priority": "10", "displayName": null,
                     "onAllTasksComplete": "TerminateJob", "usesTaskDependencies": "False"});
    let file = acct.file("job.json", &with_bom(&job));
    acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
    let shown = acct.ok(&["job", "show", "--job-id", "j"]).json();
    assert_eq!(
        (shown["priority"].clone(), shown["onAllTasksComplete"].clone()),
        (json!(10), json!("terminatejob")),
        "{shown}"
    );

    let tasks: Vec<serde_json::Value> = (0..3)
        .map(|n| {
            json!({"id": format!("t{n}"), "commandLine": "/bin/sh -c 'echo out > o.txt'", "displayName": null,
                   "requiredSlots": "1", "constraints": {"maxTaskRetryCount": "0", "maxWallClockTime": null},
                   "userIdentity": {"autoUser": {"scope": "Task", "elevationLevel": "NonAdmin"}},
                   "outputFiles": [{"filePattern": "o.txt",
                                    "destination": {"container": {"containerUrl": acct.s3_url(&format!("out/t{n}"))}},
                                    "uploadOptions": {"uploadCondition": "TaskSuccess"}}]})
        })
        .collect();
    let file = acct.file("tasks.json", &with_bom(&json!(tasks)));
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 3, "{counts}");
    // TerminateJob, written as Azure's tutorial writes it, ended the job.
    let job =
        acct.until_json(&["job", "show", "--job-id", "j"], "the job completes", |j| j["state"] == "completed").await;
    assert_eq!(job["state"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_names_the_path_of_the_field_and_adds_nothing() {
    let mut acct = TestAccount::new("azpath").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let tasks = json!([
        {"id": "a", "commandLine": "true"},
        {"id": "b", "commandLine": "true", "resourceFiles": [
            {"httpUrl": "http://127.0.0.1:9/x", "filePath": "x"},
            {"httpUrl": "http://127.0.0.1:9/y", "filePath": "y", "fileMode": 755}]}
    ]);
    let file = acct.file("tasks.json", &serde_json::to_string_pretty(&tasks).unwrap());
    let run = acct.drover(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("task #2") && run.stderr.contains("resourceFiles[1].fileMode: invalid type"),
        "{run:?}"
    );
    let listed = acct.ok(&["task", "list", "--job-id", "j"]).json();
    assert_eq!(listed, json!([]));

    let job = json!({"id": "k", "poolInfo": {"poolId": "p"}, "constraints": {"maxTaskRetryCount": "several"}});
    let file = acct.file("job.json", &job.to_string());
    let run = acct.drover(&["job", "create", "--json-file", file.to_str().unwrap()]);
    assert!(run.code == 1 && run.stderr.contains("constraints.maxTaskRetryCount: invalid type"), "{run:?}");
    assert_eq!(acct.drover(&["job", "show", "--job-id", "k"]).code, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_azure_pool_document_is_created_with_its_cloud_fields_kept() {
    let mut acct = TestAccount::new("azpool").await;
    // A pool as Azure's documentation writes one.
    let pool = json!({
        "id": "p",
        "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": {
            "imageReference": {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy",
                               "sku": "22_04-lts", "version": "latest"},
            "nodeAgentSKUId": "batch.node.ubuntu 22.04"},
        "resizeTimeout": "PT15M",
        "targetDedicatedNodes": 1,
        "targetLowPriorityNodes": 0,
        "enableInterNodeCommunication": false,
        "networkConfiguration": {"subnetId": "/subscriptions/x/resourceGroups/y/providers/Microsoft.Network/virtualNetworks/z/subnets/s"},
        "maxTasksPerNode": 2,
        "taskSchedulingPolicy": {"nodeFillType": "Spread"}
    });
    let file = acct.file("pool.json", &serde_json::to_string_pretty(&pool).unwrap());
    let created = acct.ok(&["pool", "create", "--json-file", file.to_str().unwrap()]);
    acct.remember_pool("p");
    for field in ["virtualMachineConfiguration", "resizeTimeout", "networkConfiguration"] {
        let said: Vec<&str> =
            created.stderr.lines().filter(|l| l.contains(&format!("{field}: has no effect"))).collect();
        assert_eq!(said.len(), 1, "one warning for {field}: {created:?}");
    }
    let shown = acct.ok(&["pool", "show", "--pool-id", "p"]).json();
    assert_eq!(shown["virtualMachineConfiguration"], pool["virtualMachineConfiguration"], "{shown}");
    assert_eq!(shown["resizeTimeout"], "PT15M");
    assert_eq!(shown["taskSlotsPerNode"], 2);
    assert_eq!(shown["taskSchedulingPolicy"], json!({"nodeFillType": "spread"}));
    assert!(!created.stderr.contains("taskSchedulingPolicy"), "{created:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_problem_of_a_document_is_named_at_once_with_its_place() {
    let mut acct = TestAccount::new("azall").await;
    acct.pool("p", 1);
    let job =
        "{\n  \"id\": \"j\",\n  \"poolInfo\": {\"poolId\": \"p\", \"autoPoolSpecification\": {\"poolLifetimeOption\": \"job\", \"pool\": {\"mountConfiguration\": []}}},\n  \
               \"jobManagerTask\": {\"id\": \"m\", \"commandLine\": \"x\", \"containerSettings\": {\"imageName\": \"u\"}},\n  \"colour\": \"red\"\n}\n";
    let file = acct.file("job.json", job);
    let run = acct.drover(&["job", "create", "--json-file", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    let said = run.stderr.trim();
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains("3 problems: line 3 column 95: poolInfo.autoPoolSpecification.pool.mountConfiguration: an Azure Batch feature"),
        "{said}"
    );
    assert!(said.contains("; line 4 column 53: jobManagerTask.containerSettings:"), "{said}");
    assert!(said.contains("; line 5 column 3: colour: unknown field"), "{said}");
    assert_eq!(acct.drover(&["job", "show", "--job-id", "j"]).code, 1, "nothing was created");

    // In a task file: each task's problems, at their own lines.
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let tasks = "{\"id\": \"a\", \"commandLine\": \"true\"}\n\
                 {\"id\": \"b\", \"commandLine\": \"true\", \"containerSettings\": {\"imageName\": \"ubuntu\"},\n  \
                 \"resourceFiles\": [{\"httpUrl\": \"http://h/x\", \"filePath\": \"x\", \"identityReference\": {\"resourceId\": \"r\"}}]}\n";
    let file = acct.file("tasks.jsonl", tasks);
    let run = acct.drover(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    assert!(run.stderr.contains("task #2: 2 problems: line 2 column 36: containerSettings:"), "{run:?}");
    assert!(
        run.stderr.contains("; line 3 column 64: resourceFiles[0].identityReference: an Azure Batch feature"),
        "{run:?}"
    );
    assert_eq!(acct.ok(&["task", "list", "--job-id", "j"]).json(), json!([]));

    // Azure's collection, {"value": [...]}: every bad task, each problem at its line.
    let collection = "{\"value\": [\n  {\"id\": \"a\", \"commandLine\": \"true\", \"colour\": 1},\n  \
                      {\"id\": \"b\", \"commandLine\": \"true\"},\n  \
                      {\"id\": \"c\", \"commandLine\": \"true\", \"constraints\": {\"maxWallClockTime\": \"1h\"}}]}\n";
    let file = acct.file("collection.json", collection);
    let run = acct.drover(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    let said = run.stderr.trim();
    assert!(run.code == 1 && said.lines().count() == 1 && said.contains("2 tasks are not valid: "), "{run:?}");
    assert!(said.contains("task #1: line 2 column 38: colour: unknown field"), "{said}");
    assert!(said.contains("task #3: line 4 column 54: constraints.maxWallClockTime:"), "{said}");
    assert_eq!(acct.ok(&["task", "list", "--job-id", "j"]).json(), json!([]));
}

#[test]
fn the_readme_field_table_is_the_codes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = drover_core::model::fields::markdown();
    assert!(readme.contains(&table), "README.md's field table differs from model::fields; put this in it:\n{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_manager_runs_first_and_its_completion_ends_the_job() {
    let mut acct = TestAccount::new("azmanager").await;
    acct.pool("p", 2);
    // Azure's defaults: the manager has its node to itself, and the job ends when it completes.
    let job = json!({"id": "j", "poolInfo": {"poolId": "p"},
                     "jobManagerTask": {"id": "manager", "commandLine": "/bin/sh -c 'echo managing; sleep 1'"}});
    let file = acct.file("job.json", &job.to_string());
    acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
    let tasks: Vec<serde_json::Value> =
        (0..3).map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/true"})).collect();
    acct.add_tasks("j", &tasks);
    let listed = acct.ok(&["task", "list", "--job-id", "j"]).json();
    assert_eq!(listed[0]["id"], "manager", "the manager is the job's first task: {listed}");
    assert_eq!(listed[0]["requiredSlots"], 2, "runExclusive takes the node: {listed}");
    acct.start_worker("p", &[]);
    let ended = acct.until_json(&["job", "show", "--job-id", "j"], "the job ends", |j| j["state"] == "completed").await;
    assert_eq!(ended["executionInfo"]["terminateReason"], "JMComplete", "{ended}");
    let manager = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "manager"]).json();
    assert_eq!(manager["executionInfo"]["result"], "success", "{manager}");
    assert_eq!(acct.task_file("j", "manager", "stdout.txt"), "managing\n");
    // The other tasks waited for the node the manager held, and the job ended before they ran.
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 1, "{counts}");

    // killJobOnCompletion false, runExclusive false: the job goes on after its manager.
    let job = json!({"id": "k", "poolInfo": {"poolId": "p"},
                     "jobManagerTask": {"id": "m", "commandLine": "/bin/true", "killJobOnCompletion": false,
                                        "runExclusive": false}});
    let file = acct.file("job-k.json", &job.to_string());
    acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
    // Created whole, the same job is refused a second time.
    let again = acct.drover(&["job", "create", "--json-file", file.to_str().unwrap()]);
    assert!(again.code == 1 && again.stderr.contains("exists"), "{again:?}");
    acct.add_tasks("k", &tasks);
    let wait = acct.drover(&["job", "wait", "--job-id", "k", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let counts = acct.ok(&["job", "task-counts", "--job-id", "k"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 4, "{counts}");
    let shown = acct.ok(&["job", "show", "--job-id", "k"]).json();
    assert_eq!(shown["state"], "active", "{shown}");
}

/// Azurite's Blob service of the test's own, on a free port; stopped when dropped.
struct Azurite {
    child: std::process::Child,
    port: u16,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emulator's well-known account (public: every Azure SDK documents it).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    async fn start(dir: &std::path::Path) -> Azurite {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let bin = root.join("target/tools/node_modules/.bin/azurite-blob");
        assert!(bin.exists(), "{} is missing: run scripts/services.sh --with-azurite", bin.display());
        let port = drover_tests::free_port();
        std::fs::create_dir_all(dir).unwrap();
        let child = std::process::Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let azurite = Azurite { child, port };
        drover_tests::eventually(std::time::Duration::from_secs(30), "Azurite listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        azurite
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }
}

/// An account SAS (version 2019-12-12) for the Blob service with every permission, as
/// `az storage account generate-sas` makes one.
fn account_sas() -> String {
    use base64::Engine;
    use hmac::Mac;
    let (sp, ss, srt, se, sv) = ("rwdlac", "b", "sco", "2099-01-01T00:00:00Z", "2019-12-12");
    let to_sign = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n\n{sv}\n");
    let key = base64::engine::general_purpose::STANDARD.decode(ACCOUNT_KEY).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let enc = |s: &str| s.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D").replace(':', "%3A");
    format!("sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&sig={}", enc(se), enc(&sig))
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_stage_through_azure_blob_storage_with_sas_urls() {
    let mut acct = TestAccount::new("azblob").await;
    let azurite = Azurite::start(&acct.work_dir.join("azurite")).await;
    let (base, sas) = (azurite.base(), account_sas());
    let http = reqwest::Client::new();
    let put = |url: String, body: &'static str| {
        http.put(url).header("x-ms-version", "2019-12-12").header("x-ms-blob-type", "BlockBlob").body(body).send()
    };
    for container in ["inputs", "outputs"] {
        let made = put(format!("{base}/{container}?restype=container&{sas}"), "").await.unwrap();
        assert_eq!(made.status(), 201, "{:?}", made.text().await);
    }
    for (name, body) in [("data/a.txt", "alpha "), ("data/sub/b.txt", "beta "), ("other/c.txt", "gamma")] {
        let stored = put(format!("{base}/inputs/{name}?{sas}"), body).await.unwrap();
        assert_eq!(stored.status(), 201, "{:?}", stored.text().await);
    }

    acct.sign_with("k1 0123456789abcdef0123456789abcdef-one\n");
    acct.pool("p", 2);
    // A pool whose start task has a SAS is stored sealed, and creating it again is no conflict.
    let sealed_pool = json!({"id": "sp", "startTask": {"commandLine": "/bin/true",
        "resourceFiles": [{"httpUrl": format!("{base}/inputs/other/c.txt?{sas}"), "filePath": "c.txt"}]}});
    let file = acct.file("sealed-pool.json", &sealed_pool.to_string());
    for _ in 0..2 {
        acct.ok(&["pool", "create", "--json-file", file.to_str().unwrap()]);
    }
    acct.remember_pool("sp");
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let out = |path: &str| {
        json!({"filePattern": path, "uploadOptions": {"uploadCondition": "taskSuccess"},
                                  "destination": {"container": {"containerUrl": format!("{base}/outputs?{sas}"),
                                                                "path": format!("run1/{path}")}}})
    };
    let tasks = json!([
        {"id": "blob", "commandLine": "/bin/sh -c 'cat in/data/a.txt in/data/sub/b.txt c.txt > out.txt; head -c 20000000 /dev/zero > big.bin'",
         "resourceFiles": [{"storageContainerUrl": format!("{base}/inputs?{sas}"), "blobPrefix": "data/", "filePath": "in"},
                           {"httpUrl": format!("{base}/inputs/other/c.txt?{sas}"), "filePath": "c.txt"}],
         "outputFiles": [out("out.txt"), out("big.bin")]},
        {"id": "forged", "commandLine": "/bin/true",
         "resourceFiles": [{"storageContainerUrl": format!("{base}/inputs?{}", sas.replace("&sig=", "&sig=AAAA")), "filePath": "in"}]}
    ]);
    let file = acct.file("tasks.json", &tasks.to_string());
    let secret = sas.split("&sig=").nth(1).unwrap();
    // A SAS is a credential: without keys to seal it, drover does not store it.
    let keys = acct.config.signing_key_file.take();
    let refused = acct.drover(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    assert!(
        refused.code == 1 && refused.stderr.contains("task \"blob\"") && refused.stderr.contains("--signing-key-file")
    );
    assert!(!refused.stderr.contains(secret), "{refused:?}");
    assert_eq!(acct.ok(&["task", "list", "--job-id", "j"]).json(), json!([]));
    acct.config.signing_key_file = keys;
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    // Stored sealed: Redis and `show` hold no signature, only what the keys open.
    let stored = acct.redis_text().await;
    assert!(stored.contains("drover-sealed=k1.") && !stored.contains(secret), "{stored}");
    let shown = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "blob"]).stdout;
    assert!(shown.contains("drover-sealed=k1.") && !shown.contains(secret) && !shown.contains("sv="), "{shown}");
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert!(wait.code == 0 || wait.code == 1, "{wait:?}");

    let task = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "blob"]).json();
    assert_eq!(task["executionInfo"]["result"], "success", "{task}\n{}", acct.worker_logs());
    let got = http.get(format!("{base}/outputs/run1/out.txt?{sas}")).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "alpha beta gamma");
    // 20 MB went up in blocks.
    let big = http.head(format!("{base}/outputs/run1/big.bin?{sas}")).send().await.unwrap();
    assert_eq!(big.headers()["content-length"], "20000000");

    // A SAS that does not verify fails the task; its signature shows in no failure or log.
    let forged = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "forged"]).json();
    let failure = &forged["executionInfo"]["failureInfo"];
    assert_eq!(failure["code"], "ResourceFileDownloadError", "{forged}");
    assert!(failure["message"].as_str().unwrap().contains("AuthorizationFailure"), "{failure}");
    assert!(!failure.to_string().contains("AAAA") && !failure.to_string().contains(secret), "{failure}");
    let logs = acct.worker_logs();
    assert!(!logs.contains(secret) && !logs.contains("sig=AAAA"), "the worker logged a SAS signature");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_an_auto_pool_runs_with_no_worker_started_by_hand_and_its_pool_goes() {
    let mut acct = TestAccount::new("azautopool").await;
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen]);
    let job = json!({"id": "j", "onAllTasksComplete": "terminateJob",
                     "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "ap", "poolLifetimeOption": "job",
                         "pool": {"vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1, "taskSlotsPerNode": 2}}}});
    let file = acct.file("job.json", &job.to_string());
    let created = acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]).json();
    assert_eq!(created["poolInfo"]["poolId"], "ap_j", "{created}");
    acct.remember_pool("ap_j");
    assert_eq!(acct.ok(&["pool", "show", "--pool-id", "ap_j"]).json()["taskSlotsPerNode"], 2);
    let tasks: Vec<serde_json::Value> =
        (0..4).map(|n| json!({"id": format!("t{n}"), "commandLine": "/bin/true"})).collect();
    acct.add_tasks("j", &tasks);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 4, "{counts}");
    // The job has completed: the monitor stops the pool's worker and removes the pool.
    drover_tests::eventually(std::time::Duration::from_secs(60), "the auto pool is removed", || async {
        acct.drover(&["pool", "show", "--pool-id", "ap_j"]).code == 1
    })
    .await;
    let ch = acct.channel().await;
    let queue = drover_core::queue::Topology::new(acct.name()).pool_queue("ap_j");
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    assert!(ch.queue_declare(queue.as_str().into(), passive, Default::default()).await.is_err(), "its queue is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_makes_each_job_once_with_two_schedulers_running() {
    let mut acct = TestAccount::new("azschedule").await;
    acct.pool("p", 1);
    for _ in 0..2 {
        let listen = format!("127.0.0.1:{}", drover_tests::free_port());
        acct.start_monitor(&["--listen", &listen]);
    }
    let at = |ms: i64| {
        (chrono::Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    // Due at T, T+2 s and T+4 s; T+6 s is past doNotRunAfter.
    let schedule = json!({"id": "every2s", "schedule": {"doNotRunUntil": at(1000), "doNotRunAfter": at(6000),
                                                         "recurrenceInterval": "PT2S"},
                          "jobSpecification": {"poolInfo": {"poolId": "p"}, "priority": "5"}});
    let file = acct.file("schedule.json", &schedule.to_string());
    let created = acct.ok(&["job-schedule", "create", "--json-file", file.to_str().unwrap()]).json();
    assert_eq!(created["state"], "active", "{created}");
    assert!(created["executionInfo"]["nextRunTime"].is_string(), "{created}");
    let done = acct
        .until_json(&["job-schedule", "show", "--job-schedule-id", "every2s"], "the schedule completes", |s| {
            s["state"] == "completed"
        })
        .await;
    assert_eq!(done["executionInfo"]["recentJob"]["id"], "every2s-job-3", "{done}");
    let jobs = acct.ok(&["job", "list"]).json();
    let mut ids: Vec<&str> = jobs.as_array().unwrap().iter().filter_map(|j| j["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["every2s-job-1", "every2s-job-2", "every2s-job-3"], "{jobs}");
    assert_eq!(jobs[0]["priority"], 5, "{jobs}");

    // Disable, enable, terminate and delete, as Azure's commands do.
    let later = json!({"id": "later", "schedule": {"doNotRunUntil": at(3_600_000)},
                       "jobSpecification": {"poolInfo": {"poolId": "p"}}});
    let file = acct.file("later.json", &later.to_string());
    acct.ok(&["job-schedule", "create", "--json-file", file.to_str().unwrap()]);
    let again = acct.drover(&["job-schedule", "create", "--json-file", file.to_str().unwrap()]);
    assert!(again.code == 1 && again.stderr.contains("exists"), "{again:?}");
    let id = ["--job-schedule-id", "later"];
    assert_eq!(acct.ok(&[&["job-schedule", "disable"][..], &id].concat()).json()["state"], "disabled");
    assert_eq!(acct.ok(&[&["job-schedule", "enable"][..], &id].concat()).json()["state"], "active");
    // An update replaces the schedule and the job specification: with no doNotRunUntil, the
    // schedule (which made no job yet) is due at once, and its job follows the new spec.
    let update = json!({"schedule": {"recurrenceInterval": "PT1H"},
                        "jobSpecification": {"poolInfo": {"poolId": "p"}, "priority": 9},
                        "metadata": [{"name": "v", "value": "2"}]});
    let file = acct.file("update.json", &update.to_string());
    let update = |id: &str| {
        acct.drover(&["job-schedule", "update", "--job-schedule-id", id, "--json-file", file.to_str().unwrap()])
    };
    let updated = update("later");
    assert_eq!(updated.code, 0, "{updated:?}");
    assert_eq!(updated.json()["metadata"], json!([{"name": "v", "value": "2"}]));
    let made = acct
        .until_json(
            &["job-schedule", "show", "--job-schedule-id", "later"],
            "the updated schedule makes its job",
            |s| s["executionInfo"]["recentJob"]["id"] == "later-job-1",
        )
        .await;
    assert!(made["executionInfo"]["nextRunTime"].as_str().unwrap() > at(3_000_000).as_str(), "{made}");
    assert_eq!(acct.ok(&["job", "show", "--job-id", "later-job-1"]).json()["priority"], 9);
    let missing = update("nope");
    assert!(missing.code == 1 && missing.stderr.contains("nope"), "{missing:?}");
    let other = acct.file(
        "other.json",
        &json!({"id": "x", "schedule": {}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}).to_string(),
    );
    let mismatch =
        acct.drover(&["job-schedule", "update", "--job-schedule-id", "later", "--json-file", other.to_str().unwrap()]);
    assert!(mismatch.code == 1 && mismatch.stderr.contains("\"x\" is not the schedule's"), "{mismatch:?}");
    assert_eq!(acct.ok(&[&["job-schedule", "terminate"][..], &id].concat()).json()["state"], "completed");
    let late = update("later");
    assert!(late.code == 1 && late.stderr.contains("completed"), "{late:?}");
    let refused = acct.drover(&[&["job-schedule", "enable"][..], &id].concat());
    assert!(refused.code == 1 && refused.stderr.contains("completed"), "{refused:?}");
    acct.ok(&[&["job-schedule", "delete"][..], &id].concat());
    assert_eq!(acct.drover(&[&["job-schedule", "show"][..], &id].concat()).code, 1);
    let listed = acct.ok(&["job-schedule", "list"]).json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_jobs_get_their_own_auto_pool_and_manager_task() {
    let mut acct = TestAccount::new("azschedmgr").await;
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen]);
    let after = (chrono::Utc::now() + chrono::Duration::milliseconds(3000))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // Jobs at once and 2 s later; each on a pool of its own, ended by its manager.
    let schedule = json!({"id": "sm", "schedule": {"recurrenceInterval": "PT2S", "doNotRunAfter": after},
        "jobSpecification": {
            "poolInfo": {"autoPoolSpecification": {"autoPoolIdPrefix": "sp", "poolLifetimeOption": "job",
                                                   "pool": {"targetDedicatedNodes": 1, "taskSlotsPerNode": 1}}},
            "jobManagerTask": {"id": "m", "commandLine": "/bin/sh -c 'echo managed by $AZ_BATCH_JOB_ID'"}}});
    let file = acct.file("schedule.json", &schedule.to_string());
    acct.ok(&["job-schedule", "create", "--json-file", file.to_str().unwrap()]);
    acct.until_json(&["job-schedule", "show", "--job-schedule-id", "sm"], "the schedule completes", |s| {
        s["state"] == "completed"
    })
    .await;
    for job in ["sm-job-1", "sm-job-2"] {
        acct.remember_pool(&format!("sp_{job}"));
        let wait = acct.drover(&["job", "wait", "--job-id", job, "--timeout", "90"]);
        assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
        let shown = acct.ok(&["job", "show", "--job-id", job]).json();
        assert_eq!(shown["poolInfo"]["poolId"], format!("sp_{job}"), "{shown}");
        let manager = acct.ok(&["task", "show", "--job-id", job, "--task-id", "m"]).json();
        assert_eq!(manager["executionInfo"]["result"], "success", "{manager}");
        assert_eq!(acct.task_file(job, "m", "stdout.txt"), format!("managed by {job}\n"));
    }
}
