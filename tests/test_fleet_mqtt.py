"""Fleet control over MQTT against a real broker: Debian's mosquitto, started here on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from appliance.config import Config, parse_config
from appliance.control.fleet_wire import decode_desired
from appliance.control.mqtt import FleetClient
from appliance.control.mqtt_link import FleetError
from appliance.control.settings import MqttConfig
from appliance.messages import DeviceStatus
from appliance.streaming.hub import EventBus

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 20.0  # generous: real processes on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    port: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    users: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        assert Path(exe).exists(), "mosquitto is missing: scripts/setup installs it"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + WAIT_S
        while True:
            assert self.proc.poll() is None, f"mosquitto exited: {self.log.read_text()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"mosquitto does not listen: {self.log.read_text()}"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Starts mosquitto brokers on 127.0.0.1 (random free ports); all are stopped afterwards."""
    brokers: list[Broker] = []

    def start(
        users: dict[str, str] | None = None, tls: Pki | None = None, deny_subscribe: list[str] | None = None
    ) -> Broker:
        n = len(brokers)
        port = _free_port()
        lines = [
            f"listener {port} 127.0.0.1",
            "persistence false",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if tls is not None:  # TLS with client certificates required
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                "require_certificate true",
            ]
        if deny_subscribe:  # mosquitto's dynamic-security plugin refuses a SUBSCRIBE (its acl_file does not)
            assert users, "the dynamic-security plugin needs users"
            plugins = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
            assert plugins, "mosquitto's dynamic-security plugin is missing (Debian's mosquitto package ships it)"
            dynsec = tmp_path / f"dynsec{n}.json"
            dynsec.write_text(json.dumps(_dynsec(users, deny_subscribe)))
            lines += ["allow_anonymous false", f"plugin {plugins[0]}", f"plugin_opt_config_file {dynsec}"]
        elif users:
            pw = tmp_path / f"passwd{n}"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            pw.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        conf = tmp_path / f"mosquitto{n}.conf"
        conf.write_text("\n".join(lines) + "\n")
        broker = Broker(port, conf, tmp_path / f"mosquitto{n}.log", users=dict(users or {}))
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    for b in brokers:
        b.stop()


def _dynsec(users: dict[str, str], deny_subscribe: list[str]) -> dict[str, Any]:
    """A dynamic-security plugin config: these users, allowed everything but subscribing to ``deny_subscribe``."""
    import base64
    import hashlib

    def client(name: str, password: str) -> dict[str, Any]:
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
        return {
            "username": name,
            "password": base64.b64encode(digest).decode(),
            "salt": base64.b64encode(salt).decode(),
            "iterations": 101,
            "roles": [{"rolename": "limited"}],
        }

    acls = [{"acltype": "subscribeLiteral", "topic": t, "priority": 5, "allow": False} for t in deny_subscribe]
    return {
        "clients": [client(u, p) for u, p in users.items()],
        "roles": [{"rolename": "limited", "acls": acls}],
        "defaultACLAccess": {
            "publishClientSend": True,
            "publishClientReceive": True,
            "subscribe": True,
            "unsubscribe": True,
        },
    }


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _make_pki(d: Path) -> Pki:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("roombox test CA"))
        .issuer_name(name("roombox test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(
        cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key

    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server, server_key = issue(
        "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    client, client_key = issue("box1", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    (d / "server.pem").write_bytes(server)
    (d / "client.pem").write_bytes(client)
    return Pki(
        d / "ca.pem",
        d / "server.pem",
        write_key(server_key, d / "server.key"),
        d / "client.pem",
        write_key(client_key, d / "client.key"),
    )


class Watcher:
    """A test-side MQTT client that records every message under a topic filter."""

    def __init__(self, port: int, topic: str, username: str | None = None, password: str | None = None) -> None:
        self.port, self.topic = port, topic
        self.username, self.password = username, password
        self.messages: list[tuple[str, bytes, bool]] = []
        self._new = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self.client = aiomqtt.Client(
            "127.0.0.1",
            self.port,
            username=self.username,
            password=self.password,
            identifier=f"watcher-{os.getpid()}-{id(self)}",
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        await self.client.__aenter__()
        await self.client.subscribe(self.topic, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self.client is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self.client is not None
        async for m in self.client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            self.messages.append((m.topic.value, payload, bool(m.retain)))
            self._new.set()

    async def wait_for(
        self, topic: str, match: Callable[[bytes], bool] = lambda _: True, timeout: float = WAIT_S, since: int = 0
    ) -> bytes:
        """The first message on ``topic`` (seen so far, from the ``since``-th, or to come) for which ``match``
        holds."""

        async def seek() -> bytes:
            seen = since
            while True:
                for t, p, _ in self.messages[seen:]:
                    if t == topic and match(p):
                        return p
                seen = len(self.messages)
                self._new.clear()
                await self._new.wait()

        try:
            return await asyncio.wait_for(seek(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"nothing on {topic} matched within {timeout} s; got {[(t, p[:200]) for t, p, _ in self.messages]}"
            ) from None

    async def publish(self, topic: str, payload: str | bytes) -> None:
        assert self.client is not None
        await self.client.publish(topic, payload, qos=1)

    async def retained(self) -> dict[str, bytes]:
        """The retained messages the broker gave at the subscription (a marker published since comes after them)."""
        assert self.client is not None
        marker = f"test/marker/{id(self)}"
        await self.client.subscribe(marker, qos=1)
        await self.publish(marker, b"x")
        await self.wait_for(marker)
        return {t: p for t, p, r in self.messages if r}


def _js(p: bytes) -> Any:
    return json.loads(p)


def _mqtt(port: int, **kw: Any) -> MqttConfig:
    return MqttConfig(enabled=True, host="127.0.0.1", port=port, box_id="box1", keepalive_s=5, **kw)


def _stop(task: asyncio.Task[None]) -> Any:
    task.cancel()
    return asyncio.gather(task, return_exceptions=True)


BOX_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from appliance.control.mqtt import FleetClient
    from appliance.control.settings import MqttConfig
    from appliance.messages import DeviceStatus
    from appliance.streaming.hub import EventBus

    async def main():
        events = EventBus()
        events.publish(DeviceStatus("camera", "running"))
        fleet = FleetClient(MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[1]), box_id="box1",
                                       keepalive_s=5), events)
        await fleet.run()

    asyncio.run(main())
""")


def test_status_retained_and_the_last_will_says_offline_when_the_box_dies(mosquitto: Callable[..., Broker]) -> None:
    broker = mosquitto()
    box = subprocess.Popen(
        [sys.executable, "-c", BOX_SCRIPT, str(broker.port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    async def scenario() -> None:
        try:
            async with Watcher(broker.port, "#") as w:
                await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
                status = _js(await w.wait_for("roombox/box1/status"))
                # whether the box is up is the availability's to say: a status left behind never says online
                assert "state" not in status and status["devices"] == {"camera": "running"}
                assert len(status["instance"]) == 8
                tele = _js(await w.wait_for("roombox/box1/telemetry"))
                assert tele["box"] == "box1" and tele["uptime_s"] >= 0
                ha = _js(await w.wait_for("homeassistant/sensor/roombox_box1/device_camera/config"))
                assert ha["state_topic"] == "roombox/box1/status"
                assert ha["availability_topic"] == "roombox/box1/availability"
                assert ha["device"]["identifiers"] == ["roombox_box1"]
                box.send_signal(signal.SIGKILL)  # no goodbye: only the broker's last will can tell
                box.wait(WAIT_S)
                await w.wait_for("roombox/box1/availability", lambda p: p == b"offline")
            # a newcomer (a fleet dashboard started later) gets the retained state
            async with Watcher(broker.port, "roombox/box1/#") as late:
                await late.wait_for("roombox/box1/availability", lambda p: p == b"offline")
                assert _js(await late.wait_for("roombox/box1/status"))["devices"] == {"camera": "running"}
                assert all(r for _, _, r in late.messages)
        finally:
            if box.poll() is None:
                box.kill()
                box.wait(WAIT_S)

    asyncio.run(scenario())
    assert box.stderr is not None
    err = box.stderr.read().decode()
    box.stderr.close()
    assert "Traceback" not in err, err


def test_desired_config_is_validated_applied_and_acknowledged(mosquitto: Callable[..., Broker]) -> None:
    broker = mosquitto()
    running = Config(mqtt=_mqtt(broker.port))
    applied: list[Config] = []

    def on_config(cfg: Config) -> str:
        nonlocal running
        applied.append(cfg)
        running = cfg
        return f"r{len(applied)}"

    async def scenario() -> None:
        events = EventBus()
        fleet = FleetClient(running.mqtt, events, on_config, current_config=lambda: running)
        task = asyncio.create_task(fleet.run())
        try:
            async with Watcher(broker.port, "roombox/box1/#") as w:
                await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
                # a shot and a device change reach the retained status
                events.publish(DeviceStatus("mic_array", "lost", "unplugged"))
                await w.wait_for(
                    "roombox/box1/status", lambda p: _js(p)["devices"].get("mic_array") == "lost: unplugged"
                )
                # while it retries, the status still says why it was lost
                events.publish(DeviceStatus("mic_array", "retrying", "after 1.0 s"))
                await w.wait_for(
                    "roombox/box1/status",
                    lambda p: _js(p)["devices"].get("mic_array") == "retrying: after 1.0 s (lost: unplugged)",
                )

                desired = {"id": "req-1", "config": {"director": {"min_hold_s": 3.0}, "stream": {"fps": 10.0}}}
                await w.publish("roombox/box1/config/set", json.dumps(desired))
                ack = _js(await w.wait_for("roombox/box1/config/ack", lambda p: _js(p)["id"] == "req-1"))
                assert ack == {"id": "req-1", "ok": True, "revision": "r1"}
                assert len(applied) == 1
                assert applied[0].director.min_hold_s == 3.0 and applied[0].stream.fps == 10.0
                assert applied[0].mqtt == running.mqtt  # the box kept its own [mqtt] section
                await w.wait_for("roombox/box1/status", lambda p: _js(p)["config"]["revision"] == "r1")

                # TOML works too; the same document again changes nothing
                toml_doc = "[director]\nmin_hold_s = 3.0\n[stream]\nfps = 10.0\n"
                await w.publish("roombox/box1/config/set", toml_doc)
                ack = _js(await w.wait_for("roombox/box1/config/ack", lambda p: _js(p).get("unchanged")))
                assert ack["ok"] and ack["revision"] == "r1" and len(applied) == 1
        finally:
            await _stop(task)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ('{"id": 7, "config": {"director": {"min_hold_s": -1}}}', "[director.min_hold_s]"),
        ('{"id": 7, "config": {"director": {"bogus": 1}}}', "[director.bogus] unknown key"),
        ('{"id": 7, "config": {"mqtt": {"port": 70000}}}', "[mqtt.port]"),
        ("[director\nmin_hold_s = 1", "neither a JSON object nor TOML"),
        ('{"id": 7, "config": {"doa": {"grid_deg": "wide"}}}', "[doa.grid_deg]"),
        ('{"a": ' * 30_000, "nested too deeply"),
        ("x = " + "{a = " * 600 + "1" + "}" * 600, "nested too deeply"),
        ("a" + ".a" * 60_000 + " = 1", "a key of more than 32 dotted parts (line 1)"),  # took tomllib minutes
        ('{"id": 7, "config": {}}', "the config is empty: it would put every key back to its default"),
        ("# a file of comments\n", "the config is empty"),
    ],
)
def test_a_bad_desired_config_is_refused_naming_the_key(payload: str, named: str) -> None:
    calls: list[Config] = []
    running = Config()
    fleet = FleetClient(MqttConfig(box_id="box1"), None, _recording(calls, "r9"), current_config=lambda: running)
    ack = asyncio.run(fleet.handle_desired(payload.encode()))
    assert ack["ok"] is False and named in ack["error"], ack
    assert not calls and fleet.config_error == ack["error"]


def test_a_cleared_retained_desired_config_asks_nothing() -> None:
    """Publishing an empty retained message is how MQTT clears one; subscribers receive it. Before, the empty
    document validated as the defaults and the box was reset."""
    calls: list[Config] = []
    running = Config.model_validate({"director": {"min_hold_s": 3.0}})
    fleet = FleetClient(MqttConfig(box_id="box1"), None, _recording(calls, "r9"), current_config=lambda: running)
    fleet.revision = "r4"
    for payload in (b"", b" \n"):
        ack = asyncio.run(fleet.handle_desired(payload))
        assert ack == {"id": None, "ok": True, "revision": "r4", "unchanged": True, "cleared": True}
    assert not calls and fleet.config_error is None


def test_a_bad_config_over_the_broker_is_refused_and_the_running_config_stays(mosquitto: Callable[..., Broker]) -> None:
    broker = mosquitto()
    calls: list[Config] = []

    async def scenario() -> None:
        fleet = FleetClient(_mqtt(broker.port), EventBus(), _recording(calls, "r1"))
        task = asyncio.create_task(fleet.run())
        try:
            async with Watcher(broker.port, "roombox/box1/#") as w:
                await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
                await w.publish("roombox/box1/config/set", '{"id": "bad", "config": {"stream": {"width": 7}}}')
                ack = _js(await w.wait_for("roombox/box1/config/ack"))
                assert ack["id"] == "bad" and not ack["ok"] and "[stream.width]" in ack["error"]
                status = _js(await w.wait_for("roombox/box1/status", lambda p: _js(p)["config"]["error"] is not None))
                assert "[stream.width]" in status["config"]["error"]
        finally:
            await _stop(task)
        assert not calls

    asyncio.run(scenario())


def test_username_and_password_from_a_file_or_the_environment(
    mosquitto: Callable[..., Broker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = mosquitto(users={"box1": "s3cret-pass", "fleet": "fleet-pass"})
    good = tmp_path / "mqtt.pass"
    good.write_text("s3cret-pass\n")
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("guess\n")

    async def online_with(cfg: MqttConfig) -> FleetClient:
        fleet = FleetClient(cfg, EventBus(), retry_min_s=0.2)
        task = asyncio.create_task(fleet.run())
        try:
            async with Watcher(broker.port, "roombox/box1/availability", "fleet", "fleet-pass") as w:
                await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
        finally:
            await _stop(task)
        return fleet

    async def refused(cfg: MqttConfig) -> FleetClient:
        fleet = FleetClient(cfg, EventBus(), retry_min_s=0.2)
        task = asyncio.create_task(fleet.run())
        try:
            deadline = time.monotonic() + WAIT_S
            while fleet.last_error is None:
                assert time.monotonic() < deadline, "no connection attempt failed"
                await asyncio.sleep(0.05)
            assert not fleet.connected and fleet.connections == 0
        finally:
            await _stop(task)
        return fleet

    fleet = asyncio.run(online_with(_mqtt(broker.port, username="box1", password_file=str(good))))
    assert fleet.connections == 1
    monkeypatch.setenv("FLEET_PW", "s3cret-pass")
    asyncio.run(online_with(_mqtt(broker.port, username="box1", password_env="FLEET_PW")))

    bad = asyncio.run(refused(_mqtt(broker.port, username="box1", password_file=str(wrong))))
    assert "authori" in (bad.last_error or "").lower(), bad.last_error
    health = bad.health()
    assert health is not None and health[0] == "degraded" and f"127.0.0.1:{broker.port}" in health[1]
    asyncio.run(refused(_mqtt(broker.port)))  # anonymous

    with pytest.raises(FleetError, match=r"\[mqtt.password_file\] .*missing"):
        FleetClient(_mqtt(broker.port, username="box1", password_file=str(tmp_path / "missing")))


def test_the_box_reconnects_after_the_broker_restarts(mosquitto: Callable[..., Broker]) -> None:
    broker = mosquitto()

    async def scenario() -> None:
        fleet = FleetClient(_mqtt(broker.port), EventBus(), retry_min_s=0.2)
        task = asyncio.create_task(fleet.run())
        try:
            async with Watcher(broker.port, "roombox/box1/availability") as w:
                await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
            await asyncio.to_thread(broker.stop)
            deadline = time.monotonic() + WAIT_S
            while fleet.connected:
                assert time.monotonic() < deadline, "the lost broker went unnoticed"
                await asyncio.sleep(0.05)
            assert fleet.health() is not None
            await asyncio.sleep(1.0)  # a few failed attempts while the broker is away
            await asyncio.to_thread(broker.start)
            async with Watcher(broker.port, "roombox/box1/availability") as w:
                await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
            assert fleet.connections == 2 and fleet.health() is None
        finally:
            await _stop(task)

    asyncio.run(scenario())


def test_a_clean_stop_says_offline(mosquitto: Callable[..., Broker]) -> None:
    broker = mosquitto()

    async def scenario() -> None:
        fleet = FleetClient(_mqtt(broker.port), EventBus())
        task = asyncio.create_task(fleet.run())
        async with Watcher(broker.port, "roombox/box1/availability") as w:
            await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
            await _stop(task)
            await w.wait_for("roombox/box1/availability", lambda p: p == b"offline", timeout=5.0)

    asyncio.run(scenario())


def test_decode_desired_accepts_the_envelope_plain_json_and_toml() -> None:
    assert decode_desired(b'{"id": "a", "config": {"doa": {}}}') == ({"doa": {}}, "a")
    assert decode_desired(b'{"doa": {"grid_deg": 2}}') == ({"doa": {"grid_deg": 2}}, None)
    assert decode_desired(b"[doa]\ngrid_deg = 2\n") == ({"doa": {"grid_deg": 2}}, None)
    for bad, why in [
        (b"\xff", "UTF-8"),
        (b"[1, 2]", "must be a JSON object or TOML, not a JSON array"),
        (b'"x"', "must be a JSON object or TOML, not a JSON string"),
        (b'{"id": [1], "config": {}}', "id must be"),
        (b'{"id": 1, "x": 2, "config": {}}', "unknown keys"),
        (b" " * (300 * 1024), "too large"),
    ]:
        with pytest.raises(ValueError, match=why):
            decode_desired(bad)
    assert parse_config(decode_desired(b"[doa]\ngrid_deg = 2\n")[0]).doa.grid_deg == 2


def test_tls_with_the_fleets_ca_and_a_client_certificate(mosquitto: Callable[..., Broker], tmp_path: Path) -> None:
    pki = _make_pki(tmp_path)
    broker = mosquitto(tls=pki)

    async def attempt(cfg: MqttConfig) -> FleetClient:
        fleet = FleetClient(cfg, EventBus(), retry_min_s=0.2, timeout_s=3.0)
        task = asyncio.create_task(fleet.run())
        try:
            deadline = time.monotonic() + WAIT_S
            while not fleet.connected and fleet.last_error is None:
                assert time.monotonic() < deadline, "neither connected nor refused"
                await asyncio.sleep(0.05)
        finally:
            await _stop(task)
        return fleet

    ok = asyncio.run(
        attempt(
            _mqtt(
                broker.port, tls=True, ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
            )
        )
    )
    assert ok.connections == 1, ok.last_error
    # the system's CAs do not know the fleet's CA: the box refuses the broker
    untrusted = asyncio.run(attempt(_mqtt(broker.port, tls=True)))
    assert untrusted.connections == 0 and "certificate verify failed" in (untrusted.last_error or "")
    # and the broker refuses a box without a client certificate
    anonymous = asyncio.run(attempt(_mqtt(broker.port, tls=True, ca_file=str(pki.ca))))
    assert anonymous.connections == 0 and anonymous.last_error

    with pytest.raises(FleetError, match=r"\[mqtt.ca_file\]"):
        FleetClient(_mqtt(broker.port, tls=True, ca_file=str(tmp_path / "nope.pem")))
    with pytest.raises(ValueError, match=r"\[mqtt\] .*need tls = true"):
        parse_config({"mqtt": {"ca_file": str(pki.ca)}})


def _recording(calls: list[Config], revision: str) -> Callable[[Config], str]:
    """An ``on_config`` that records each config it is given and answers ``revision``."""

    def apply(cfg: Config) -> str:
        calls.append(cfg)
        return revision

    return apply


def test_a_desired_config_applied_before_is_not_applied_again_over_a_local_change(tmp_path: Path) -> None:
    """The same retained message comes at every connection and at every start. Before, after a local change
    (API, panel) it was either acked from a cache with a stale revision (a reconnection) or applied again,
    undoing the change without notice (a restart). Now its hash is kept: it is acked as applied before, with
    the revision in force, and nothing is applied; a change that needs a restart says so in the ack."""
    calls: list[Config] = []
    running = [Config()]

    class Rev:  # what the box's store returns: the revision and what waits for a restart
        def __init__(self, rid: int, restart: list[str]) -> None:
            self.id, self.restart = rid, restart

    def on_config(cfg: Config) -> Rev:
        calls.append(cfg)
        running[0] = cfg
        return Rev(len(calls), ["stream.fps"] if cfg.stream != Config().stream else [])

    def client() -> FleetClient:
        return FleetClient(
            MqttConfig(box_id="box1"),
            None,
            on_config,
            current_config=lambda: running[0],
            applied_path=tmp_path / "mqtt-desired.sha256",
        )

    desired = b'{"id": "d1", "config": {"director": {"min_hold_s": 3.0}, "stream": {"fps": 10.0}}}'
    fleet = client()
    ack = asyncio.run(fleet.handle_desired(desired))
    assert ack == {"id": "d1", "ok": True, "revision": 1, "restart_required": ["stream.fps"]}
    running[0] = running[0].model_copy(update={"director": running[0].director.model_copy(update={"min_hold_s": 5.0})})
    fleet.revision = 7  # a local change, as the box's store tells the fleet
    again = asyncio.run(fleet.handle_desired(desired))  # a reconnection
    assert again == {"id": "d1", "ok": True, "revision": 7, "changed_since": True, "applied_before": True}
    restarted = client()  # a restart: the hash was kept
    restarted.revision = 7
    assert asyncio.run(restarted.handle_desired(desired))["applied_before"] is True
    assert len(calls) == 1 and running[0].director.min_hold_s == 5.0  # the local change stands
    newer = b'{"id": "d2", "config": {"director": {"min_hold_s": 4.0}}}'
    assert asyncio.run(restarted.handle_desired(newer))["revision"] == 2 and len(calls) == 2


def test_a_fleet_link_that_cannot_start_leaves_the_box_running_and_is_refused_when_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config with [mqtt] tls and a CA file that is not there: before, it was accepted (over MQTT or the API),
    and the next start failed (exit 2), taking the camera, the panel and the API down with the fleet link."""
    from appliance.app import _fleet
    from appliance.box import RoomBox
    from appliance.control import Control
    from appliance.control.metrics import HealthCheck
    from appliance.perception.faces import FaceDetector
    from appliance.streaming.hub import LatestFrame
    from drivers.files import FileCamera, WavMicArray

    monkeypatch.setenv("ROOMBOX_HOME", str(tmp_path))
    bad = Config.model_validate({"mqtt": {"enabled": True, "tls": True, "ca_file": str(tmp_path / "ca.pem")}})
    health = HealthCheck(EventBus(), None)
    control = Control.for_box(bad, home=tmp_path)
    assert _fleet(bad, EventBus(), control, lambda cfg: [], health) is None
    verdict = health.evaluate()
    assert verdict["status"] == "degraded" and "mqtt: fleet link not started: [mqtt.ca_file]" in verdict["reasons"][0]
    with FaceDetector() as detector:
        box = RoomBox(
            Config(), FileCamera(tmp_path / "a.mp4"), WavMicArray(tmp_path / "a.wav"), detector, LatestFrame(), None,
            EventBus(),
        )  # fmt: skip
        with pytest.raises(FleetError, match=r"\[mqtt.ca_file\]"):
            box.on_config(bad)  # the store then refuses the config: the running box cannot apply it


async def _until(what: str, cond: Callable[[], object], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


def _statuses_of(w: Watcher, topic: str, instance: str) -> int:
    """How many statuses ``instance`` published live (not those the broker kept) that ``w`` saw."""
    return sum(1 for t, p, r in w.messages if t == topic and not r and p and _js(p).get("instance") == instance)


def test_two_boxes_with_one_box_id_both_stay_connected_and_each_reports_the_other(
    mosquitto: Callable[..., Broker], caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 6: two boxes with box_id boxA took each other's connection in turn (one client id, 17 takeovers in
    40 s), silently. Now each run has a client id of its own, both stay connected, and each sees the other's
    status on its own topic: logged once, health degraded naming the cause."""
    broker = mosquitto()
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, box_id="boxA", keepalive_s=5, telemetry_s=1.0)

    async def scenario() -> None:
        a, b = FleetClient(cfg, EventBus(), retry_min_s=0.2), FleetClient(cfg, EventBus(), retry_min_s=0.2)
        assert a.identifier != b.identifier
        ta, tb = asyncio.create_task(a.run()), asyncio.create_task(b.run())
        try:
            async with Watcher(broker.port, "roombox/boxA/#") as w:
                await _until("both boxes notice the other", lambda: a.conflict() and b.conflict())
                for fleet in (a, b):
                    health = fleet.health()
                    assert health is not None and health[0] == "degraded", health
                    assert "another box uses box_id boxA; give each box its own [mqtt] box_id" in health[1], health
                # both stay connected: no takeover, no flapping
                n_a = _statuses_of(w, "roombox/boxA/status", a.instance)
                n_b = _statuses_of(w, "roombox/boxA/status", b.instance)
                await _until(
                    "three more statuses from each",
                    lambda: (
                        _statuses_of(w, "roombox/boxA/status", a.instance) >= n_a + 3
                        and _statuses_of(w, "roombox/boxA/status", b.instance) >= n_b + 3
                    ),
                )
                assert a.connections == 1 and b.connections == 1 and a.connected and b.connected
                said = [r for r in caplog.records if "another box uses box_id boxA" in r.getMessage()]
                assert len(said) == 2, [r.getMessage() for r in said]  # once by each box, not at every status
                # one stops: its goodbye says offline, and the other, still up, says online again
                mark = len(w.messages)
                await _stop(ta)
                await w.wait_for("roombox/boxA/availability", lambda p: p == b"offline", since=mark)
                mark = len(w.messages) - 1
                await w.wait_for("roombox/boxA/availability", lambda p: p == b"online", since=mark)
        finally:
            await _stop(ta)
            await _stop(tb)

    with caplog.at_level("ERROR", logger="appliance.control.mqtt"):
        asyncio.run(scenario())


def test_a_box_restarted_after_a_hang_is_no_conflict_and_stays_online(mosquitto: Callable[..., Broker]) -> None:
    """A box restarted while the broker still holds its old, dead connection (here: the old process stopped
    with SIGSTOP, so its socket stays open): the old connection's status is retained and its last will comes
    later; neither is another box, and the will's offline is answered online."""
    broker = mosquitto()
    old = subprocess.Popen(
        [sys.executable, "-c", BOX_SCRIPT, str(broker.port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def scenario() -> None:
        try:
            async with Watcher(broker.port, "roombox/box1/#") as w:
                old_instance = _js(await w.wait_for("roombox/box1/status"))["instance"]
                old.send_signal(signal.SIGSTOP)  # hung: its connection is neither used nor closed
                fleet = FleetClient(_mqtt(broker.port, telemetry_s=1.0), EventBus(), retry_min_s=0.2)
                assert fleet.instance != old_instance
                mark = len(w.messages)
                task = asyncio.create_task(fleet.run())
                try:
                    await w.wait_for("roombox/box1/availability", lambda p: p == b"online", since=mark)
                    # the broker gives up on the old connection after 1.5 keep-alives (5 s): its will says offline
                    await w.wait_for("roombox/box1/availability", lambda p: p == b"offline", WAIT_S * 2, since=mark)
                    mark = len(w.messages) - 1
                    await w.wait_for("roombox/box1/availability", lambda p: p == b"online", since=mark)
                    n = _statuses_of(w, "roombox/box1/status", fleet.instance)
                    await _until(
                        "two more statuses", lambda: _statuses_of(w, "roombox/box1/status", fleet.instance) >= n + 2
                    )
                    assert fleet.conflict() is None and fleet.health() is None, fleet.health()
                    assert fleet.connections == 1
                finally:
                    await _stop(task)
        finally:
            old.kill()
            old.wait(WAIT_S)

    asyncio.run(scenario())


def _box_id_run(port: int, home: Path, box_id: str, prefix: str = "roombox", desired: str | None = None) -> None:
    """A box with a camera runs under ``prefix/box_id`` (with ``home`` as its state directory) until its status
    is out, takes ``desired`` if given, and stops cleanly."""
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=port, box_id=box_id, topic_prefix=prefix, keepalive_s=5)
    running = [Config(mqtt=cfg)]

    def on_config(new: Config) -> str:
        running[0] = new
        return "r2"

    async def scenario() -> None:
        events = EventBus()
        events.publish(DeviceStatus("camera", "running"))
        fleet = FleetClient(cfg, events, on_config, current_config=lambda: running[0], state_dir=home)
        task = asyncio.create_task(fleet.run())
        try:
            async with Watcher(port, f"{prefix}/{box_id}/#") as w:
                # the status comes after the old topics were cleared and the discovery entries announced
                await w.wait_for(f"{prefix}/{box_id}/status")
                if desired is not None:
                    await w.publish(f"{prefix}/{box_id}/config/set", desired)
                    await w.wait_for(f"{prefix}/{box_id}/config/ack")
        finally:
            await _stop(task)

    asyncio.run(scenario())


def _retained(port: int) -> dict[str, bytes]:
    async def look() -> dict[str, bytes]:
        async with Watcher(port, "#") as w:
            return await w.retained()

    return asyncio.run(look())


def test_after_a_box_id_or_prefix_change_the_old_retained_topics_are_cleared(
    mosquitto: Callable[..., Broker], tmp_path: Path
) -> None:
    """Finding 2: after box_id boxA became boxC (at a restart), roombox/boxA/ kept its retained availability,
    status and the Home Assistant entries: a ghost box. Now the box keeps the topics it publishes in its state
    directory and clears those of the id it ran under before."""
    broker = mosquitto()
    home = tmp_path / "home"
    _box_id_run(broker.port, home, "boxA", desired='{"id": "d1", "config": {"director": {"min_hold_s": 3.0}}}')
    before = _retained(broker.port)
    ha_a = "homeassistant/sensor/roombox_boxA"
    assert before["roombox/boxA/availability"] == b"offline"
    for topic in (
        "roombox/boxA/status",
        "roombox/boxA/config/ack",
        f"{ha_a}/shot_mode/config",
        f"{ha_a}/device_camera/config",
    ):
        assert topic in before, sorted(before)

    _box_id_run(broker.port, home, "boxB")
    after = _retained(broker.port)
    assert not [t for t in after if "boxA" in t], sorted(after)
    assert (
        after["roombox/boxB/availability"] == b"offline"
        and "homeassistant/sensor/roombox_boxB/device_camera/config" in after
    )

    _box_id_run(broker.port, home, "boxB", prefix="fleet")  # a new topic prefix, the same id
    moved = _retained(broker.port)
    assert not [t for t in moved if t.startswith("roombox/")], sorted(moved)
    assert moved["fleet/boxB/availability"] == b"offline"
    entry = _js(moved["homeassistant/sensor/roombox_boxB/shot_mode/config"])  # announced again, for the new topics
    assert entry["state_topic"] == "fleet/boxB/status" and entry["availability_topic"] == "fleet/boxB/availability"


def test_the_topics_of_an_old_id_another_box_now_runs_under_are_left_to_it(
    mosquitto: Callable[..., Broker], tmp_path: Path
) -> None:
    """Ids swapped between boxes: box 1 was boxA and is now boxB, while box 2 is online as boxA. Box 1 must not
    clear box 2's topics (its Home Assistant entries would be deleted)."""
    broker = mosquitto()
    _box_id_run(broker.port, tmp_path / "home1", "boxA")

    async def scenario() -> None:
        other = FleetClient(
            _mqtt(broker.port).model_copy(update={"box_id": "boxA"}), EventBus(), state_dir=tmp_path / "home2"
        )
        task = asyncio.create_task(other.run())
        try:
            async with Watcher(broker.port, "roombox/boxA/status") as w:
                await w.wait_for("roombox/boxA/status", lambda p: _js(p)["instance"] == other.instance)
            await asyncio.to_thread(_box_id_run, broker.port, tmp_path / "home1", "boxB")
            kept = await asyncio.to_thread(_retained, broker.port)
            assert kept["roombox/boxA/availability"] == b"online"
            assert _js(kept["roombox/boxA/status"])["instance"] == other.instance
            assert "homeassistant/sensor/roombox_boxA/shot_mode/config" in kept, sorted(kept)
            assert other.conflict() is None
        finally:
            await _stop(task)
        # and box 1 forgot them: they are box 2's now
        record = json.loads((tmp_path / "home1" / "mqtt-retained.json").read_text())
        assert not [t for entry in record["ids"] for t in entry["topics"] if "boxA" in t], record

    asyncio.run(scenario())


def test_a_subscription_the_broker_refuses_is_reported(
    mosquitto: Callable[..., Broker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 7: the box ignored the SUBACK. mosquitto's acl_file grants a denied subscription and drops the
    messages (no client can tell); its dynamic-security plugin refuses it (0x80 in MQTT 3.1.1's SUBACK), as
    other brokers do: the box now says so, in its log and its health."""
    broker = mosquitto(users={"box1": "pw", "fleet": "fpw"}, deny_subscribe=["roombox/box1/config/set"])
    pw = tmp_path / "box1.pass"
    pw.write_text("pw\n")

    async def scenario() -> None:
        fleet = FleetClient(_mqtt(broker.port, username="box1", password_file=str(pw)), EventBus(), retry_min_s=0.2)
        task = asyncio.create_task(fleet.run())
        try:
            async with Watcher(broker.port, "roombox/box1/#", "fleet", "fpw") as w:
                await w.wait_for("roombox/box1/status")  # the box reports, connected
                await _until("the refusal noticed", lambda: fleet.connected and fleet.health() is not None)
                health = fleet.health()
                assert health == (
                    "degraded",
                    "the broker refused the subscription to roombox/box1/config/set: check its ACL",
                ), health
                assert fleet.connections == 1
        finally:
            await _stop(task)

    with caplog.at_level("ERROR", logger="appliance.control.mqtt"):
        asyncio.run(scenario())
    assert any("refused the subscription to roombox/box1/config/set" in r.getMessage() for r in caplog.records)


def test_a_desired_payload_that_is_not_an_object_is_told_what_was_expected() -> None:
    """Finding 7: an array or null got a TOML parse error, JSON with a byte-order mark was refused, ``"id": true``
    was taken as an id and a 5000-digit id's refusal carried Python's advice to its programmers."""
    for payload, kind in [(b"[1, 2, 3]", "a JSON array"), (b"null", "JSON null"), (b"12", "a JSON number")]:
        with pytest.raises(ValueError, match=f"desired config must be a JSON object or TOML, not {kind}$"):
            decode_desired(payload)
    assert decode_desired('\ufeff{"doa": {"grid_deg": 2}}'.encode()) == ({"doa": {"grid_deg": 2}}, None)
    assert decode_desired("\ufeff[doa]\ngrid_deg = 2\n".encode()) == ({"doa": {"grid_deg": 2}}, None)
    with pytest.raises(ValueError, match="id must be a string or an integer, not JSON true"):
        decode_desired(b'{"id": true, "config": {"doa": {}}}')
    fleet = FleetClient(MqttConfig(box_id="box1"), None, _recording([], "r1"), current_config=Config)
    ack = asyncio.run(fleet.handle_desired(('{"id": ' + "7" * 5000 + ', "config": {"doa": {}}}').encode()))
    assert ack["ok"] is False and "an integer of more than 4300 digits" in ack["error"], ack
    assert "sys." not in ack["error"]


def test_an_unset_password_variable_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 7: ``password_env`` naming a variable that is not set gave no password, and the log said only
    "Not authorized". Now it is refused like a missing password file: by the running box (a config naming it)
    and at start (the box runs on without its fleet link, health degraded, naming the variable)."""
    from appliance.app import _fleet
    from appliance.control import Control
    from appliance.control.metrics import HealthCheck
    from appliance.control.mqtt_link import read_password

    monkeypatch.delenv("ROOMBOX_TEST_PW", raising=False)
    monkeypatch.setenv("ROOMBOX_HOME", str(tmp_path))
    cfg = MqttConfig(enabled=True, box_id="box1", username="box1", password_env="ROOMBOX_TEST_PW")
    named = r"\[mqtt.password_env\] the environment variable ROOMBOX_TEST_PW is not set"
    with pytest.raises(FleetError, match=named):
        FleetClient(cfg)
    with pytest.raises(FleetError, match=named):
        read_password(cfg)
    full = Config(mqtt=cfg)
    health = HealthCheck(EventBus(), None)
    assert _fleet(full, EventBus(), Control.for_box(full, home=tmp_path), lambda c: [], health) is None
    assert "ROOMBOX_TEST_PW is not set" in health.evaluate()["reasons"][0]
    assert read_password(cfg, {"ROOMBOX_TEST_PW": ""}) is None  # set but empty: a user name without password
    assert read_password(cfg.model_copy(update={"username": ""})) is None  # no user: no password needed


def test_tls_against_a_plain_listener_says_tls_in_the_error(mosquitto: Callable[..., Broker]) -> None:
    """Finding 7: the log said only "[Errno 104] Connection reset by peer"."""
    broker = mosquitto()

    async def attempt() -> FleetClient:
        fleet = FleetClient(_mqtt(broker.port, tls=True), EventBus(), retry_min_s=0.2, timeout_s=3.0)
        task = asyncio.create_task(fleet.run())
        try:
            await _until("a failed attempt", lambda: fleet.last_error is not None)
        finally:
            await _stop(task)
        return fleet

    fleet = asyncio.run(attempt())
    assert fleet.connections == 0
    assert f"the TLS handshake failed: is 127.0.0.1:{broker.port} a TLS listener?" in (fleet.last_error or ""), (
        fleet.last_error
    )


def test_an_ack_lost_with_the_broker_is_sent_again_after_the_reconnection(mosquitto: Callable[..., Broker]) -> None:
    """Finding 8: the broker died while the box applied a desired config; the config was applied, and its ack
    never sent. Now the last ack is retained, and one the broker had not confirmed is published again at the
    next connection (a fleet client that was away too finds it on the ack topic)."""
    broker = mosquitto()
    entered, release = asyncio.Event(), asyncio.Event()
    applied: list[Config] = []

    async def on_config(cfg: Config) -> str:
        applied.append(cfg)
        entered.set()
        await release.wait()  # the broker goes down meanwhile
        return "r62"

    async def scenario() -> None:
        fleet = FleetClient(_mqtt(broker.port), EventBus(), on_config, current_config=Config, retry_min_s=0.2)
        task = asyncio.create_task(fleet.run())
        try:
            async with Watcher(broker.port, "roombox/box1/#") as w:
                await w.wait_for("roombox/box1/availability", lambda p: p == b"online")
                await w.publish("roombox/box1/config/set", '{"id": "k62", "config": {"director": {"min_hold_s": 3.0}}}')
                await asyncio.wait_for(entered.wait(), WAIT_S)
            await asyncio.to_thread(broker.stop)  # by its PID, while the box applies the config
            release.set()
            await _until("the lost broker noticed", lambda: not fleet.connected)
            await asyncio.to_thread(broker.start)
            async with Watcher(broker.port, "roombox/box1/config/ack") as w:
                ack = _js(await w.wait_for("roombox/box1/config/ack"))
                assert ack == {"id": "k62", "ok": True, "revision": "r62"}, ack
            await _until("reconnected", lambda: fleet.connected)
            assert fleet.connections == 2 and len(applied) == 1
            async with Watcher(broker.port, "roombox/box1/config/ack") as late:  # retained, for whoever comes later
                assert _js((await late.retained())["roombox/box1/config/ack"])["id"] == "k62"
        finally:
            await _stop(task)

    asyncio.run(scenario())


def test_a_fleet_wide_document_keeps_what_is_the_boxs_own() -> None:
    """A sweep of the fleet link: a document without the box's devices (as one sent to every box is) put the
    default file camera in their place, acked ok, and the box did not start again; a ``[mqtt]`` of one key put
    every other key of the link back to its default (enabled = false), and ``enabled = false`` was taken: both
    cut the fleet off the box for good. Now the box's own sections are kept where the document has none, an
    ``[mqtt]`` changes the keys it names, and switching the link off from the fleet is refused."""
    running = [
        Config.model_validate(
            {
                "cameras": {"main": {"type": "rtsp", "url": "rtsp://127.0.0.1:8554/room"}},
                "mic_arrays": {"main": {"type": "sounddevice", "device": "ReSpeaker", "preset": "respeaker-usb-4mic"}},
                "calibration": {"points": [[-40.0, -45.0], [0.0, 0.0], [40.0, 44.0]], "gain_db": 4.0},
                "panel": {"host": "0.0.0.0", "port": 8443},
                "mqtt": {"enabled": True, "host": "broker.example", "box_id": "room-12", "port": 8883},
            }
        )
    ]
    calls: list[Config] = []

    def apply(cfg: Config) -> int:
        calls.append(cfg)
        running[0] = cfg
        return len(calls)

    fleet = FleetClient(running[0].mqtt, None, apply, current_config=lambda: running[0])
    own = running[0]
    ack = asyncio.run(fleet.handle_desired(b'{"id": "f1", "config": {"director": {"min_hold_s": 2.0}}}'))
    assert ack == {"id": "f1", "ok": True, "revision": 1}, ack
    cfg = calls[-1]
    assert cfg.director.min_hold_s == 2.0
    for key in ("cameras", "mic_arrays", "calibration", "panel", "mqtt"):
        assert getattr(cfg, key) == getattr(own, key), key
    ack = asyncio.run(fleet.handle_desired(b'{"id": "f2", "config": {"mqtt": {"telemetry_s": 30}}}'))
    assert ack["ok"] and calls[-1].mqtt == own.mqtt.model_copy(update={"telemetry_s": 30.0}), ack
    assert calls[-1].director.min_hold_s == DirectorDefaults.min_hold_s  # any other section: as the document says
    ack = asyncio.run(fleet.handle_desired(b'{"id": "f3", "config": {"mqtt": {"enabled": false}}}'))
    assert ack["ok"] is False and ack["error"].startswith("[mqtt.enabled] a desired config may not switch"), ack
    assert len(calls) == 2 and running[0].mqtt.enabled
    given = b'{"id": "f4", "config": {"cameras": {"main": {"type": "rtsp", "url": "rtsp://127.0.0.1/b"}}}}'
    assert (
        asyncio.run(fleet.handle_desired(given))["ok"]
        and str(getattr(calls[-1].camera, "url", "")) == "rtsp://127.0.0.1/b"
    )
    assert calls[-1].mic_arrays == own.mic_arrays  # the sections not given stay the box's


class DirectorDefaults:
    min_hold_s = Config().director.min_hold_s


def test_a_desired_config_applied_before_says_when_a_change_at_the_box_stands_over_it(tmp_path: Path) -> None:
    """A sweep: the same desired config sent again after a change at the box was acked "unchanged" while
    another config was in force. It is still not applied again (a retained message comes back at every
    connection), but the ack says the config in force differs (``changed_since``)."""
    running = [Config()]

    def apply(cfg: Config) -> int:
        running[0] = cfg
        return 5

    fleet = FleetClient(
        MqttConfig(box_id="box1"), None, apply, current_config=lambda: running[0], applied_path=tmp_path / "a.sha256"
    )
    desired = b'{"id": "d1", "config": {"director": {"min_hold_s": 3.0}}}'
    assert asyncio.run(fleet.handle_desired(desired))["revision"] == 5
    again = asyncio.run(fleet.handle_desired(desired))
    assert again == {"id": "d1", "ok": True, "revision": 5, "applied_before": True, "unchanged": True}, again
    running[0] = Config.model_validate({"director": {"min_hold_s": 9.0}})  # the API, at the box
    fleet.config_written(6)
    again = asyncio.run(fleet.handle_desired(desired))
    assert again == {"id": "d1", "ok": True, "revision": 6, "applied_before": True, "changed_since": True}, again
    assert running[0].director.min_hold_s == 9.0


def test_a_config_saved_at_the_box_clears_the_error_of_a_desired_config_refused_before() -> None:
    """A sweep: ``status.config.error`` kept a refused desired config's error after a good config was saved
    through the API, beside the new revision."""
    fleet = FleetClient(MqttConfig(box_id="box1"), None, _recording([], "r1"), current_config=Config)
    ack = asyncio.run(fleet.handle_desired(b'{"director": {"min_hold_s": -1}}'))
    assert ack["ok"] is False and fleet.status()["config"]["error"] == ack["error"]
    fleet.config_written(61)
    assert fleet.status()["config"] == {"revision": 61, "error": None}


def test_attempts_that_fail_slowly_back_off(caplog: pytest.LogCaptureFixture) -> None:
    """A sweep: against a broker that takes the connection and never answers, each attempt timed out after
    ``timeout_s``, longer than the pause, so the pause started over every time and never grew; and the jitter
    took waits past ``retry_max_s``. Now the back-off starts over only after a connection that held."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)  # takes connections (the kernel's backlog) and never says a word

    async def scenario() -> None:
        cfg = _mqtt(hole.getsockname()[1], retry_max_s=1.0)
        fleet = FleetClient(cfg, None, retry_min_s=0.2, timeout_s=0.3)
        task = asyncio.create_task(fleet.run())
        try:
            await _until("four attempts", lambda: _waits(caplog) and len(_waits(caplog)) >= 4, timeout=60)
        finally:
            await _stop(task)

    try:
        with caplog.at_level("INFO", logger="appliance.control.mqtt"):
            asyncio.run(scenario())
    finally:
        hole.close()
    waits = _waits(caplog)[:4]
    assert any("the fleet link has no user name: whoever can publish" in r.getMessage() for r in caplog.records)
    assert waits[1] > waits[0] and waits[2] > waits[1] and waits[2] > 2.5 * waits[0], waits
    assert max(_waits(caplog)) <= 1.0, waits


def _waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [float(r.getMessage().split()[-2]) for r in caplog.records if "reconnecting in" in r.getMessage()]


def test_a_password_mended_on_the_box_is_taken_at_the_next_attempt(
    mosquitto: Callable[..., Broker], tmp_path: Path
) -> None:
    """A sweep: the password file was read once, at start, so a box given a wrong password (or a rotated one)
    kept failing until someone restarted it; the error did not say what to check. Now it is read at every
    attempt, and a refusal names the keys."""
    broker = mosquitto(users={"box1": "pw"})
    pw = tmp_path / "box1.pass"
    pw.write_text("wrong\n")

    async def scenario() -> None:
        fleet = FleetClient(_mqtt(broker.port, username="box1", password_file=str(pw)), None, retry_min_s=0.2)
        task = asyncio.create_task(fleet.run())
        try:
            await _until("a refusal", lambda: fleet.last_error is not None)
            assert "the broker refused the credentials: check [mqtt] username (box1) and password_file" in str(
                fleet.last_error
            ), fleet.last_error
            pw.write_text("pw\n")
            await _until("connected with the mended password", lambda: fleet.connected)
        finally:
            await _stop(task)

    asyncio.run(scenario())
