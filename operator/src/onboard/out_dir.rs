//! The directory, usually in a GitOps repository, that receives one manifest per ente
//! (file I/O, no cluster).
//!
//! All or nothing: [`plan`] looks at every file before [`write()`] touches any, and `write`
//! puts each manifest in a temporary file next to its target before renaming them all
//! into place, so a refusal or a failed write leaves the directory as it was (only a
//! failed rename, between files of one directory, could leave some manifests new and
//! others old; never a half-written one). A file that
//! already holds the same bytes is left untouched; one with other content is refused
//! unless forced, because it may carry edits made in git since it was generated.
//! Nothing is ever deleted: an ente missing from a CSV is no reason to remove its tenant
//! (with Argo CD's prune, deleting the file would delete the tenant).

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Extension of the manifests; also how other manifests in the directory are counted.
const EXTENSION: &str = "yaml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{} already exist{} with other content, nothing was written:\n{}\n\
         they may hold edits made since they were generated: check them, then run again \
         with --force to overwrite them (`git diff` shows what it changed)",
        count(.0.len(), "file"),
        if .0.len() == 1 { "s" } else { "" },
        .0.iter().map(|path| format!("  {}", path.display())).collect::<Vec<_>>().join("\n")
    )]
    Conflicts(Vec<PathBuf>),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("failed to read {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("failed to write {}", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
}

/// What [`write()`] does to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    /// Overwrite different content (only with `--force`).
    Replace,
    /// The file already holds exactly these bytes.
    Unchanged,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub content: String,
    pub action: Action,
}

/// Every file to write into `dir`, each with what happens to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub dir: PathBuf,
    pub files: Vec<PlannedFile>,
}

/// Compares each `(file name, content)` with what `dir` holds. Refuses, listing every
/// one of them, files that exist with other content, unless `force`.
pub fn plan(dir: &Path, manifests: Vec<(String, String)>, force: bool) -> Result<Plan, Error> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    let mut conflicts = Vec::new();
    for (file_name, content) in manifests {
        let path = dir.join(file_name);
        let action = match std::fs::read(&path) {
            Ok(existing) if existing == content.as_bytes() => Action::Unchanged,
            Ok(_) if force => Action::Replace,
            Ok(_) => {
                conflicts.push(path.clone());
                Action::Replace
            }
            Err(error) if error.kind() == ErrorKind::NotFound => Action::Create,
            Err(error) => return Err(Error::Read(path, error)),
        };
        files.push(PlannedFile {
            path,
            content,
            action,
        });
    }
    if !conflicts.is_empty() {
        return Err(Error::Conflicts(conflicts));
    }
    Ok(Plan {
        dir: dir.to_path_buf(),
        files,
    })
}

/// What [`write()`] did, for the summary on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub replaced: usize,
    pub unchanged: usize,
    /// Manifests in the directory that the plan did not name, left as they were.
    pub others: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} replaced, {} unchanged",
            self.created, self.replaced, self.unchanged
        )?;
        if self.others > 0 {
            write!(
                f,
                "; {} already there and not in this run, left as {}",
                count(self.others, "other manifest"),
                if self.others == 1 {
                    "it was"
                } else {
                    "they were"
                }
            )?;
        }
        Ok(())
    }
}

fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Writes the plan: every new or replaced file to a temporary file first, then renames
/// them all into place. Unchanged files are not touched (their modification time stays).
pub fn write(plan: &Plan) -> Result<Summary, Error> {
    std::fs::create_dir_all(&plan.dir).map_err(|error| Error::Write(plan.dir.clone(), error))?;
    let to_write: Vec<&PlannedFile> = plan
        .files
        .iter()
        .filter(|file| file.action != Action::Unchanged)
        .collect();
    let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
    for file in &to_write {
        let temporary = temporary_path(&file.path);
        if let Err(error) = std::fs::write(&temporary, &file.content) {
            remove_all(staged.iter().map(|(temporary, _)| temporary.as_path()));
            let _ = std::fs::remove_file(&temporary);
            return Err(Error::Write(temporary, error));
        }
        staged.push((temporary, &file.path));
    }
    for (index, (temporary, path)) in staged.iter().enumerate() {
        if let Err(error) = std::fs::rename(temporary, path) {
            remove_all(
                staged[index..]
                    .iter()
                    .map(|(temporary, _)| temporary.as_path()),
            );
            return Err(Error::Write(path.to_path_buf(), error));
        }
    }
    let planned = |path: &Path| plan.files.iter().any(|file| file.path == path);
    let others = std::fs::read_dir(&plan.dir)
        .map_err(|error| Error::Read(plan.dir.clone(), error))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == EXTENSION) && !planned(path))
        .count();
    let with = |action| plan.files.iter().filter(|f| f.action == action).count();
    Ok(Summary {
        created: with(Action::Create),
        replaced: with(Action::Replace),
        unchanged: with(Action::Unchanged),
        others,
    })
}

/// `dir/.<name>.yaml.tmp`: hidden, and in the same directory, so the rename is atomic.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn remove_all<'a>(paths: impl Iterator<Item = &'a Path>) {
    for path in paths {
        // Best effort: the error being reported is the one that matters.
        let _ = std::fs::remove_file(path);
    }
}
