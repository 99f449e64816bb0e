//! A task touches nothing but its own work: what a task leaves in its directory (links out of
//! it, a link in place of its working directory, of stdout.txt or of the worker's retention
//! marker) never makes the worker read or write outside it.

#![allow(clippy::unwrap_used)]

use drover_tests::TestAccount;
use serde_json::json;

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-TASK";

/// Every object of the account's prefix and of `extra`, with its contents.
async fn objects(acct: &TestAccount, prefixes: &[&str]) -> Vec<(String, String)> {
    let s3 = acct.s3().await;
    let mut out = vec![];
    for prefix in prefixes {
        let list = s3.list_objects_v2().bucket(drover_tests::BUCKET).prefix(*prefix).send().await.unwrap();
        for key in list.contents().iter().filter_map(|o| o.key()) {
            let body = s3.get_object().bucket(drover_tests::BUCKET).key(key).send().await.unwrap().body;
            let bytes = body.collect().await.unwrap().into_bytes();
            out.push((key.to_string(), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn links_a_task_leaves_never_lead_the_worker_outside_its_directory() {
    let mut acct = TestAccount::new("links").await;
    // What lies outside every task directory: a secret file, a directory holding one, a victim.
    let outside = acct.work_dir.join("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    let (secret, secret_dir, victim) = (outside.join("secret.txt"), outside.join("dir"), outside.join("victim.txt"));
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::write(secret_dir.join("secret.txt"), SECRET).unwrap();
    std::fs::write(&victim, "untouched").unwrap();
    let (secret, secret_dir, victim) = (secret.display(), secret_dir.display(), victim.display());

    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let out = acct.s3_url("out");
    let output = |pattern: &str, path: &str| {
        json!({"filePattern": pattern, "destination": {"container": {"containerUrl": out, "path": path}},
               "uploadOptions": {"uploadCondition": "taskCompletion"}})
    };
    let tasks = [
        // An output that is a link to a file outside.
        json!({"id": "file-link", "commandLine": format!("/bin/sh -c 'ln -s {secret} out.txt'"),
               "outputFiles": [output("out.txt", "file-link/out.txt")]}),
        // The working directory replaced by a link to a directory outside.
        json!({"id": "wd-link", "commandLine": format!("/bin/sh -c 'cd .. && rm -rf wd && ln -s {secret_dir} wd'"),
               "outputFiles": [output("secret.txt", "wd-link/secret.txt")]}),
        json!({"id": "wd-link-glob", "commandLine": format!("/bin/sh -c 'cd .. && rm -rf wd && ln -s {secret_dir} wd'"),
               "outputFiles": [output("**/*.txt", "wd-link-glob")]}),
        // A link to a directory outside, under a `**` pattern: not followed; the rest uploads.
        json!({"id": "dir-link", "commandLine": format!("/bin/sh -c 'mkdir d && echo mine > d/own.txt && ln -s {secret_dir} d/link'"),
               "outputFiles": [output("**/*.txt", "dir-link")]}),
        // stdout.txt replaced by a link to a file outside.
        json!({"id": "stdout-link", "commandLine": format!("/bin/sh -c 'echo hi; ln -sf {secret} ../stdout.txt'")}),
        // The retention marker planted as a link to a file outside.
        json!({"id": "marker-link", "commandLine": format!("/bin/sh -c 'ln -s {victim} ../.drover-expires'")}),
    ];
    let file = acct.file("tasks.jsonl", &tasks.iter().map(|t| format!("{t}\n")).collect::<String>());
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert!(wait.code == 0 || wait.code == 1, "{wait:?}\n{}", acct.worker_logs());

    let show = |t: &str| acct.ok(&["task", "show", "--job-id", "j", "--task-id", t]).json();
    for t in ["file-link", "wd-link", "wd-link-glob", "stdout-link"] {
        let task = show(t);
        let failure = &task["executionInfo"]["failureInfo"];
        assert_eq!(failure["code"], "FileUploadError", "{t}: {task}");
        let message = failure["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("leads outside the task directory")
                || message.contains("a link, not the task's directory"),
            "{t}: {message}"
        );
        assert!(!message.contains(SECRET), "{t}: {message}");
    }
    for t in ["dir-link", "marker-link"] {
        let task = show(t);
        assert_eq!(task["executionInfo"]["result"], "success", "{t}: {task}");
    }
    let stored = objects(&acct, &[&format!("{}/", acct.name())]).await;
    for (key, body) in &stored {
        assert!(!body.contains(SECRET), "{key} holds the secret");
    }
    let keys: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.iter().any(|k| k.ends_with("out/dir-link/d/own.txt")), "the task's own file uploads: {keys:?}");
    assert_eq!(std::fs::read_to_string(outside.join("victim.txt")).unwrap(), "untouched");
}

/// Whether process `pid` still runs (not gone, not a zombie).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_ends_with_everything_it_started_even_what_left_its_session() {
    let mut acct = TestAccount::new("background").await;
    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    // Each task leaves a `sleep 300` behind, writes its pid, and ends (or runs out of time).
    let work_dir = acct.work_dir.clone();
    let pid_file = |task: &str| work_dir.join(format!("{task}.pid"));
    let leave = |task: &str, how: &str, then: &str| {
        let file = pid_file(task);
        let file = file.display();
        format!(
            "/bin/sh -c '{how} /bin/sh -c \"echo \\$\\$ > {file}; exec sleep 300\" & until [ -s {file} ]; do sleep 0.02; done{then}'"
        )
    };
    let admin = json!({"autoUser": {"elevationLevel": "admin"}});
    let tasks = [
        // In the background of its process group,
        json!({"id": "background", "commandLine": leave("background", "", "")}),
        // in a session of its own (pool scope: its uid is shared with the pool's other tasks),
        json!({"id": "setsid", "commandLine": leave("setsid", "setsid", "")}),
        // the same as admin (the worker's own user),
        json!({"id": "admin", "commandLine": leave("admin", "setsid", ""), "userIdentity": admin}),
        // and from a task that ran out of time.
        json!({"id": "timeout", "commandLine": leave("timeout", "setsid", "; sleep 300"),
            "constraints": {"maxWallClockTime": "PT3S", "maxTaskRetryCount": 0}}),
    ];
    acct.add_tasks("j", &tasks);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "only the task that timed out failed: {wait:?}\n{}", acct.worker_logs());
    let timed_out = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "timeout"]).json();
    assert_eq!(timed_out["executionInfo"]["failureInfo"]["code"], "MaxWallClockTimeExceeded", "{timed_out}");
    for task in ["background", "setsid", "admin", "timeout"] {
        let pid: u32 = std::fs::read_to_string(pid_file(task)).unwrap().trim().parse().unwrap();
        drover_tests::eventually(
            std::time::Duration::from_secs(10),
            &format!("the sleep {task} left is gone"),
            || async { !runs(pid) },
        )
        .await;
    }
}

/// A command's cgroup found empty when it ends serves a later command; one it left a process in
/// is killed with that process and never serves another.
#[tokio::test(flavor = "multi_thread")]
async fn an_emptied_cgroup_serves_the_next_task_and_one_left_busy_does_not() {
    let mut acct = TestAccount::new("cgroupreuse").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let work_dir = acct.work_dir.clone();
    let file = |task: &str, what: &str| work_dir.join(format!("{task}.{what}")).display().to_string();
    // The shell's own cgroup, once it has left the spawner's, where a command starts (what it
    // forks before it is moved is moved after it).
    let record = |task: &str| {
        format!("while grep -q /spawner /proc/$$/cgroup; do :; done; cat /proc/$$/cgroup > {}", file(task, "cgroup"))
    };
    let pid = file("b", "pid");
    let tasks = [
        json!({"id": "a", "commandLine": format!("/bin/sh -c '{}'", record("a"))}),
        // b runs in a's cgroup and leaves a process in it, in a session of its own.
        json!({"id": "b", "commandLine": format!(
            "/bin/sh -c '{}; setsid /bin/sh -c \"echo \\$\\$ > {pid}; exec sleep 300\" & until [ -s {pid} ]; do sleep 0.02; done'",
            record("b"))}),
        json!({"id": "c", "commandLine": format!("/bin/sh -c '{}'", record("c"))}),
    ];
    acct.add_tasks("j", &tasks);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let cgroup = |task: &str| {
        let text = std::fs::read_to_string(file(task, "cgroup")).unwrap();
        text.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string()
    };
    let (a, b, c) = (cgroup("a"), cgroup("b"), cgroup("c"));
    assert!(a.contains("/drover-"), "a ran in a cgroup of the worker's: {a}");
    assert_eq!(a, b, "a's emptied cgroup served b");
    assert_ne!(b, c, "b's cgroup, left busy, served no other task");
    let left: u32 = std::fs::read_to_string(&pid).unwrap().trim().parse().unwrap();
    drover_tests::eventually(std::time::Duration::from_secs(10), "the sleep b left is gone", || async { !runs(left) })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_downloads_no_more_than_the_node_allows() {
    let mut acct = TestAccount::new("downloadlimit").await;
    let key = format!("{}/inputs/blob.bin", acct.name());
    let s3 = acct.s3().await;
    s3.put_object().bucket(drover_tests::BUCKET).key(&key).body(vec![7u8; 3000].into()).send().await.unwrap();
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let url = acct.s3_url("inputs/blob.bin");
    let input = |path: &str| json!({"httpUrl": url, "filePath": path});
    let tasks = [
        json!({"id": "within", "commandLine": "/bin/true", "resourceFiles": [input("a")]}),
        json!({"id": "beyond", "commandLine": "/bin/true", "resourceFiles": [input("a"), input("b")]}),
    ];
    let file = acct.file("tasks.jsonl", &tasks.iter().map(|t| format!("{t}\n")).collect::<String>());
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    acct.start_worker("p", &["--max-task-download-bytes", "5000"]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}\n{}", acct.worker_logs());
    let show = |t: &str| acct.ok(&["task", "show", "--job-id", "j", "--task-id", t]).json();
    assert_eq!(show("within")["executionInfo"]["result"], "success");
    let beyond = show("beyond");
    let failure = &beyond["executionInfo"]["failureInfo"];
    assert_eq!(failure["code"], "ResourceFileDownloadError", "{beyond}");
    let message = failure["message"].as_str().unwrap();
    assert!(message.starts_with("resourceFiles[1]") && message.contains("--max-task-download-bytes"), "{message}");
    let dir = beyond["nodeInfo"]["taskRootDirectory"].as_str().unwrap();
    assert!(!std::path::Path::new(dir).join("wd/b").exists(), "nothing past the limit is left in place");
}

/// The first line of a task's stdout.txt on this machine's node.
fn stdout_of(acct: &TestAccount, task: &str) -> String {
    let shown = acct.ok(&["task", "show", "--job-id", "j", "--task-id", task]).json();
    let dir = shown["nodeInfo"]["taskRootDirectory"].as_str().unwrap_or_else(|| panic!("{shown}")).to_string();
    std::fs::read_to_string(std::path::Path::new(&dir).join("stdout.txt")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_run_as_their_own_users_and_reach_no_one_elses_work() {
    // Account B runs a task that leaves a secret in its working directory.
    let mut b = TestAccount::new("usersb").await;
    b.pool("p", 1);
    b.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    b.ok(&[
        "task",
        "create",
        "--job-id",
        "j",
        "--task-id",
        "t",
        "--command-line",
        &format!("/bin/sh -c 'echo {SECRET} > secret.txt'"),
    ]);
    b.start_worker("p", &[]);
    assert_eq!(b.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]).code, 0);
    let b_task = b.ok(&["task", "show", "--job-id", "j", "--task-id", "t"]).json();
    let b_dir = b_task["nodeInfo"]["taskRootDirectory"].as_str().unwrap().to_string();
    let b_account_dir = std::path::Path::new(&b_dir).ancestors().nth(3).unwrap().display().to_string();

    let mut a = TestAccount::new("usersa").await;
    let pool = json!({"id": "p", "taskSlotsPerNode": 4, "userAccounts": [
        {"name": "render", "linuxUserConfiguration": {"uid": 4321, "gid": 4321}},
        {"name": "ops", "elevationLevel": "admin"}]});
    let file = a.file("pool.json", &pool.to_string());
    a.ok(&["pool", "create", "--json-file", file.to_str().unwrap()]);
    a.remember_pool("p");
    let job = json!({"id": "j", "poolInfo": {"poolId": "p"},
                     "jobPreparationTask": {"commandLine": "/bin/sh -c 'echo prepared > prepared'"}});
    let file = a.file("job.json", &job.to_string());
    a.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
    let probe = format!(
        "/bin/sh -c 'while read l; do case $l in SigBlk*) echo $l;; esac; done < /proc/$$/status; id -u; cat /proc/$PPID/environ >/dev/null 2>&1 && echo read-worker-env; cat {b_dir}/wd/secret.txt 2>/dev/null; ls {b_account_dir} >/dev/null 2>&1 && echo listed-b; cat $AZ_BATCH_JOB_PREP_WORKING_DIR/prepared; echo changed 2>/dev/null >> $AZ_BATCH_JOB_PREP_WORKING_DIR/prepared && echo wrote-prep; sleep 1'"
    );
    let task = |id: &str, identity: serde_json::Value| {
        let mut t = json!({"id": id, "commandLine": probe});
        if !identity.is_null() {
            t["userIdentity"] = identity;
        }
        t
    };
    let tasks = [
        task("default", serde_json::Value::Null),
        task("task-1", json!({"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}})),
        task("task-2", json!({"autoUser": {"scope": "task"}})),
        task("admin", json!({"autoUser": {"scope": "pool", "elevationLevel": "admin"}})),
        task("render", json!({"userName": "render"})),
        task("ops", json!({"userName": "ops"})),
    ];
    let file = a.file("tasks.jsonl", &tasks.iter().map(|t| format!("{t}\n")).collect::<String>());
    a.ok(&["task", "create", "--job-id", "j", "--json-file", file.to_str().unwrap()]);
    a.start_worker("p", &[]);
    let wait = a.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", a.worker_logs());

    let uid = |t: &str| -> u32 { stdout_of(&a, t).lines().nth(1).unwrap_or_default().trim().parse().unwrap() };
    let (pool_uid, t1, t2) = (uid("default"), uid("task-1"), uid("task-2"));
    assert!(pool_uid >= 200_000 && t1 >= 200_000 && t2 >= 200_000, "{pool_uid} {t1} {t2}");
    assert!(t1 != t2 && t1 != pool_uid && t2 != pool_uid, "task scope gets a uid of its own: {pool_uid} {t1} {t2}");
    assert_eq!((uid("admin"), uid("render"), uid("ops")), (0, 4321, 0));
    for t in ["default", "task-1", "task-2", "render"] {
        let out = stdout_of(&a, t);
        assert!(!out.contains("read-worker-env"), "{t} read the worker's environment: {out}");
        assert!(!out.contains(SECRET), "{t} read account B's task: {out}");
        assert!(!out.contains("listed-b"), "{t} listed account B's directory: {out}");
        assert!(
            out.contains("prepared") && !out.contains("wrote-prep"),
            "{t} reads, never writes, the preparation: {out}"
        );
    }
    // Every command starts with no signal blocked, whoever started it (a spawner blocks SIGCHLD):
    // the shell's own mask, read before it starts anything.
    for t in ["default", "task-1", "task-2", "admin", "render", "ops"] {
        let out = stdout_of(&a, t);
        assert!(out.starts_with("SigBlk: 0000000000000000\n"), "{t} started with signals blocked: {out}");
    }
    // The admin (the worker's user, root here) reaches everything: the probe itself works.
    assert!(stdout_of(&a, "admin").contains("read-worker-env"));
}

/// A .tar.gz at `path` holding `bin/tool.sh` that prints `says`.
fn package(acct: &TestAccount, path: &std::path::Path, says: &str) {
    let src = acct.work_dir.join(format!("src-{says}"));
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool.sh"), format!("#!/bin/sh\necho {says}\n")).unwrap();
    let tar = std::process::Command::new("tar").arg("czf").arg(path).arg("-C").arg(&src).arg("bin").status().unwrap();
    assert!(tar.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_changed_in_storage_after_upload_is_refused() {
    let mut acct = TestAccount::new("poisonpkg").await;
    let file = acct.work_dir.join("tool.tar.gz");
    package(&acct, &file, "genuine");
    let upload = ["application", "package", "upload", "--application-id", "tool", "--version", "1.0"];
    let shown = acct.ok(&[&upload[..], &["--package-file", file.to_str().unwrap()]].concat()).json();
    assert_eq!(shown["sha256"].as_str().map(str::len), Some(64), "{shown}");
    // Someone with write access to the bucket replaces the stored package.
    let planted = acct.work_dir.join("planted.tar.gz");
    package(&acct, &planted, "planted");
    let key = format!("{}/applications/tool/1.0/tool.tar.gz", acct.name());
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&planted).await.unwrap();
    acct.s3().await.put_object().bucket(drover_tests::BUCKET).key(&key).body(body).send().await.unwrap();

    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let task = json!({"id": "t", "commandLine": "/bin/sh -c '$AZ_BATCH_APP_PACKAGE_tool/bin/tool.sh'",
                      "applicationPackageReferences": [{"applicationId": "tool"}]});
    let tasks = acct.file("task.json", &task.to_string());
    acct.ok(&["task", "create", "--job-id", "j", "--json-file", tasks.to_str().unwrap()]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 1, "{wait:?}\n{}", acct.worker_logs());
    let shown = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "t"]).json();
    let failure = &shown["executionInfo"]["failureInfo"];
    assert_eq!(failure["code"], "ApplicationPackageError", "{shown}");
    assert!(failure["message"].as_str().unwrap().contains("changed since it was uploaded"), "{shown}");
    assert!(!stdout_of(&acct, "t").contains("planted"));
}

/// The pids of the task spawners worker `worker` started.
fn spawners_of(worker: u32) -> Vec<u32> {
    let out =
        std::process::Command::new("pgrep").args(["-P", &worker.to_string(), "-f", "--", "--task-spawner"]).output();
    let out = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let mut pids: Vec<u32> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    pids.sort();
    pids
}

/// What a task prints of the process that started it: its pid, its uid, its command line.
const PARENT: &str = "echo $PPID; id -u; grep ^Uid: /proc/$PPID/status; tr \"\\0\" \" \" < /proc/$PPID/cmdline";

/// Tasks of a pool-scope user are started by a task spawner of that user's own; killed
/// mid-task, the spawner's running task is handed back and runs again, and a new spawner
/// starts later tasks. A task-scope user's task is started by the worker's root spawner.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_spawner_killed_mid_task_loses_no_task() {
    let mut acct = TestAccount::new("spawner").await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    // Written by tasks of two users.
    std::fs::write(&ledger, "").unwrap();
    std::fs::set_permissions(&ledger, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let task = |id: &str, then: &str| {
        let cmd = format!("/bin/sh -c 'echo $DROVER_TASK_ID >> {}; {PARENT}; {then}'", ledger.display());
        json!({"id": id, "commandLine": cmd})
    };
    let mut alone = task("alone", "true");
    alone["userIdentity"] = json!({"autoUser": {"scope": "task"}});
    acct.add_tasks("j", &[task("first", "true"), alone]);
    let worker = acct.start_worker("p", &[]);
    assert_eq!(acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]).code, 0, "{}", acct.worker_logs());
    let first = acct.task_file("j", "first", "stdout.txt");
    assert!(first.contains("--task-spawner"), "started by a spawner: {first}");
    let lines: Vec<&str> = first.lines().collect();
    let (spawner, uid): (u32, &str) = (lines[0].trim().parse().unwrap(), lines[1].trim());
    assert!(lines[2].split_whitespace().skip(1).all(|id| id == uid), "its spawner runs as its user {uid}: {first}");
    let alone = acct.task_file("j", "alone", "stdout.txt");
    assert!(alone.contains("--task-spawner") && alone.contains("Uid:\t0\t"), "started by the root spawner: {alone}");
    assert_eq!(spawners_of(worker).len(), 2, "a root spawner and one of the pool's user");

    acct.add_tasks("j", &[task("long", "sleep 3")]);
    drover_tests::eventually(std::time::Duration::from_secs(30), "long running", || async {
        std::fs::read_to_string(&ledger).is_ok_and(|l| l.contains("long"))
    })
    .await;
    acct.signal(spawner, "KILL");
    assert_eq!(acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]).code, 0, "{}", acct.worker_logs());
    let runs = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(runs.lines().filter(|l| *l == "long").count(), 2, "long ran again: {runs}");
    // Long's second run may have come before the worker knew its spawner was gone: started by
    // the worker itself or by the new spawner. The next task comes from a new spawner.
    acct.add_tasks("j", &[task("after", "true")]);
    assert_eq!(acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]).code, 0, "{}", acct.worker_logs());
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 4, "{counts}\n{}", acct.worker_logs());
    let after = acct.task_file("j", "after", "stdout.txt");
    assert!(
        after.contains("--task-spawner") && after.contains(&format!("Uid:\t{uid}\t")),
        "by a spawner of its user: {after}"
    );
    let new: u32 = after.lines().next().unwrap().trim().parse().unwrap();
    assert_ne!(new, spawner, "a new spawner");
    assert_eq!(
        acct.ok(&["task", "show", "--job-id", "j", "--task-id", "alone"]).json()["executionInfo"]["result"],
        "success"
    );
    let long = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "long"]).json();
    assert_eq!(long["executionInfo"]["result"], "success", "{long}");
}

/// A worker whose executable is replaced on disk while it runs (an upgrade) starts its task
/// spawners from the executable it runs, not from the file now at its path: a spawner started
/// after the replacement still starts its user's commands.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_spawner_comes_from_the_running_worker_after_its_file_is_replaced() {
    let mut acct = TestAccount::new("upgraded").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let task = |id: &str| json!({"id": id, "commandLine": format!("/bin/sh -c '{PARENT}'")});
    acct.add_tasks("j", &[task("first")]);
    // The worker runs from a copy of its executable, which the "upgrade" then replaces.
    let copy = acct.work_dir.join("drover-worker");
    let script = format!("cp \"$1\" {0} && shift && exec {0} \"$@\"", copy.display());
    let worker = acct.start_worker_in(&["/bin/sh", "-c", &script, "sh"], "p", "upgraded-node0", &[]);
    assert_eq!(acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]).code, 0, "{}", acct.worker_logs());
    let first = acct.task_file("j", "first", "stdout.txt");
    assert!(first.contains("--task-spawner"), "started by a spawner: {first}");
    let spawner: u32 = first.lines().next().unwrap().trim().parse().unwrap();
    let uid = first.lines().nth(1).unwrap().trim().to_string();
    let next = acct.work_dir.join("drover-worker.new");
    std::fs::write(&next, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&next, &copy).unwrap();
    acct.signal(spawner, "KILL");
    drover_tests::eventually(std::time::Duration::from_secs(30), "the spawner gone", || async {
        !spawners_of(worker).contains(&spawner)
    })
    .await;
    acct.add_tasks("j", &[task("after")]);
    assert_eq!(acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]).code, 0, "{}", acct.worker_logs());
    let after = acct.task_file("j", "after", "stdout.txt");
    assert!(
        after.contains("--task-spawner") && after.contains(&format!("Uid:\t{uid}\t")),
        "by a new spawner of its user, from the running worker's executable: {after}\n{}",
        acct.worker_logs()
    );
    assert!(after.contains(&copy.display().to_string()), "shown under the worker's path: {after}");
    let new: u32 = after.lines().next().unwrap().trim().parse().unwrap();
    assert_ne!(new, spawner, "a new spawner");
}

/// A command that cannot be started (a file without execute permission) fails its task alone:
/// the task spawner, with another command of it running, stays up and that command completes
/// where it runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_leaves_the_task_spawner_up() {
    let mut acct = TestAccount::new("noexec").await;
    acct.pool("p", 4);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let ledger = acct.work_dir.join("ledger.txt");
    let long = format!("/bin/sh -c 'echo long >> {}; sleep 8'", ledger.display());
    acct.add_tasks("j", &[json!({"id": "long", "commandLine": long})]);
    let worker = acct.start_worker("p", &[]);
    drover_tests::eventually(std::time::Duration::from_secs(30), "long running", || async {
        std::fs::read_to_string(&ledger).is_ok_and(|l| l.contains("long"))
    })
    .await;
    let spawners = spawners_of(worker);
    assert_eq!(spawners.len(), 2, "a root spawner and one of the pool's user");
    let bad: Vec<_> = (0..3).map(|i| json!({"id": format!("noexec{i}"), "commandLine": "/etc/passwd"})).collect();
    acct.add_tasks("j", &bad);
    assert_eq!(acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]).code, 1, "{}", acct.worker_logs());
    for i in 0..3 {
        let task = acct.ok(&["task", "show", "--job-id", "j", "--task-id", &format!("noexec{i}")]).json();
        assert_eq!(task["executionInfo"]["failureInfo"]["code"], "CommandStartError", "{task}");
    }
    let long = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "long"]).json();
    assert_eq!(long["executionInfo"]["result"], "success", "{long}\n{}", acct.worker_logs());
    assert_eq!(long["executionInfo"]["requeueCount"], 0, "{long}");
    assert_eq!(std::fs::read_to_string(&ledger).unwrap().lines().count(), 1, "long ran once");
    assert_eq!(spawners_of(worker), spawners, "the same spawners: {}", acct.worker_logs());
}

/// A task can stop the task spawner of its own user (it runs as that user): the next command of
/// that user waits for an answer no longer than 30 s, then the stopped spawner is killed, the
/// command starts all the same, and the stopper completes (its run handed back if its exit was
/// lost with the spawner).
#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_stops_its_users_spawner_holds_up_no_task_for_good() {
    let mut acct = TestAccount::new("stopper").await;
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let marker = acct.work_dir.join("stopped");
    let stop = format!("/bin/sh -c '[ -e {m} ] || {{ echo > {m}; kill -STOP $PPID; }}'", m = marker.display());
    acct.add_tasks("j", &[json!({"id": "stopper", "commandLine": stop})]);
    let worker = acct.start_worker("p", &[]);
    drover_tests::eventually(std::time::Duration::from_secs(30), "the spawner stopped", || async { marker.exists() })
        .await;
    acct.add_tasks("j", &[json!({"id": "next", "commandLine": format!("/bin/sh -c '{PARENT}'")})]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "120"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let next = acct.task_file("j", "next", "stdout.txt");
    assert!(next.contains("--task-spawner"), "started by a spawner: {next}");
    let stopper = acct.ok(&["task", "show", "--job-id", "j", "--task-id", "stopper"]).json();
    assert_eq!(stopper["executionInfo"]["result"], "success", "{stopper}");
    // Its exit may be answered before the stop takes hold, or be lost with the spawner and its
    // run handed back.
    assert!(stopper["executionInfo"]["requeueCount"].as_u64().is_some_and(|n| n <= 1), "{stopper}");
    assert!(acct.worker_logs().contains("did not answer"), "{}", acct.worker_logs());
    assert!(!spawners_of(worker).is_empty(), "the root spawner stays");
}
