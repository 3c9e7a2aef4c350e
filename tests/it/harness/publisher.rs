//! A real MQTT client publishing at QoS 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use super::*;

/// A real MQTT client publishing at QoS 1 and counting the broker's acks.
pub struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    sent: u64,
    _task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(port: u16, id: &str) -> Self {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(200)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            client,
            acked,
            sent: 0,
            _task: task,
        }
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    /// Whether the broker acknowledged everything published.
    pub fn all_acked(&self) -> bool {
        self.acked.load(Ordering::Relaxed) >= self.sent
    }

    /// Wait until the broker acknowledged everything published.
    pub async fn flush(&self) {
        let (acked, sent) = (self.acked.clone(), self.sent);
        wait_for("broker acks", Duration::from_secs(120), async || {
            acked.load(Ordering::Relaxed) >= sent
        })
        .await;
    }
}
