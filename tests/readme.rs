//! README.md's "Using it" block, run as written: each command in order, in one shell, against
//! the real broker and Redis under the test's own account, and a private S3 server (the block
//! names its bucket, `s3://drover/...`, which other runs must not share). The block is read from
//! README.md, so the test fails when the README drifts from what works.

#![allow(clippy::unwrap_used)]

use drover_tests::{bin_dir, PrivateS3, TestAccount};
use std::path::Path;
use std::process::{Command, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The lines of the first ```sh block after the heading `## Using it`.
fn using_it_block(readme: &str) -> Vec<String> {
    let section = readme.split_once("\n## Using it\n").expect("README.md has a \"## Using it\" section").1;
    let block = section.split_once("```sh\n").expect("\"Using it\" has a ```sh block").1;
    let block = block.split_once("```").expect("the block is closed").0;
    block.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// The output of command `i` of the run: what it printed between its marker and the next.
fn output_of(stdout: &str, i: usize) -> String {
    let start = format!(">>> {i}\n");
    let from = stdout.split_once(&start).map_or("", |(_, rest)| rest);
    from.split_once("\n>>> ").map_or(from, |(out, _)| out).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_using_it_block_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let commands = using_it_block(&readme);
    let find = |what: &str| {
        commands.iter().position(|c| c.starts_with(what)).unwrap_or_else(|| panic!("no `{what}` in {commands:#?}"))
    };
    let (wait, counts, list) = (find("drover job wait"), find("drover job task-counts"), find("drover task list"));
    let dead = find("drover dead-letter list");

    let mut acct = TestAccount::new("readme").await;
    let s3 = PrivateS3::start(acct.work_dir.join("s3")).await;
    acct.config.s3_endpoint = Some(s3.endpoint());
    acct.remember_pool("books");
    // A directory like the repository's root: its scripts (env.sh and the sample data), and
    // room for what the block writes (target/nodes, results, count-river.out).
    let dir = acct.work_dir.join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(root().join("scripts"), dir.join("scripts")).unwrap();

    // Each command is preceded by a marker, so that its output can be told apart; the shell
    // stops at the first command that fails and names it.
    let mut script = String::from(
        "set -eE -o pipefail\ntrap 'echo \"README command failed (exit $?): $BASH_COMMAND\" >&2' ERR\n\
         trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n",
    );
    for (i, c) in commands.iter().enumerate() {
        script.push_str(&format!("echo '>>> {i}'\n{c}\n"));
    }
    script.push_str("wait\n");
    let mut cmd = Command::new("bash");
    acct.env(&mut cmd);
    let out = cmd
        .args(["-c", &script])
        .current_dir(&dir)
        .env_remove("DROVER_BUCKET")
        .env("DROVER_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the block failed:\n{stderr}\n--- stdout:\n{stdout}");

    let json = |i: usize| -> serde_json::Value {
        serde_json::from_str(&output_of(&stdout, i)).unwrap_or_else(|e| panic!("command {i}: not JSON ({e}): {stdout}"))
    };
    assert_eq!(json(wait)["taskCounts"]["succeeded"], 6, "{stdout}");
    assert_eq!(json(counts)["taskCounts"]["failed"], 0, "{stdout}");
    let table = output_of(&stdout, list);
    assert!(table.lines().next().unwrap_or("").contains("executionInfo.failureInfo.code"), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("count-")).count(), 6, "{table}");
    assert_eq!(json(dead), serde_json::json!([]), "{stdout}");
    let said = std::fs::read_to_string(dir.join("count-river.out")).unwrap();
    assert!(said.contains("wordcount: river.txt -> river.counts.txt"), "{said}");
    let mut results: Vec<String> = std::fs::read_dir(dir.join("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    results.sort();
    let expected: Vec<String> = ["clock", "garden", "lighthouse", "market", "river", "road"]
        .iter()
        .map(|n| format!("{n}.counts.txt"))
        .collect();
    assert_eq!(results, expected);
    let river = std::fs::read_to_string(dir.join("results/river.counts.txt")).unwrap();
    assert!(river.lines().next().is_some_and(|l| l.split(' ').count() == 2), "{river}");
}
