//! A real load balancer (nginx or haproxy, the Debian packages; `.ci/run` installs them) in
//! front of `asr_bridge serve` instances on Unix sockets, on a free loopback port, with every
//! file it writes in its own temporary directory. The pool's part of the configuration is the
//! README's, taken from it as written (only the port and socket paths are swapped), so the
//! README's configuration is the tested one. Killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::root;

/// The socket paths and port the README's configurations name.
const README_SOCKETS: [&str; 2] = ["/run/asr_bridge/a.sock", "/run/asr_bridge/b.sock"];
const README_LISTEN: &str = "127.0.0.1:2700";

pub struct Balancer {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// The program, from /usr/sbin or PATH; a test without it fails and says how to get it.
pub fn program(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.is_file() {
        return sbin;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: `apt-get install {name}` (the Debian package; .ci/run installs it)"))
}

/// The README's configuration block that starts with the line `first`, up to its fence.
pub fn readme_block(first: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find(first).unwrap_or_else(|| panic!("README.md has no block starting with {first:?}"));
    let block = &readme[start..];
    block[..block.find("\n```").expect("the block's closing fence")].to_string() + "\n"
}

/// The README's block for the pool, on `port`, with `sockets` for the README's two.
fn pool_config(first: &str, port: u16, sockets: [&Path; 2]) -> String {
    let mut text = readme_block(first);
    let swaps = [(README_LISTEN.to_string(), format!("127.0.0.1:{port}"))]
        .into_iter()
        .chain(README_SOCKETS.iter().zip(sockets).map(|(a, b)| (a.to_string(), b.display().to_string())));
    for (from, to) in swaps {
        assert!(text.contains(&from), "the README's block {first:?} no longer names {from}:\n{text}");
        text = text.replace(&from, &to);
    }
    text
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The first line of the README's nginx block.
pub const NGINX_BLOCK: &str = "# asr_bridge pool: nginx";
/// The first line of the README's haproxy block.
pub const HAPROXY_BLOCK: &str = "# asr_bridge pool: haproxy";

impl Balancer {
    /// nginx in the foreground, one process, logs and temp files in its directory.
    pub fn nginx(sockets: [&Path; 2]) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port();
        let conf = format!(
            "error_log {d}/error.log info;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\nhttp {{\n\
             access_log {d}/access.log;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{}}}\n",
            pool_config(NGINX_BLOCK, port, sockets)
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut cmd = Command::new(program("nginx"));
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&path).arg("-e").arg(dir.path().join("error.log"));
        cmd.args(["-g", "daemon off; master_process off;"]);
        Balancer::spawn(cmd, port, dir, "error.log")
    }

    /// haproxy in the foreground (`-db`), with a minimal global section before the README's.
    pub fn haproxy(sockets: [&Path; 2]) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, format!("global\n    maxconn 256\n\n{}", pool_config(HAPROXY_BLOCK, port, sockets))).unwrap();
        let check = Command::new(program("haproxy")).arg("-c").arg("-f").arg(&path).output().unwrap();
        assert!(check.status.success(), "haproxy -c: {}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
        let mut cmd = Command::new(program("haproxy"));
        cmd.arg("-f").arg(&path).arg("-db");
        Balancer::spawn(cmd, port, dir, "haproxy.log")
    }

    fn spawn(mut cmd: Command, port: u16, dir: tempfile::TempDir, log: &str) -> Balancer {
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(dir.path().join(log)).unwrap()).spawn().unwrap();
        let mut b = Balancer { child, port, dir };
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!("the balancer exited ({st}):\n{}", b.log());
            }
            assert!(Instant::now() < until, "the balancer never listened on {port}:\n{}", b.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    /// The `--server` address of the pool.
    pub fn addr(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// What it wrote to its logs.
    pub fn log(&self) -> String {
        ["error.log", "haproxy.log"].iter().filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok()).collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
