//! The control socket: a Unix stream socket a hosted node listens on. One request per
//! connection; each connection gets its own short-lived thread, with read and write timeouts,
//! so a stuck client cannot block the others. Stopping wakes the accept loop with a connection
//! of its own, joins every thread and removes the socket file.

use super::handler::Handler;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest request line accepted.
const MAX_REQUEST: u64 = 4096;
/// The most unread input swallowed after a reply.
const MAX_DRAIN: u64 = 1 << 20;
/// How long a client may take to send its request or read the reply.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Server {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Listens on `path` (creating its directory). A socket file left by a node that died is
    /// replaced; one a live node answers on is an error.
    pub fn start(path: &Path, handler: Arc<Handler>) -> Result<Server, String> {
        let listener = bind(path)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (stop, conns) = (Arc::clone(&stopping), Arc::clone(&connections));
        let accept = std::thread::Builder::new()
            .name("ctl-accept".into())
            .spawn(move || accept_loop(&listener, &handler, &stop, &conns))
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(Server {
            path: path.to_path_buf(),
            stopping,
            accept: Some(accept),
            connections,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the requests under way, removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        // Wake `accept`; if the connect fails the listener is already gone.
        let _ = UnixStream::connect(&self.path);
        let _ = accept.join();
        let threads = std::mem::take(&mut *lock(&self.connections));
        for t in threads {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the control socket's directory {}: {e}",
                dir.display()
            )
        })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; choose another path with --ctl",
                path.display()
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "control socket {} belongs to a running node (stop it first, or pass --ctl PATH)",
                path.display()
            ));
        }
        // Left behind by a node that did not stop cleanly.
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on control socket {}: {e}", path.display()))
}

fn accept_loop(
    listener: &UnixListener,
    handler: &Arc<Handler>,
    stopping: &AtomicBool,
    connections: &Mutex<Vec<JoinHandle<()>>>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name("ctl-conn".into())
            .spawn(move || serve(stream, &handler));
        let mut threads = lock(connections);
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::warn!("cannot serve a control connection: {e}"),
        }
    }
}

fn serve(stream: UnixStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut line = String::new();
    let read = match stream.try_clone() {
        Ok(s) => BufReader::new(s.take(MAX_REQUEST)).read_line(&mut line),
        Err(e) => Err(e),
    };
    let reply = match read {
        Ok(0) => return, // a connection that says nothing (our own wake-up) gets nothing
        Ok(_) if !line.ends_with('\n') => Err(format!(
            "request too long or not ended by a newline (at most {MAX_REQUEST} bytes)"
        )),
        Ok(_) => {
            tracing::debug!(request = line.trim_end(), "control request");
            handler.handle(line.trim_end())
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err("the request is not UTF-8".to_string())
        }
        Err(e) => Err(format!("cannot read the request: {e}")),
    };
    let text = match reply {
        Ok(body) => format!("ok\n{body}"),
        Err(message) => format!("error {}\n", message.replace('\n', " ")),
    };
    let mut stream = stream;
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Closing with unread input would reset the connection before the client reads the reply
    // (an over-long request): swallow a bounded amount of what is left.
    let _ = std::io::copy(&mut stream.take(MAX_DRAIN), &mut std::io::sink());
}
