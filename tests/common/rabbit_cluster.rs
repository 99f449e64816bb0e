//! A RabbitMQ cluster of the test's own: three nodes beside the system broker (their own node
//! names, ports and data directories under /tmp, run as the `rabbitmq` user with the system's
//! Erlang cookie, no plugins). The test can kill a node; every node is killed and its data
//! removed when the fixture is dropped, even when the test fails.

use super::free_port;
use std::path::PathBuf;
use std::process::Command;

pub struct RabbitCluster {
    dir: PathBuf,
    /// (node name, AMQP port) of each node.
    nodes: Vec<(String, u16)>,
}

fn ctl(node: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("rabbitmqctl").args(["-n", node]).args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("rabbitmqctl -n {node} {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl RabbitCluster {
    /// Starts three nodes and joins the second and third to the first (about 15 s).
    pub fn start() -> RabbitCluster {
        let tag = std::process::id();
        let dir = PathBuf::from(format!("/tmp/drover-rabbit-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = RabbitCluster {
            nodes: (1..=3).map(|i| (format!("drover-t{tag}-{i}@localhost"), free_port())).collect(),
            dir,
        };
        for (name, port) in &cluster.nodes {
            let d = cluster.node_dir(name);
            std::fs::create_dir_all(&d).unwrap();
            assert!(Command::new("chown").args(["-R", "rabbitmq"]).arg(&cluster.dir).status().unwrap().success());
            let status = Command::new("runuser")
                .args(["-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq"])
                .arg(format!("RABBITMQ_NODENAME={name}"))
                .arg(format!("RABBITMQ_NODE_PORT={port}"))
                .arg(format!("RABBITMQ_DIST_PORT={}", free_port()))
                .arg(format!("RABBITMQ_MNESIA_BASE={}/mnesia", d.display()))
                .arg(format!("RABBITMQ_LOG_BASE={}/log", d.display()))
                .arg(format!("RABBITMQ_PID_FILE={}/pid", d.display()))
                .arg(format!("RABBITMQ_ENABLED_PLUGINS_FILE={}/plugins", d.display()))
                .arg(format!("RABBITMQ_CONFIG_FILE={}/none", d.display()))
                .args(["rabbitmq-server", "-detached"])
                .status()
                .unwrap();
            assert!(status.success(), "starting {name}");
        }
        // await_startup fails at once until the node has registered with epmd: poll until then.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        for (name, _) in &cluster.nodes {
            while let Err(e) = ctl(name, &["await_startup", "--timeout", "90"]) {
                assert!(std::time::Instant::now() < deadline, "{e}");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
        let first = cluster.nodes[0].0.clone();
        for (name, _) in &cluster.nodes[1..] {
            ctl(name, &["stop_app"]).unwrap();
            ctl(name, &["join_cluster", &first]).unwrap();
            ctl(name, &["start_app"]).unwrap();
        }
        cluster
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name.split('@').next().unwrap_or(name))
    }

    /// The AMQP URLs of the nodes, starting with node `first` (0-based), then the others in turn.
    pub fn urls(&self, first: usize) -> Vec<String> {
        (0..self.nodes.len())
            .map(|k| self.nodes[(first + k) % self.nodes.len()].1)
            .map(|port| format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
            .collect()
    }

    /// The index of the node that leads quorum queue `queue`.
    pub fn leader_of(&self, queue: &str) -> usize {
        let list = ctl(&self.nodes[0].0, &["list_queues", "name", "leader", "--quiet"]).unwrap();
        let leader = list
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(name, _)| *name == queue)
            .map(|(_, leader)| leader.trim().to_string())
            .unwrap_or_else(|| panic!("queue {queue} not found: {list}"));
        self.nodes.iter().position(|(name, _)| *name == leader).unwrap()
    }

    /// Kills node `i` (SIGKILL of its Erlang VM).
    pub fn kill(&self, i: usize) {
        let pid = std::fs::read_to_string(self.node_dir(&self.nodes[i].0).join("pid")).unwrap_or_default();
        if !pid.trim().is_empty() {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).stderr(std::process::Stdio::null()).status();
        }
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // A node still starting when the test failed has no pid file yet: find it by the node
        // name in its environment (it is not on the command line).
        let names: Vec<String> = self.nodes.iter().map(|(name, _)| format!("RABBITMQ_NODENAME={name}")).collect();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let environ = String::from_utf8_lossy(&environ);
            if names.iter().any(|n| environ.split('\0').any(|v| v == n)) {
                let pid = entry.file_name().to_string_lossy().into_owned();
                let _ = Command::new("kill").args(["-KILL", &pid]).stderr(std::process::Stdio::null()).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
