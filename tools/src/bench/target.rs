//! The systems a benchmark client drives, behind one interface: Meridian through its region's
//! proxy (HTTPS/1.1 over TLS, one connection per client) and etcd through its region's member
//! (the maintained `etcd-client` crate, gRPC, one channel per client).
use crate::https::Conn;
use anyhow::{anyhow, Result};
use std::sync::Arc;

pub enum Target {
    Meridian(Conn),
    Etcd(Box<etcd_client::KvClient>),
}

/// What one operation returned.
pub struct Answer {
    /// The path that served it (Meridian says; etcd: the path asked for).
    pub served_by: String,
    /// The value read (reads), `None` when the key is absent.
    pub read: Option<Vec<u8>>,
}

impl Target {
    pub async fn meridian(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<Target> {
        Ok(Target::Meridian(Conn::open(url, tls).await?))
    }

    pub async fn etcd(endpoint: &str) -> Result<Target> {
        let c = etcd_client::Client::connect([endpoint], None).await?;
        Ok(Target::Etcd(Box::new(c.kv_client())))
    }

    pub async fn put(&mut self, key: &str, value: Vec<u8>) -> Result<Answer> {
        match self {
            Target::Meridian(c) => {
                let r = c.request("PUT", &format!("/v1/kv/{key}"), value).await?;
                if r.status != 200 {
                    return Err(anyhow!("PUT {key}: HTTP {}", r.status));
                }
                Ok(Answer {
                    served_by: "leader".into(),
                    read: None,
                })
            }
            Target::Etcd(kv) => {
                kv.put(key, value, None).await?;
                Ok(Answer {
                    served_by: "leader".into(),
                    read: None,
                })
            }
        }
    }

    /// A read by `path`: Meridian `auto|leader|quorum|lease` (linearizable), `serializable` or
    /// `bounded:MS`; etcd `linearizable` or `serializable`.
    pub async fn get(&mut self, key: &str, path: &str) -> Result<Answer> {
        match self {
            Target::Meridian(c) => {
                let q = match path {
                    "serializable" => "consistency=serializable".to_string(),
                    p if p.starts_with("bounded:") => format!("consistency={p}"),
                    p => format!("read_mode={p}"),
                };
                let r = c
                    .request("GET", &format!("/v1/kv/{key}?{q}"), vec![])
                    .await?;
                let served_by = r.header("x-meridian-read-path").unwrap_or_default();
                match r.status {
                    200 => Ok(Answer {
                        served_by,
                        read: Some(r.body.to_vec()),
                    }),
                    404 => Ok(Answer {
                        served_by,
                        read: None,
                    }),
                    s => Err(anyhow!("GET {key}: HTTP {s}")),
                }
            }
            Target::Etcd(kv) => {
                let opts = match path {
                    "serializable" => Some(etcd_client::GetOptions::new().with_serializable()),
                    "linearizable" => None,
                    p => return Err(anyhow!("etcd has no read path {p:?}")),
                };
                let r = kv.get(key, opts).await?;
                Ok(Answer {
                    served_by: path.to_string(),
                    read: r.kvs().first().map(|kv| kv.value().to_vec()),
                })
            }
        }
    }
}
