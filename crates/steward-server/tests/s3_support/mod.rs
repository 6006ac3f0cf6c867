//! A real S3-compatible server (s3s + s3s-fs, as in steward-repo's tests) on 127.0.0.1, behind
//! a TCP gate the test can shut: open (forward), hang (accept and never answer: a slow or
//! black-holed store) or refuse (close every connection: a dead one).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const ACCESS_KEY_ID: &str = "steward-test";
pub const SECRET_ACCESS_KEY: &str = "s3-secret-never-shown";

/// What the gate in front of the S3 server does with connections, new and open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Accept, and never answer; open connections stop forwarding.
    Hang,
    /// Close new connections at once; open ones stop forwarding.
    Refuse,
}

pub struct S3Server {
    /// The endpoint to configure (the gate).
    pub endpoint: String,
    /// The directory the server keeps buckets in (`<root>/<bucket>/<key>`).
    pub root: PathBuf,
    gate: watch::Sender<Gate>,
    rt: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// Serves `root` (with the directory of `bucket` created) behind an open gate.
    pub fn start(root: &Path, bucket: &str) -> Self {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        // Its own runtime: the server keeps serving whatever the test's runtime is doing.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
        let service = b.build();
        // Bound here (the caller may be inside another runtime), served on this one.
        let bind = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            l
        };
        let s3 = bind();
        let upstream = s3.local_addr().unwrap();
        rt.spawn(async move {
            let s3 = TcpListener::from_std(s3).unwrap();
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = s3.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        let front = bind();
        let addr = front.local_addr().unwrap();
        let (gate, rx) = watch::channel(Gate::Open);
        rt.spawn(async move {
            gatekeeper(TcpListener::from_std(front).unwrap(), upstream, rx).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            root: root.to_owned(),
            gate,
            rt: Some(rt),
        }
    }

    pub fn set(&self, gate: Gate) {
        self.gate.send_replace(gate);
    }

    /// Object keys under `<bucket>/<prefix>/<dir>` (files the server wrote there).
    pub fn objects(&self, bucket: &str, under: &str) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join(bucket).join(under), &mut out);
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn gatekeeper(front: TcpListener, upstream: SocketAddr, gate: watch::Receiver<Gate>) {
    loop {
        let Ok((mut client, _)) = front.accept().await else {
            continue;
        };
        let mut gate = gate.clone();
        tokio::spawn(async move {
            let now = *gate.borrow_and_update();
            match now {
                Gate::Refuse => drop(client),
                Gate::Hang => {
                    // Hold the connection, silent, until the gate moves.
                    let _ = gate.changed().await;
                }
                Gate::Open => {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let shut = async {
                        loop {
                            if gate.changed().await.is_err() {
                                return;
                            }
                            if *gate.borrow_and_update() != Gate::Open {
                                return;
                            }
                        }
                    };
                    let shut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        () = shut => true,
                    };
                    // Forwarding stopped; a hung connection stays silent until the gate
                    // moves again.
                    if shut && *gate.borrow() == Gate::Hang {
                        let _ = gate.changed().await;
                    }
                }
            }
        });
    }
}
