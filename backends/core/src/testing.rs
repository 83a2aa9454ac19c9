//! Helpers for tests that start real servers.

/// A free TCP port on 127.0.0.1, for a test server.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
