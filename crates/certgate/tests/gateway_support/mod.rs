//! Shared harness for the gateway's end-to-end tests: the real `certgate` binary, a tiny
//! HTTP/1.1 upstream, and curl / openssl drivers. Loopback only; every process is killed when
//! its guard drops.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use certgate_pki::testkit::{TestLeaf, TestPki};

pub const CERTGATE: &str = env!("CARGO_BIN_EXE_certgate");

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `port` accepts connections, or panics after 15 s.
pub fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "process exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A running gateway.
pub struct Gateway {
    pub port: u16,
    pub dir: PathBuf,
    _proc: Proc,
}

impl Gateway {
    /// Writes `config` (with `{port}` replaced) to `dir/certgate.toml` and starts the gateway.
    pub fn start(dir: &Path, config: &str) -> Gateway {
        let port = free_port();
        let text = config.replace("{port}", &port.to_string());
        let path = dir.join("certgate.toml");
        std::fs::write(&path, text).unwrap();
        let err = dir.join("gateway.err");
        let mut child = Command::new(CERTGATE)
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(std::fs::File::create(dir.join("access.log")).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(port, &mut child, &err);
        Gateway { port, dir: dir.to_path_buf(), _proc: Proc(child) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

/// The outcome of one curl run.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0 when it got an HTTP answer).
    pub exit: i32,
    pub status: u16,
    pub body: String,
    pub stderr: String,
}

/// Runs curl with `args`, writing the body and then the status code on the last line.
pub fn curl(args: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl to the gateway trusting `dir/root.crt`, with the client `name.crt`/`name.key` if given.
pub fn curl_as(gw: &Gateway, client: Option<&str>, path: &str, extra: &[&str]) -> Curl {
    let ca = gw.dir.join("root.crt").display().to_string();
    let mut args: Vec<String> = vec!["--cacert".into(), ca];
    if let Some(name) = client {
        args.push("--cert".into());
        args.push(gw.dir.join(format!("{name}.crt")).display().to_string());
        args.push("--key".into());
        args.push(gw.dir.join(format!("{name}.key")).display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(gw.url(path));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs)
}

/// A test PKI written into `dir`: root.crt, server.crt/key (localhost, 127.0.0.1) and
/// returned for issuing more leaves.
pub fn pki_in(dir: &Path) -> TestPki {
    let pki = TestPki::new();
    pki.write_root(dir);
    pki.server(&["localhost", "127.0.0.1"]).write(dir, "server");
    pki
}

/// Writes a leaf as `dir/name.crt` + `dir/name.key`.
pub fn write_leaf(dir: &Path, name: &str, leaf: &TestLeaf) {
    leaf.write(dir, name);
}

/// A plain HTTP/1.1 upstream (keep-alive) that answers each request after `delay` with the
/// request head it received as the body. Threads end with the test process.
pub fn upstream(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_upstream(stream, delay));
        }
    });
    port
}

fn serve_upstream(mut stream: TcpStream, delay: Duration) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        std::thread::sleep(delay);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The value of `name` (case-insensitive) in an upstream-echoed request head.
pub fn echoed_header(body: &str, name: &str) -> Option<String> {
    body.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Runs a command and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}
