//! TLS set-up shared by the MQTT source and the HTTP clients. A leaf.

/// rustls needs a process-wide crypto provider; lantian uses ring (no C
/// toolchain or cmake needed, unlike aws-lc). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
