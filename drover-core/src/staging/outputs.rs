//! Output files: which files of a task match an `outputFiles` pattern, and where each goes.

use crate::model::task::OutputFile;
use crate::model::Container;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A file to upload (relative to the task directory) and where it goes (an S3 object or a blob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMatch {
    pub file: PathBuf,
    pub dest: Container,
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The files `output` matches in the task directory `task_dir` (patterns are relative to its
/// working directory `wd`; one starting with `../` to `task_dir`, as in Azure), with their
/// destination keys. Without wildcards, `path` names the object; with them, it is the prefix
/// for each file's path relative to the pattern's fixed leading directories. The files are
/// only named here: [`super::Staging::upload`] opens each without leaving `task_dir`.
pub fn matching_files(output: &OutputFile, task_dir: &Path) -> Result<Vec<OutputMatch>> {
    let (root, pattern) = match output.file_pattern.strip_prefix("../") {
        Some(rest) => (PathBuf::new(), rest),
        None => (PathBuf::from("wd"), output.file_pattern.as_str()),
    };
    let container = Container::parse(&output.destination.container.container_url).map_err(Error::invalid)?;
    let path = output.destination.container.path.as_deref().unwrap_or("").trim_matches('/');
    let join = |rel: &str| {
        let parts: Vec<&str> =
            [container.key().trim_matches('/'), path, rel].into_iter().filter(|p| !p.is_empty()).collect();
        container.at(parts.join("/"))
    };
    if !has_wildcard(pattern) {
        let file = root.join(pattern);
        // Present, even as a link: the upload refuses a link that leads out.
        if std::fs::symlink_metadata(task_dir.join(&file)).is_err() {
            return Ok(vec![]);
        }
        let name = Path::new(pattern).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let key = if path.is_empty() { join(&name) } else { join("") };
        return Ok(vec![OutputMatch { file, dest: key }]);
    }
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::invalid(format!("filePattern {pattern:?}: {e}")))?
        .compile_matcher();
    // The fixed leading directories of the pattern are not repeated in the destination.
    let fixed: Vec<&str> = pattern.split('/').take_while(|c| !has_wildcard(c)).collect();
    let fixed = if fixed.len() == pattern.split('/').count() { fixed.len() - 1 } else { fixed.len() };
    let mut out = Vec::new();
    for rel in walk(&task_dir.join(&root))? {
        let rel_str = rel.to_string_lossy();
        if glob.is_match(rel_str.as_ref()) {
            let dest_rel: Vec<&str> = rel_str.split('/').skip(fixed).collect();
            out.push(OutputMatch { file: root.join(&rel), dest: join(&dest_rel.join("/")) });
        }
    }
    Ok(out)
}

/// Every regular file under `root`, as paths relative to it (symlinks are not followed).
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    if std::fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Storage(format!("{}: a link, not the task's directory", root.display())));
    }
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(root.join(&dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("read {}", root.join(&dir).display()), e)),
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let rel = dir.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(rel);
            } else if kind.is_file() && !rel.to_string_lossy().ends_with(".drover-part") {
                files.push(rel);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::{OutputFileContainer, OutputFileDestination, OutputFileUploadOptions};

    fn output(pattern: &str, path: Option<&str>) -> OutputFile {
        OutputFile {
            file_pattern: pattern.into(),
            destination: OutputFileDestination {
                container: OutputFileContainer {
                    container_url: "s3://bkt/out".into(),
                    path: path.map(Into::into),
                    upload_headers: None,
                },
            },
            upload_options: OutputFileUploadOptions::default(),
        }
    }

    #[test]
    fn patterns_map_to_keys() {
        let dir = std::env::temp_dir().join(format!("drover-outputs-{}", std::process::id()));
        for f in ["wd/a.txt", "wd/b.log", "wd/sub/c.txt", "wd/sub/deep/d.txt", "stdout.txt", "stderr.txt"] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let keys = |o: OutputFile| -> Vec<String> {
            matching_files(&o, &dir).unwrap().into_iter().map(|m| m.dest.key().to_string()).collect()
        };
        assert_eq!(keys(output("*.txt", None)), vec!["out/a.txt"]);
        assert_eq!(keys(output("**/*.txt", Some("r"))), vec!["out/r/a.txt", "out/r/sub/c.txt", "out/r/sub/deep/d.txt"]);
        assert_eq!(keys(output("sub/**/*.txt", None)), vec!["out/c.txt", "out/deep/d.txt"]);
        assert_eq!(keys(output("a.txt", Some("renamed.txt"))), vec!["out/renamed.txt"]);
        assert_eq!(keys(output("sub/c.txt", None)), vec!["out/c.txt"]);
        assert_eq!(keys(output("../std*.txt", Some("logs"))), vec!["out/logs/stderr.txt", "out/logs/stdout.txt"]);
        assert!(keys(output("missing.txt", None)).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
