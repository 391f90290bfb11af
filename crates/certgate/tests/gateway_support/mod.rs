//! Shared harness for the gateway's end-to-end tests: the real `certgate` binary, a tiny
//! HTTP/1.1 upstream, and curl / openssl drivers. Loopback only; every process is killed when
//! its guard drops.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
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
    /// Every listener's bound address, by name, as the gateway reported them.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin listener's address, when the configuration has one.
    pub admin: Option<SocketAddr>,
    pub dir: PathBuf,
    _proc: Proc,
}

impl Gateway {
    /// Writes `config` to `dir/certgate.toml` with `{port}` replaced by 0, starts the gateway,
    /// and learns the ports it bound from its ready lines (no port is picked in advance, so
    /// none can be taken by another process in between). `port` is the first listener's.
    pub fn start(dir: &Path, config: &str) -> Gateway {
        Gateway::start_with_env(dir, config, &[])
    }

    /// As [`Gateway::start`], with extra environment variables (e.g. `CERTGATE_LOG`).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_with_args(dir, config, env, &[])
    }

    /// As [`Gateway::start`], with environment variables and extra `serve` arguments.
    pub fn start_with_args(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Gateway {
        let stdout = Stdio::from(std::fs::File::create(dir.join("access.log")).unwrap());
        Gateway::spawn(dir, config, env, args, stdout).0
    }

    /// As [`Gateway::start`], with stdout (the access log) a pipe that the caller holds and
    /// need not read.
    pub fn start_with_piped_stdout(
        dir: &Path,
        config: &str,
    ) -> (Gateway, std::process::ChildStdout) {
        let (gw, stdout) = Gateway::spawn(dir, config, &[], &[], Stdio::piped());
        (gw, stdout.unwrap())
    }

    fn spawn(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        stdout: Stdio,
    ) -> (Gateway, Option<std::process::ChildStdout>) {
        let text = config.replace("{port}", "0");
        let path = dir.join("certgate.toml");
        std::fs::write(&path, text).unwrap();
        let listeners_wanted = config.matches("[[listener]]").count().max(1);
        let admin_wanted = usize::from(config.contains("[admin]"));
        let mut command = Command::new(CERTGATE);
        command.args(["serve", "--config"]).arg(&path).args(args).envs(env.iter().copied());
        Gateway::spawn_command(dir, command, stdout, listeners_wanted, admin_wanted)
    }

    /// Runs `certgate ARGS` (a command that serves one listener with no configuration file,
    /// such as `ca serve --listen 127.0.0.1:0`) in `dir`, its access log in `dir/access.log`,
    /// and learns its port from its ready line.
    pub fn start_command(dir: &Path, args: &[&str]) -> Gateway {
        Gateway::start_command_with_env(dir, args, &[])
    }

    /// As [`Gateway::start_command`], with extra environment variables.
    pub fn start_command_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let stdout = Stdio::from(std::fs::File::create(dir.join("access.log")).unwrap());
        let mut command = Command::new(CERTGATE);
        command.current_dir(dir).args(args).envs(env.iter().copied());
        Gateway::spawn_command(dir, command, stdout, 1, 0).0
    }

    fn spawn_command(
        dir: &Path,
        mut command: Command,
        stdout: Stdio,
        listeners_wanted: usize,
        admin_wanted: usize,
    ) -> (Gateway, Option<std::process::ChildStdout>) {
        let mut child = command.stdout(stdout).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let piped_stdout = child.stdout.take();
        let mut listeners =
            ready_lines(stderr, listeners_wanted + admin_wanted, &dir.join("gateway.err"));
        let admin =
            listeners.iter().position(|(n, _)| n == "@admin").map(|i| listeners.remove(i).1);
        if listeners.len() < listeners_wanted {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "the gateway did not report {listeners_wanted} listener(s): {}",
                std::fs::read_to_string(dir.join("gateway.err")).unwrap_or_default()
            );
        }
        let gw = Gateway {
            port: listeners[0].1.port(),
            listeners,
            admin,
            dir: dir.to_path_buf(),
            _proc: Proc(child),
        };
        (gw, piped_stdout)
    }

    /// The gateway's process id (to read its memory use in /proc).
    pub fn pid(&self) -> u32 {
        self._proc.0.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Sends `signal` (`HUP`, `TERM`) to the gateway process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self._proc.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Whether the gateway process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self._proc.0.try_wait(), Ok(None))
    }

    /// Waits (10 s at most) until the gateway's stderr contains `text` `count` times.
    pub fn wait_for_log(&self, text: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if log.matches(text).count() >= count {
                return log;
            }
            assert!(Instant::now() < deadline, "no {count}× {text:?} in the log: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the gateway wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.err")).unwrap_or_default()
    }
}

/// Reads `certgate: listener NAME on https://ADDR` lines from `stderr` (15 s at most) until
/// `wanted` were seen, copying every line into `log`; then keeps copying in a thread, so the
/// gateway never blocks on a full pipe.
fn ready_lines(stderr: ChildStderr, wanted: usize, log: &Path) -> Vec<(String, SocketAddr)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = std::fs::File::create(log).unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            if let Some(rest) = line.strip_prefix("certgate: listener ")
                && let Some((name, addr)) = rest.split_once(" on https://")
                && let Ok(addr) = addr.trim().parse::<SocketAddr>()
            {
                let _ = tx.send((name.to_string(), addr));
            }
            if let Some(addr) = line
                .strip_prefix("certgate: admin on http://")
                .or_else(|| line.strip_prefix("certgate: admin on https://"))
                && let Ok(addr) = addr.trim().parse::<SocketAddr>()
            {
                let _ = tx.send(("@admin".to_string(), addr));
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut found = Vec::new();
    while found.len() < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(pair) => found.push(pair),
            Err(_) => break,
        }
    }
    found
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound
/// but never listening, so no other process can take it.
pub fn dead_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
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

fn serve_upstream(stream: TcpStream, delay: Duration) {
    serve_heads(stream, |head| {
        std::thread::sleep(delay);
        head.to_string()
    });
}

/// Reads request heads (bodies are not read) and answers each with `body(head)`, keep-alive.
fn serve_heads(mut stream: TcpStream, body: impl Fn(&str) -> String) {
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
        let body = body(&head);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
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

/// Runs `tests/support/raw_client.py MODE` against the gateway (as client `name` when given)
/// and returns what it printed.
pub fn raw_client(gw: &Gateway, mode: &str, client: Option<&str>, extra: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/raw_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(mode).args(["--port", &gw.port.to_string()]);
    cmd.arg("--ca").arg(gw.dir.join("root.crt"));
    if let Some(name) = client {
        cmd.arg("--cert").arg(gw.dir.join(format!("{name}.crt")));
        cmd.arg("--key").arg(gw.dir.join(format!("{name}.key")));
    }
    let out = cmd.args(extra).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// An HTTP/1.1 upstream that reads request paths the way common frameworks do and says what
/// each would act on, after the request head:
/// `decoded: …` (Flask, Express, Go: the whole path percent-decoded) and `servlet: …`
/// (Tomcat, Spring: `;parameters` dropped from each segment, then decoded, dot segments
/// resolved, `/` merged). Written here, independently of the gateway's own normalizer.
pub fn framework_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_framework(stream));
        }
    });
    port
}

fn serve_framework(stream: TcpStream) {
    serve_heads(stream, |head| {
        let target = head.split(' ').nth(1).unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/");
        format!("{head}decoded: {}\nservlet: {}\n", percent_decode(path), servlet_path(path))
    });
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn servlet_path(path: &str) -> String {
    let stripped: Vec<&str> =
        path.split('/').map(|seg| seg.split(';').next().unwrap_or("")).collect();
    let decoded = percent_decode(&stripped.join("/"));
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// A listener on `127.0.0.1:0` serving `server.crt`, with client-certificate `mode` trusting
/// `root.crt`; `extra` goes in the `[[listener]]` table (e.g. `[listener.limits]` lines).
pub fn listener(mode: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
listen = "127.0.0.1:{{port}}"
certificates = [{{ cert = "server.crt", key = "server.key" }}]
{extra}
[listener.client_auth]
mode = "{mode}"
trust = ["root.crt"]
"#
    )
}

/// Runs `certgate serve --check` on `config` (its `{port}` as 0), written to
/// `dir/check.toml`: (exit code, stdout and stderr).
pub fn serve_check(dir: &Path, config: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, config.replace("{port}", "0")).unwrap();
    let out =
        Command::new(CERTGATE).args(["serve", "--check", "--config"]).arg(&path).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// An `[[upstream]]` named `name` at `http://127.0.0.1:port`.
pub fn upstream_block(name: &str, port: u16) -> String {
    format!("\n[[upstream]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}\"\n")
}

/// Like [`upstream`], counting the connections it accepts.
pub fn counting_upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || serve_upstream(stream, Duration::ZERO));
        }
    });
    (port, count)
}

/// An mTLS upstream: `openssl s_server -Verify -www` in `dir` with its own PKI (named
/// "upstream"), writing `upstream-ca.crt` and `upstream.crt`/`.key` there, and a client
/// certificate `CN=client_cn` for the gateway as `gw.crt`/`gw.key`. Returns the server process,
/// its port and the PKI (to issue a renewed client certificate).
pub fn mtls_upstream(dir: &Path, client_cn: &str) -> (Proc, u16, TestPki) {
    let up_pki = TestPki::named("upstream");
    std::fs::write(dir.join("upstream-ca.crt"), up_pki.root_pem()).unwrap();
    up_pki.server(&["api.internal"]).write(dir, "upstream");
    up_pki.client(client_cn, &[]).write(dir, "gw");
    let port = free_port();
    let server = Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-cert", "upstream.crt", "-cert_chain", "upstream.crt", "-key", "upstream.key"])
        .args(["-CAfile", "upstream-ca.crt", "-Verify", "2", "-www", "-quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Proc(server);
    wait_for_port(port, &mut server.0, &dir.join("none"));
    (server, port, up_pki)
}

const STREAMING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/streaming.py");

/// Starts `tests/support/streaming.py MODE` (a server) and returns it with the port it
/// reported.
pub fn streaming_server(mode: &str) -> (Proc, u16) {
    python_server(STREAMING, &[mode])
}

/// Starts the Python server `script` with `args`, which prints `port N` once listening, and
/// returns it with that port (20 s at most). No bytecode is written into the source tree.
pub fn python_server(script: &str, args: &[&str]) -> (Proc, u16) {
    let mut child = Command::new("python3")
        .arg("-B")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let proc = Proc(child);
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok());
    let port =
        port.unwrap_or_else(|| panic!("{script} {args:?} did not report its port: {line:?}"));
    (proc, port)
}

/// Runs `tests/support/streaming.py MODE` (a client) against the gateway, as client `name`
/// when given, and returns the JSON object it printed.
pub fn streaming_client(
    gw: &Gateway,
    mode: &str,
    client: Option<&str>,
    extra: &[&str],
) -> serde_json::Value {
    let mut cmd = Command::new("python3");
    cmd.arg(STREAMING).arg(mode).args(["--port", &gw.port.to_string()]);
    cmd.arg("--ca").arg(gw.dir.join("root.crt"));
    if let Some(name) = client {
        cmd.arg("--cert").arg(gw.dir.join(format!("{name}.crt")));
        cmd.arg("--key").arg(gw.dir.join(format!("{name}.key")));
    }
    let out = cmd.args(extra).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!("{mode}: no JSON: {stdout}{}", String::from_utf8_lossy(&out.stderr))
    })
}

/// Reads the admin endpoint `path` with curl: (status, body).
pub fn admin(gw: &Gateway, method: &str, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", gw.admin.unwrap());
    let r = curl(&["-X", method, &url]);
    (r.status, r.body)
}

/// Parses OpenMetrics text with the Prometheus project's own Python parser and returns
/// `family sample value` lines.
pub fn parse_metrics(text: &str) -> String {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(family.name, family.type, s.name, labels, s.value)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The serial of the certificate the gateway serves, as `openssl s_client` sees it.
pub fn served_serial(gw: &Gateway) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", gw.port)])
        .args(["-servername", "localhost"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let x509 =
        Command::new("openssl").args(["x509", "-noout", "-serial"]).stdin(out).output().unwrap();
    let _ = child.wait();
    String::from_utf8_lossy(&x509.stdout).trim().trim_start_matches("serial=").to_ascii_lowercase()
}
