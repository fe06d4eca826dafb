"""The collector over MQTT with TLS, a client certificate and a password, against Mosquitto."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from collector.store import ts_ns
from collector.store.sqlite import SqliteStore
from tests.collector.conftest import T0, Publisher, make_batch, persistent_conf, running_collector, wait_until
from tests.support import servers

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _pki(folder: Path) -> None:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        message = "the openssl and mosquitto_passwd commands are needed (Debian: openssl, mosquitto)"
        if servers.servers_required():
            pytest.fail(message)
        pytest.skip(message)
    folder.mkdir(parents=True)
    _openssl(
        folder,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "collector-1")):
        _openssl(
            folder,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={cn}",
        )
        ext = ["-extfile", "san.ext"] if name == "server" else []
        _openssl(
            folder,
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            *ext,
        )
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(folder / "passwd"), "collector-1", "s3cret"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for path in folder.iterdir():
        path.chmod(0o644)  # the broker may read them after dropping root


async def test_collector_over_tls_with_certificate_and_password(mosquitto_bin: str, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    _pki(pki)
    tls_port = servers.free_port()
    extra = (
        f"{persistent_conf()}password_file {pki / 'passwd'}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"
    )
    broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "broker", extra_conf=extra)
    try:
        secret = tmp_path / "mqtt.secret"
        secret.write_text("s3cret\n")
        db = tmp_path / "store.sqlite"
        config = tmp_path / "c.toml"
        config.write_text(
            f"""
[collector]
id = "collector-1"
site = "bj-dx"
[mqtt]
url = "mqtts://127.0.0.1:{tls_port}"
username = "collector-1"
password_file = "{secret}"
ca_file = "{pki / "ca.crt"}"
cert_file = "{pki / "client.crt"}"
key_file = "{pki / "client.key"}"
[store]
kind = "sqlite"
path = "{db}"
"""
        )
        async with running_collector(config) as collector:
            publisher = Publisher(broker, "plain-publisher")  # the plain listener
            publisher.publish_batches([make_batch(s) for s in range(5)])
            publisher.close()
            await wait_until("5 written over TLS", lambda: collector.metrics.written_messages >= 5)
        store = SqliteStore(db)
        ts, _ = store.read_series("meter", "meter-1", "p0", 0, ts_ns(T0 + 10))
        store.close()
        assert ts.tolist() == [ts_ns(T0 + s) for s in range(5)]
    finally:
        broker.stop()
