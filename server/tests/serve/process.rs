//! The `factory serve` binary as a test's child process: started with no
//! auth on a free loopback port, killed when the test ends however it ends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `factory serve`; dropping it kills the process.
pub struct ServeProcess {
    /// The process (its id, for signals; `try_wait` for its exit).
    pub child: Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl ServeProcess {
    /// Starts the server on the default model with its state in `state_dir`
    /// and returns once it listens (its model may still be loading: poll `/ping`).
    pub fn start(state_dir: &Path) -> Self {
        let model = factory_models::default_model::cached_path();
        assert!(
            model.is_file(),
            "the default model is missing at {}",
            model.display()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_factory"))
            .args([
                "serve",
                "--no-auth",
                "--addr",
                "127.0.0.1:0",
                "--kv-cache-memory",
                "256MiB",
            ])
            .env("FACTORY_STATE_DIR", state_dir)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("factory serve starts");
        // The log line "serving ... on http://ADDR (...)" names the port.
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => {
                    let _ = child.kill();
                    panic!("server log ended before it listened");
                }
            };
            if let Some(rest) = line.split("on http://").nth(1) {
                break rest.split_whitespace().next().expect("address").to_string();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
