//! The `turn` crate's client, set up the one way the tests and
//! `examples/alloc_driver` use it: on a given socket, REST credentials, the
//! realm learned from the server, listening.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

pub async fn listening_client(
    sock: tokio::net::UdpSocket,
    server: SocketAddr,
    user: &str,
    pass: &str,
) -> Result<turn::client::Client, turn::Error> {
    let cfg = turn::client::ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: user.into(),
        password: pass.into(),
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(sock),
        vnet: None,
    };
    let client = turn::client::Client::new(cfg).await?;
    client.listen().await?;
    Ok(client)
}
