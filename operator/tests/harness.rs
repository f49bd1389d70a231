//! The scripted API server itself: a scenario must be able to fail, so a request after the last
//! expected one, a reconciler that stops early and a request out of order each fail the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod support;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::DeleteParams;

use support::fixtures::*;
use support::{mock_client, run};

#[tokio::test]
#[should_panic(
    expected = "unexpected request GET /api/v1/namespaces/research/persistentvolumeclaims/other"
)]
async fn harness_rejects_a_request_after_the_last_expected_one() {
    let (client, server) = mock_client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
    let _ = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server
        },
        async {
            claims.get("models").await.unwrap();
            claims.get_opt("other").await
        },
    )
    .await;
}

#[tokio::test]
#[should_panic(expected = "without sending PATCH /api/v1/namespaces/research/services/demo-peers")]
async fn harness_rejects_a_reconciler_that_stops_early() {
    let (client, server) = mock_client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
    let _ = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            expect_service_apply(&mut server).await;
            server
        },
        async { claims.get("models").await.map(|_| ()) },
    )
    .await;
}

#[tokio::test]
#[should_panic(
    expected = "expected GET /api/v1/namespaces/research/persistentvolumeclaims/models, got DELETE"
)]
async fn harness_rejects_a_request_out_of_order() {
    let (client, server) = mock_client();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, NS);
    let _ = run(
        server,
        |mut server| async move {
            server.get(PVC).await.ok(&model_claim());
            server
        },
        async {
            claims
                .delete("models", &DeleteParams::default())
                .await
                .map(|_| ())
        },
    )
    .await;
}
