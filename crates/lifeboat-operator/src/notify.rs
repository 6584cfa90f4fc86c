//! Drill notifications to a Slack-compatible incoming webhook (`{"text": ...}`), the playbook's
//! `#incident` channel. The URL is a credential: it is read from a Secret at send time and never
//! written to status, Events or logs.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// POSTs `body` as JSON to `url` (http or https) and returns the response status.
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<u16, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| format!("loading CA certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let payload = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|_| "the webhook URL is not a valid URL".to_owned())?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        // The error text may contain the URL: keep it out of Events and logs.
        Ok(Err(e)) if e.is_connect() => Err("could not connect to the webhook".into()),
        Ok(Err(_)) => Err("the webhook request failed".into()),
        Err(_) => Err(format!("the webhook did not answer within {timeout:?}")),
    }
}
