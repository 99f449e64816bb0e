//! TLS on the links, trusting a certificate authority the test makes: Redis over `rediss://` and
//! `rediss+sentinel://`, and a least-privilege deployment with every link on TLS.

#![allow(clippy::unwrap_used)]

use drover_tests::{make_certificates, TestAccount};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A Redis server of the test's own, TLS only; stopped when dropped.
struct TlsRedis(Child);

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tls_redis(dir: &Path, port: u16) -> TlsRedis {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem"])
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    TlsRedis(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workflow_runs_with_redis_over_tls_directly_and_behind_a_sentinel() {
    let mut acct = TestAccount::new("tlsredis").await;
    let dir = acct.work_dir.join("tls");
    make_certificates(&dir);
    let port = drover_tests::free_port();
    let _redis = start_tls_redis(&dir, port);
    drover_tests::eventually(std::time::Duration::from_secs(10), "the TLS Redis listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    acct.config.redis_url = format!("rediss://127.0.0.1:{port}/0");

    // Without the CA the server's certificate is not trusted, and nothing is written.
    let untrusted = acct.drover(&["pool", "create", "--pool-id", "p", "--task-slots-per-node", "2"]);
    assert!(untrusted.code == 1 && untrusted.stderr.to_lowercase().contains("certificate"), "{untrusted:?}");

    acct.config.ca_file = Some(dir.join("ca.pem"));
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let tasks: Vec<serde_json::Value> =
        (0..5).map(|n| serde_json::json!({"id": format!("t{n}"), "commandLine": "/bin/true"})).collect();
    acct.add_tasks("j", &tasks);
    acct.start_worker("p", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 5, "{counts}");

    // The same master found through a sentinel that speaks TLS only: rediss+sentinel://.
    let sentinel_port = drover_tests::free_port();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ntls-cert-file server.pem\ntls-key-file server.key\n\
             tls-ca-cert-file ca.pem\ntls-auth-clients no\ntls-replication yes\nsentinel monitor drover 127.0.0.1 {port} 1\n"
        ),
    )
    .unwrap();
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .current_dir(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _sentinel = TlsRedis(child);
    drover_tests::eventually(std::time::Duration::from_secs(10), "the TLS sentinel listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", sentinel_port)).await.is_ok()
    })
    .await;
    acct.config.redis_url = format!("rediss+sentinel://127.0.0.1:{sentinel_port}/drover/0");
    acct.config.redis_wait_replicas = Some(0); // a master without replicas
    acct.pool("q", 2);
    acct.ok(&["job", "create", "--job-id", "k", "--pool-id", "q"]);
    acct.add_tasks("k", &tasks);
    acct.start_worker("q", &[]);
    let wait = acct.drover(&["job", "wait", "--job-id", "k", "--timeout", "60"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let counts = acct.ok(&["job", "task-counts", "--job-id", "k"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 5, "{counts}");
}

/// A TLS front (socat) for a plain service at `target`: clients reach 127.0.0.1:`port` over TLS
/// only, with the certificate the test CA signed; stopped when dropped.
struct TlsFront(Child);

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn tls_front(dir: &Path, target: &str) -> (TlsFront, u16) {
    let port = drover_tests::free_port();
    let child = Command::new("socat")
        .arg("-lf")
        .arg(format!("socat-{port}.log"))
        .arg(format!("OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,verify=0"))
        .arg(format!("TCP:{target}"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    drover_tests::eventually(std::time::Duration::from_secs(10), "the TLS front listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    (TlsFront(child), port)
}

/// A vhost of the test's own with a broker user per role (the rights broker-config/README.md
/// gives each); the vhost, with everything in it, and the users are deleted when dropped.
struct Vhost {
    name: String,
    users: Vec<String>,
}

impl Vhost {
    fn new(name: &str) -> Self {
        drover_tests::rabbitmqctl(&["add_vhost", name]);
        Vhost { name: name.into(), users: vec![] }
    }

    fn user(&mut self, name: &str, tag: Option<&str>, rights: [&str; 3]) {
        let _ = Command::new("rabbitmqctl").args(["delete_user", name]).output();
        drover_tests::rabbitmqctl(&["add_user", name, "test-pw"]);
        self.users.push(name.into());
        if let Some(tag) = tag {
            drover_tests::rabbitmqctl(&["set_user_tags", name, tag]);
        }
        drover_tests::rabbitmqctl(&["set_permissions", "-p", &self.name, name, rights[0], rights[1], rights[2]]);
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = Command::new("rabbitmqctl").args(["delete_user", user]).output();
        }
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.name]).output();
    }
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_ascii_alphanumeric() { vec![c] } else { vec!['\\', c] }).collect()
}

/// deploy/redis/users.acl for account `account` (passwords `test-pw`), with the default user off.
fn acl_file(dir: &Path, account: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let shipped = std::fs::read_to_string(root.join("deploy/redis/users.acl")).unwrap();
    let mut acl: String = shipped
        .lines()
        .filter(|l| l.starts_with("user drover-default-"))
        .map(|l| l.replace("default", account).replace(">CHANGE-ME", ">test-pw") + "\n")
        .collect();
    assert_eq!(acl.lines().count(), 3, "a user per role in deploy/redis/users.acl");
    acl.push_str("user default off\n");
    let path = dir.join("users.acl");
    std::fs::write(&path, acl).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_least_privilege_deployment_with_tls_on_every_link_runs_the_workflow() {
    let mut acct = TestAccount::new("deploy").await;
    let a = acct.name().to_string();
    let dir = acct.work_dir.join("tls");
    make_certificates(&dir);
    let ca = dir.join("ca.pem");

    // Redis: TLS only, the shipped ACL users of this account, no default user.
    let redis_port = drover_tests::free_port();
    let acl = acl_file(&dir, &a);
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem"])
        .args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"])
        .arg("--aclfile")
        .arg(&acl)
        .arg("--dir")
        .arg(&dir)
        .current_dir(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _redis = TlsRedis(child);
    let redis = |role: &str| format!("rediss://drover-{a}-{role}:test-pw@127.0.0.1:{redis_port}/0");

    // The broker: a vhost of its own, a user per role, reached through TLS fronts.
    let broker = drover_core::queue::parse_url(&acct.config.amqp_url[0], 0).unwrap();
    let amqp_target = format!("{}:{}", broker.authority.host, broker.authority.port);
    let (_amqps, amqps_port) = tls_front(&dir, &amqp_target).await;
    let (_api, api_port) = tls_front(&dir, "127.0.0.1:15672").await;
    let mut vhost = Vhost::new(&format!("drover-{a}"));
    let e = regex_escape(&a);
    let own = format!("^drover\\.{e}\\.");
    vhost.user(&format!("{a}-operator"), None, [&own, &own, &own]);
    vhost.user(
        &format!("{a}-worker"),
        None,
        [
            "^$",
            &format!("^drover\\.{e}\\.(tasks|dead)$"),
            &format!("^drover\\.{e}\\.(pool\\.p(\\.high|\\.low)?|tasks|dead)$"),
        ],
    );
    vhost.user(&format!("{a}-monitor"), Some("monitoring"), ["^$", "^$", "^$"]);
    let amqp = |role: &str| vec![format!("amqps://{a}-{role}:test-pw@127.0.0.1:{amqps_port}/drover-{a}")];

    // S3 through a TLS front too.
    let s3 = acct.config.s3_endpoint.clone().unwrap();
    let s3_target = s3.trim_start_matches("http://").trim_end_matches('/').to_string();
    let (_s3s, s3_port) = tls_front(&dir, &s3_target).await;
    let plain = acct.config.clone();
    let s3 = acct.s3().await;
    let input = format!("{a}/in/data.txt");
    s3.put_object()
        .bucket(drover_tests::BUCKET)
        .key(&input)
        .body(b"staged over https\n".to_vec().into())
        .send()
        .await
        .unwrap();
    acct.config.s3_endpoint = Some(format!("https://127.0.0.1:{s3_port}"));

    // SSL_CERT_FILE is honoured as other tools honour it: the operator reaches Redis and the broker.
    acct.config.redis_url = redis("submitter");
    acct.config.amqp_url = amqp("operator");
    let mut cmd = Command::new(drover_tests::bin_dir().join("drover"));
    acct.env(&mut cmd);
    let listed = cmd.env("SSL_CERT_FILE", &ca).args(["-o", "json", "pool", "list"]).output().unwrap();
    assert!(listed.status.success(), "{listed:?}");

    acct.config.ca_file = Some(ca.clone());
    acct.pool("p", 2);
    acct.ok(&["job", "create", "--job-id", "j", "--pool-id", "p"]);
    let tasks: Vec<serde_json::Value> = (0..4)
        .map(|n| {
            serde_json::json!({
                "id": format!("t{n}"),
                "commandLine": "/bin/sh -c 'cat data.txt > out.txt'",
                "resourceFiles": [{"storageContainerUrl": acct.s3_url("in"), "blobPrefix": "data"}],
                "outputFiles": [{"filePattern": "out.txt",
                                 "destination": {"container": {"containerUrl": acct.s3_url(&format!("out/t{n}"))}},
                                 "uploadOptions": {"uploadCondition": "taskSuccess"}}]
            })
        })
        .collect();
    acct.add_tasks("j", &tasks);

    acct.config.redis_url = redis("worker");
    acct.config.amqp_url = amqp("worker");
    acct.start_worker("p", &[]);

    let auth = dir.join("metrics.auth");
    std::fs::write(&auth, "prometheus:scrape-secret\n").unwrap();
    std::fs::set_permissions(&auth, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let listen = format!("127.0.0.1:{}", drover_tests::free_port());
    acct.config.redis_url = redis("monitor");
    acct.config.amqp_url = amqp("monitor");
    let api = format!("https://{a}-monitor:test-pw@127.0.0.1:{api_port}/");
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    acct.start_monitor(&[
        "--listen",
        &listen,
        "--rabbitmq-api",
        &api,
        "--metrics-auth-file",
        auth.to_str().unwrap(),
        "--metrics-tls-cert",
        cert.to_str().unwrap(),
        "--metrics-tls-key",
        key.to_str().unwrap(),
    ]);

    acct.config.redis_url = redis("submitter");
    acct.config.amqp_url = amqp("operator");
    let wait = acct.drover(&["job", "wait", "--job-id", "j", "--timeout", "90"]);
    assert_eq!(wait.code, 0, "{wait:?}\n{}", acct.worker_logs());
    let counts = acct.ok(&["job", "task-counts", "--job-id", "j"]).json();
    assert_eq!(counts["taskCounts"]["succeeded"], 4, "{counts}\n{}", acct.worker_logs());

    // /metrics over https with a password, its queue figures read from the management API.
    let pem = std::fs::read(&ca).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://{listen}/metrics");
    let scraped = std::sync::Mutex::new(String::new());
    drover_tests::eventually(std::time::Duration::from_secs(20), "metrics over https", || async {
        let request = http.get(&url).basic_auth("prometheus", Some("scrape-secret")).send();
        let body = match request.await {
            Ok(reply) => reply.text().await.unwrap_or_default(),
            Err(_) => return false,
        };
        *scraped.lock().unwrap() = body;
        scraped.lock().unwrap().contains("drover_queue_messages_unacked")
    })
    .await;
    let scraped = scraped.into_inner().unwrap();
    assert!(scraped.contains(r#"drover_tasks_completed_total{pool="p",result="success",code=""} 4"#), "{scraped}");
    assert!(reqwest::get(format!("http://{listen}/metrics")).await.is_err(), "plain http is not served");

    // The outputs reached storage over https; the account's plain links clean up.
    acct.config = plain;
    for n in 0..4 {
        let key = format!("{a}/out/t{n}/out.txt");
        let object = s3.get_object().bucket(drover_tests::BUCKET).key(&key).send().await.unwrap();
        let body = object.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], b"staged over https\n", "{key}");
    }
}
