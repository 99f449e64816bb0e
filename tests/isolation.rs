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
async fn a_task_ends_with_what_it_left_running_in_the_background() {
    let mut acct = TestAccount::new("background").await;
    acct.pool("p", 1);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let pid_file = acct.work_dir.join("background.pid");
    let cmd = format!("/bin/sh -c 'sleep 300 & echo $! > {}'", pid_file.display());
    acct.ok(&["task", "create", "--job-id", "j", "--task-id", "t", "--command-line", &cmd]);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    drover_tests::eventually(std::time::Duration::from_secs(10), "the background sleep is gone", || async {
        !runs(pid)
    })
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
