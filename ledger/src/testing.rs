//! A real local chain for tests (feature `testing`): anvil from scripts/install-ledger-tools on
//! 127.0.0.1, with the helpers the ledger's, the operator's and the node's tests share. Failures
//! panic: a test that cannot start its chain cannot run.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use serde_json::json;
use swarm_identity::MemberKey;

use crate::anvil::{Anvil, anvil_binary};
use crate::bindings::SwarmCoordinator::{self, SwarmCoordinatorInstance};
use crate::{Address, LedgerClient, LedgerOptions, RetryPolicy, member_signer};

pub use crate::anvil::ANVIL_CHAIN_ID as CHAIN_ID;

/// One anvil process; killed when dropped.
pub struct Chain {
    anvil: Anvil,
}

impl Chain {
    /// A fresh chain on a free port.
    pub fn start() -> Chain {
        Chain::start_with(&[])
    }

    /// A fresh chain with extra anvil arguments, e.g. `--no-mining`.
    pub fn start_with(args: &[&str]) -> Chain {
        let binary = anvil_binary(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-ledger-tools"),
        )
        .expect("anvil is installed by scripts/install-ledger-tools");
        Chain {
            anvil: Anvil::start(&binary, args).expect("anvil starts"),
        }
    }

    pub fn url(&self) -> String {
        self.anvil.url()
    }

    /// Stops anvil the way a node is stopped (SIGTERM, so `--state` is written) and waits.
    pub fn stop(&mut self) {
        self.anvil.stop().expect("anvil stops");
    }

    /// Starts anvil again on the same port with the same arguments.
    pub fn restart(&mut self) {
        self.anvil.restart().expect("anvil restarts");
    }

    /// A provider without a wallet, for test-only RPCs.
    pub fn provider(&self) -> DynProvider {
        ProviderBuilder::new()
            .connect_http(self.url().parse().expect("anvil's URL is a URL"))
            .erased()
    }

    /// Gives `account` 100 ether.
    pub async fn fund(&self, account: Address) {
        let wei = U256::from(10).pow(U256::from(20));
        self.rpc("anvil_setBalance", json!([account, wei])).await;
    }

    pub async fn balance(&self, account: Address) -> U256 {
        self.provider()
            .get_balance(account)
            .await
            .expect("anvil answers eth_getBalance")
    }

    /// Transactions `account` has sent.
    pub async fn nonce(&self, account: Address) -> u64 {
        self.provider()
            .get_transaction_count(account)
            .await
            .expect("anvil answers eth_getTransactionCount")
    }

    /// Turns mining each transaction as it arrives on or off.
    pub async fn set_automine(&self, on: bool) {
        self.rpc("evm_setAutomine", json!([on])).await;
    }

    /// Mines one block.
    pub async fn mine(&self) {
        self.rpc("evm_mine", json!([])).await;
    }

    /// Calls one of anvil's test RPCs; their answers carry nothing the tests need.
    async fn rpc(&self, method: &'static str, params: serde_json::Value) {
        let _: serde_json::Value = self
            .provider()
            .raw_request(method.into(), params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
    }

    /// A new funded member key.
    pub async fn funded_key(&self) -> MemberKey {
        let key = MemberKey::generate();
        self.fund(address(&key)).await;
        key
    }

    /// A new funded owner, its deployed coordinator, and a client for it.
    pub async fn deploy(&self) -> (MemberKey, LedgerClient) {
        let owner = self.funded_key().await;
        let contract = LedgerClient::deploy(&self.url(), CHAIN_ID, signer(&owner), options())
            .await
            .expect("the coordinator deploys");
        let client = self.client(&owner, contract).await;
        (owner, client)
    }

    pub async fn client(&self, key: &MemberKey, contract: Address) -> LedgerClient {
        self.client_with(key, contract, options()).await
    }

    pub async fn client_with(
        &self,
        key: &MemberKey,
        contract: Address,
        options: LedgerOptions,
    ) -> LedgerClient {
        LedgerClient::connect(&self.url(), CHAIN_ID, signer(key), contract, options)
            .await
            .expect("the client connects")
    }

    /// The contract bound to `key`'s account without the client's checks, for the rejections
    /// the client would never send.
    pub fn raw_contract(
        &self,
        key: &MemberKey,
        contract: Address,
    ) -> SwarmCoordinatorInstance<DynProvider> {
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer(key)))
            .connect_http(self.url().parse().expect("anvil's URL is a URL"))
            .erased();
        SwarmCoordinator::new(contract, provider)
    }
}

pub fn signer(key: &MemberKey) -> crate::PrivateKeySigner {
    member_signer(key).expect("a member key is a signing key")
}

pub fn address(key: &MemberKey) -> Address {
    key.address()
        .parse()
        .expect("a member key's address is an address")
}

/// Short timeouts and backoff, so failure paths finish in a second or two.
pub fn options() -> LedgerOptions {
    LedgerOptions {
        request_timeout: Duration::from_secs(5),
        receipt_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(20),
        retry: RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
        },
    }
}

/// A port nothing listens on: bound once by the OS's choice, then released.
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("the OS offers a free port")
        .port()
}
