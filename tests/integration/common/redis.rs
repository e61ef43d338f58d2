//! A private Redis server, so that a test can kill its connections, or the server itself,
//! without disturbing other tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrivateRedis {
    pub url: String,
    port: u16,
    child: Child,
}

impl PrivateRedis {
    /// A `redis-server` without persistence on a free port, answering when this returns.
    pub async fn start() -> PrivateRedis {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let redis = PrivateRedis {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: spawn(port),
        };
        redis.wait_until_up().await;
        redis
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new, empty server on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port);
        self.wait_until_up().await;
    }

    async fn wait_until_up(&self) {
        for _ in 0..100 {
            if let Ok(c) = redis::Client::open(self.url.as_str())
                && c.get_multiplexed_async_connection().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }
}

fn spawn(port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (is Redis installed?)")
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
