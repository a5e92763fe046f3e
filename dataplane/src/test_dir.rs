//! A fresh directory under the system's temporary one for a unit test, removed when dropped.

use std::fs;
use std::path::PathBuf;

pub(crate) struct TestDir(pub PathBuf);

impl TestDir {
    /// `burghers-<what>-<pid>`, emptied first.
    pub fn new(what: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!("burghers-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create the test directory");
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
