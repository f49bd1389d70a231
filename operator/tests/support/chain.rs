//! A real local chain for ledger scenarios: anvil (from scripts/install-ledger-tools) on 127.0.0.1,
//! started by swarm-ledger's launcher, as the ledger crate's own tests do.

use std::net::TcpListener;
use std::path::Path;

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use serde_json::json;
use swarm_ledger::anvil::{Anvil, anvil_binary};

pub use swarm_ledger::anvil::ANVIL_CHAIN_ID as CHAIN_ID;

/// One anvil process; killed when dropped.
pub struct Chain {
    anvil: Anvil,
}

impl Chain {
    pub fn start() -> Chain {
        let binary = anvil_binary(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-ledger-tools"),
        )
        .unwrap();
        Chain {
            anvil: Anvil::start(&binary, &[]).unwrap(),
        }
    }

    pub fn url(&self) -> String {
        self.anvil.url()
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

/// A port nothing listens on: bound once by the OS's choice, then released.
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
