//! A real local chain for ledger scenarios: anvil (from scripts/install-ledger-tools) on 127.0.0.1,
//! started the way the ledger crate's own tests start it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use serde_json::json;

/// anvil's chain id unless told otherwise.
pub const CHAIN_ID: u64 = 31337;

fn anvil_binary() -> &'static Path {
    static ANVIL: OnceLock<PathBuf> = OnceLock::new();
    ANVIL.get_or_init(|| {
        if let Some(path) = std::env::var_os("ANVIL") {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-ledger-tools");
        let output = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "{} failed", script.display());
        let stdout = String::from_utf8(output.stdout).unwrap();
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("ANVIL="))
            .unwrap_or_else(|| panic!("{} printed no ANVIL= line", script.display()));
        PathBuf::from(line)
    })
}

/// One anvil process; killed when dropped.
pub struct Chain {
    child: Child,
    port: u16,
}

impl Chain {
    pub fn start() -> Chain {
        let mut child = Command::new(anvil_binary())
            .args(["--host", "127.0.0.1", "--port", "0"])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", anvil_binary().display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("anvil exited before listening")
                .unwrap();
            if let Some(address) = line.strip_prefix("Listening on ") {
                break address.rsplit(':').next().unwrap().parse().unwrap();
            }
        };
        // anvil logs every request to stdout: keep reading, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Chain { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn provider(&self) -> DynProvider {
        ProviderBuilder::new()
            .connect_http(self.url().parse().unwrap())
            .erased()
    }

    /// Gives `account` 100 ether.
    pub async fn fund(&self, account: Address) {
        let wei = U256::from(10).pow(U256::from(20));
        let _: serde_json::Value = self
            .provider()
            .raw_request("anvil_setBalance".into(), json!([account, wei]))
            .await
            .unwrap();
    }

    pub async fn balance(&self, account: Address) -> U256 {
        self.provider().get_balance(account).await.unwrap()
    }

    /// Transactions `account` has sent.
    pub async fn nonce(&self, account: Address) -> u64 {
        self.provider()
            .get_transaction_count(account)
            .await
            .unwrap()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        // Nothing to report either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on: bound once by the OS's choice, then released.
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
