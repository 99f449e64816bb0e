//! A private S3 server: s3s-fs, the server scripts/services.sh installs, on a port and a data
//! directory of its own, for tests that stop storage or must not share its bucket names.

use crate::eventually;
use std::time::Duration;

/// A private S3 server (s3s-fs) that the test can stop and start again; killed when dropped.
pub struct PrivateS3 {
    port: u16,
    root: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateS3 {
    /// Starts a server keeping its buckets under `root`, on a port of this test process (one
    /// server per process) below the ephemeral range (which starts at 32768), so no client's
    /// socket takes it while it is stopped; the first free one from 21000 + pid % 4000.
    pub async fn start(root: std::path::PathBuf) -> Self {
        let first = 21000 + (std::process::id() % 4000) as u16;
        let port = (first..first + 200)
            .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            .expect("a free port for the private S3 server");
        let mut s3 = PrivateS3 { port, root, child: None };
        s3.resume().await;
        s3
    }

    /// Its URL, for DROVER_S3_ENDPOINT.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it again (same port, same data) after [`PrivateS3::stop`].
    pub async fn resume(&mut self) {
        let home = std::env::var("HOME").unwrap_or_default();
        let program = ["s3s-fs".to_string(), format!("{home}/.cargo/bin/s3s-fs")]
            .into_iter()
            .find(|p| std::process::Command::new(p).arg("--version").output().is_ok())
            .expect("s3s-fs is installed (scripts/services.sh installs it)");
        std::fs::create_dir_all(&self.root).unwrap();
        let child = std::process::Command::new(program)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--access-key",
                "drover",
                "--secret-key",
                "drover-secret",
            ])
            .arg(&self.root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        eventually(Duration::from_secs(30), "private S3 listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
    }

    /// Kills it (the port stops answering).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.stop();
    }
}
