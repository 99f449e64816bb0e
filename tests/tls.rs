//! TLS on the links: Redis over `rediss://`, trusting a certificate authority the test makes.

#![allow(clippy::unwrap_used)]

use drover_tests::TestAccount;
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

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and a certificate it signed for 127.0.0.1 (`server.pem`, `server.key`).
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=drover test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
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
async fn the_workflow_runs_with_redis_over_tls() {
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
}
