//! drover-api driven by Azure's own clients: the official Python SDKs (installed by
//! `scripts/services.sh --with-batch-sdks`) run Azure's quickstart against it.

#![allow(clippy::unwrap_used)]

use drover_tests::TestAccount;
use std::path::Path;
use std::process::Command;

/// The account key the tests sign with (base64, as Azure's).
const KEY: &str = "ZHJvdmVyLWFwaS10ZXN0LWtleS0wMTIzNDU2Nzg5YWJjZGVm";

fn sdk_python(version: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join(format!("target/tools/batch-sdk-{version}/bin/python"));
    assert!(python.exists(), "{} is missing: run scripts/services.sh --with-batch-sdks", python.display());
    python
}

/// Runs `tests/api/quickstart.py` with the SDK `version` against a drover-api of its own
/// (over https with a CA the test makes, when `tls`).
async fn quickstart(version: &str, tls: bool) {
    let mut acct = TestAccount::new(&format!("apiqs{}", version.replace('.', ""))).await;
    acct.remember_pool("qs-pool");
    // Nodes come as Azure's do: the autoscaler starts one for targetDedicatedNodes.
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen]);
    let certs = acct.work_dir.join("certs");
    let (scheme, port) = if tls {
        drover_tests::make_certificates(&certs);
        let (cert, key) = (certs.join("server.pem"), certs.join("server.key"));
        let flags = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
        ("https", acct.start_api_with(KEY, &flags).await)
    } else {
        ("http", acct.start_api(KEY).await)
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("api/quickstart.py");
    let run = Command::new(sdk_python(version))
        .arg(&script)
        .args([&format!("{scheme}://127.0.0.1:{port}"), acct.name(), KEY])
        .env("REQUESTS_CA_BUNDLE", certs.join("ca.pem"))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success() && said.contains("quickstart passed"), "{said}\n{}", acct.worker_logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_15_runs_azures_quickstart() {
    quickstart("15.1.0", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_14_runs_azures_quickstart_over_https() {
    quickstart("14.2.0", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readmes_sdk_example_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme.split("## Use the Azure Batch SDKs and az batch").nth(1).unwrap();
    let example = section.split("```python\n").nth(1).and_then(|s| s.split("```").next()).unwrap();
    let mut acct = TestAccount::new("apireadme").await;
    acct.remember_pool("sdk");
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.start_monitor(&["--listen", &listen]);
    let port = acct.start_api(KEY).await;
    let file = acct.file("example.py", example);
    let run = Command::new(sdk_python("15.1.0"))
        .arg(&file)
        .env("DROVER_API_URL", format!("http://127.0.0.1:{port}"))
        .env("DROVER_ACCOUNT", acct.name())
        .env("DROVER_API_KEY", KEY)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}\n{}", acct.worker_logs());
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello 3\n");
}

/// A job manager that adds a task with its token (azure-batch 14.2.0, as Azure's samples do).
const MANAGER: &str = r#"
import os
import azure.batch.models as m
from azure.batch import BatchServiceClient
from msrest.authentication import BasicTokenAuthentication

token = BasicTokenAuthentication({"access_token": os.environ["AZ_BATCH_AUTHENTICATION_TOKEN"]})
client = BatchServiceClient(token, batch_url=os.environ["AZ_BATCH_ACCOUNT_URL"])
job = os.environ["AZ_BATCH_JOB_ID"]
client.task.add(job, m.TaskAddParameter(id="added", command_line="/bin/echo added by the manager"))
print("tasks:", sorted(t.id for t in client.task.list(job)))
try:
    client.job.get("other")
    print("another job reached")
except m.BatchErrorException as e:
    print("another job refused:", e.response.status_code, e.error.code)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_job_manager_adds_tasks_with_its_token_for_its_job_only() {
    let mut acct = TestAccount::new("apitoken").await;
    let keys = "k 0123456789abcdef0123456789abcdef\n";
    acct.sign_with(keys);
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "other", "--pool-id", "p"]);
    let port = acct.start_api(KEY).await;
    acct.start_worker("p", &["--api-url", &format!("http://127.0.0.1:{port}")]);
    let script = acct.file("manager.py", MANAGER);
    let command = format!("{} {}", sdk_python("14.2.0").display(), script.display());
    let job = serde_json::json!({"id": "j", "poolInfo": {"poolId": "p"}, "onAllTasksComplete": "terminatejob",
        "jobManagerTask": {"id": "manager", "commandLine": command, "killJobOnCompletion": false,
                           "userIdentity": {"autoUser": {"elevationLevel": "admin"}},
                           "authenticationTokenSettings": {"access": ["job"]}}});
    let file = acct.file("job.json", &job.to_string());
    acct.ok(&["job", "create", "--json-file", file.to_str().unwrap()]);
    // A token for the job, as the worker made it (the test has the account's keys).
    let token = drover_core::signing::Signer::parse(keys, acct.name()).unwrap().job_token("j");
    let get = |path: &str| {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{path}?api-version=2024-02-01.19.0"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get("/jobs/j").await.unwrap().status(), 200, "the token reaches its job while it is active");
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let said = acct.task_file("j", "manager", "stdout.txt");
    assert!(said.contains("tasks: ['added', 'manager']"), "{said}\n{}", acct.task_file("j", "manager", "stderr.txt"));
    assert!(said.contains("another job refused: 403 AuthorizationFailure"), "{said}");
    assert_eq!(acct.task_file("j", "added", "stdout.txt"), "added by the manager\n");
    // The job has ended: so has its token.
    assert_eq!(get("/jobs/j").await.unwrap().status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_api_serves_several_accounts_each_with_its_own_key_and_records() {
    let mut one = TestAccount::new("apione").await;
    let two = TestAccount::new("apitwo").await;
    let other_key = "YW5vdGhlci1hY2NvdW50LWtleS0wMTIzNDU2Nzg5YWJj";
    let file = one.file("accounts", &format!("# account key\n{} {KEY}\n{} {other_key}\n", one.name(), two.name()));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = one.start_api_with("", &["--accounts-file", file.to_str().unwrap()]).await;
    one.remember_pool("only-one");
    let script = format!(
        r#"
import sys
from azure.batch import BatchClient, models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError
url = "http://127.0.0.1:{port}"
one = BatchClient(url, AzureNamedKeyCredential("{a}", "{KEY}"))
two = BatchClient(url, AzureNamedKeyCredential("{b}", "{other_key}"))
one.create_pool(models.BatchPoolCreateOptions(id="only-one", vm_size="x"))
print("one:", [p.id for p in one.list_pools()], "two:", [p.id for p in two.list_pools()])
try:
    BatchClient(url, AzureNamedKeyCredential("{b}", "{KEY}")).list_pools().next()
except HttpResponseError as e:
    print("crossed key:", e.status_code)
"#,
        a = one.name(),
        b = two.name()
    );
    let file = one.file("accounts.py", &script);
    let run = Command::new(sdk_python("15.1.0")).arg(&file).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(said.contains("one: ['only-one'] two: []"), "{said}\n{}", one.worker_logs());
    assert!(said.contains("crossed key: 403"), "{said}");
}
