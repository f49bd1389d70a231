//! A local anvil chain (on 127.0.0.1 unless told otherwise), the EVM the tests (and a swarm on one machine) run against.
//! The binary comes from `scripts/install-ledger-tools`, which says where it put it.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// anvil's chain id unless told otherwise.
pub const ANVIL_CHAIN_ID: u64 = 31337;

#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    #[error("cannot run {script}: {reason}")]
    Install { script: PathBuf, reason: String },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} exited before listening")]
    NotListening { binary: PathBuf },
    #[error("cannot stop anvil: {0}")]
    Stop(#[source] std::io::Error),
    #[error("anvil came back on port {found}, not {expected}")]
    PortChanged { expected: u16, found: u16 },
}

/// The anvil binary: `$ANVIL` when set (the install script's `--env` output sets it), otherwise
/// wherever `install_script` installs it.
pub fn anvil_binary(install_script: &Path) -> Result<PathBuf, AnvilError> {
    if let Some(path) = std::env::var_os("ANVIL") {
        return Ok(PathBuf::from(path));
    }
    let failed = |reason: String| AnvilError::Install {
        script: install_script.to_path_buf(),
        reason,
    };
    let output = Command::new(install_script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(output.status.to_string()));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("ANVIL="))
        .map(PathBuf::from)
        .ok_or_else(|| failed("it printed no ANVIL= line".into()))
}

/// One anvil process, on 127.0.0.1 unless told otherwise; killed when dropped.
#[derive(Debug)]
pub struct Anvil {
    binary: PathBuf,
    host: IpAddr,
    args: Vec<String>,
    child: Child,
    port: u16,
    dev_keys: Vec<String>,
}

impl Anvil {
    /// A fresh chain on 127.0.0.1 and a port anvil picks, with extra arguments (e.g. `--no-mining`).
    pub fn start(binary: &Path, args: &[&str]) -> Result<Anvil, AnvilError> {
        Self::start_on(binary, IpAddr::V4(Ipv4Addr::LOCALHOST), args)
    }

    /// A fresh chain listening on `host` only (e.g. a test bed's private bridge, which its pods
    /// reach), on a port anvil picks.
    pub fn start_on(binary: &Path, host: IpAddr, args: &[&str]) -> Result<Anvil, AnvilError> {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let (child, port, dev_keys) = spawn(binary, host, 0, &args)?;
        Ok(Anvil {
            binary: binary.to_path_buf(),
            host,
            args,
            child,
            port,
            dev_keys,
        })
    }

    /// The private keys (64 hex digits) of the funded development accounts anvil printed at start,
    /// in its order. Everyone knows them: they are for local chains only.
    pub fn dev_keys(&self) -> &[String] {
        &self.dev_keys
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://{}", SocketAddr::new(self.host, self.port))
    }

    /// Stops anvil the way a node is stopped (SIGTERM, so `--state` is written) and waits.
    pub fn stop(&mut self) -> Result<(), AnvilError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(AnvilError::Stop)?;
        if !status.success() {
            return Err(AnvilError::Stop(std::io::Error::other(status.to_string())));
        }
        self.child.wait().map_err(AnvilError::Stop)?;
        Ok(())
    }

    /// Starts anvil again on the same port with the same arguments.
    pub fn restart(&mut self) -> Result<(), AnvilError> {
        let (child, port, _) = spawn(&self.binary, self.host, self.port, &self.args)?;
        self.child = child;
        if port != self.port {
            return Err(AnvilError::PortChanged {
                expected: self.port,
                found: port,
            });
        }
        Ok(())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // Already gone after stop(); nothing to report either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts anvil on `host` and `port` (0: its choice) and reads from its banner the development keys
/// and the port it listens on.
fn spawn(
    binary: &Path,
    host: IpAddr,
    port: u16,
    args: &[String],
) -> Result<(Child, u16, Vec<String>), AnvilError> {
    let mut child = Command::new(binary)
        .args(["--host", &host.to_string(), "--port", &port.to_string()])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| AnvilError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let not_listening = || AnvilError::NotListening {
        binary: binary.to_path_buf(),
    };
    let stdout = child.stdout.take().ok_or_else(not_listening)?;
    let mut lines = BufReader::new(stdout).lines();
    let mut dev_keys = Vec::new();
    let port = lines.by_ref().map_while(Result::ok).find_map(|line| {
        if let Some(key) = dev_key(&line) {
            dev_keys.push(key);
        }
        line.strip_prefix("Listening on ")
            .and_then(|address| address.rsplit(':').next()?.parse().ok())
    });
    let Some(port) = port else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(not_listening());
    };
    // anvil logs every request to stdout: keep reading, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, port, dev_keys))
}

/// The key of a banner line `(3) 0x<64 hex digits>`.
fn dev_key(line: &str) -> Option<String> {
    let (index, key) = line.trim().split_once(' ')?;
    let numbered = index.starts_with('(') && index.ends_with(')');
    let hex = key.strip_prefix("0x")?;
    (numbered && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_keys_are_recognised_and_addresses_are_not() {
        let key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        assert_eq!(dev_key(&format!("(0) 0x{key}")), Some(key.to_owned()));
        assert_eq!(
            dev_key(
                "(0) 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 (10000.000000000000000000 ETH)"
            ),
            None
        );
        assert_eq!(dev_key("Listening on 127.0.0.1:8545"), None);
    }
}
