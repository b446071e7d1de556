"""The broker connection: gmqtt underneath, with the lifecycle an edge agent needs.

- MQTT 5 first, falling back to 3.1.1 when the broker refuses 5 (``mqtt.protocol: auto``);
- fixed client id and a persistent session (clean start off, session expiry), so readings the
  broker queued while the agent was away are delivered when it returns;
- one supervisor task owns (re)connection, with capped exponential backoff and jitter. gmqtt's
  own reconnect is switched off: it retries at a fixed delay and gives up on refusals such as
  a wrong password, where a gateway must keep trying and keep saying why;
- after every connect: resubscribe, then the owner's ``on_connected`` hook runs (birth message,
  outbox replay);
- PUBACKs are reported per packet id, with their MQTT 5 reason code, so the outbox deletes a
  message only once the broker has it, and a refused publish (ACL) is reported, not lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from edge_agent import mqtt_framing
from edge_agent.config import MqttConfig, read_secret
from edge_agent.mqtt_limits import MAX_PACKET_BYTES, check_publish, properties_bytes

mqtt_framing.install()

log = logging.getLogger(__name__)

_CONNACK_HINTS = {
    4: "bad user name or password (check mqtt.username and mqtt.password_file)",
    5: "not authorised (check mqtt.username, mqtt.password_file and the broker ACL)",
    0x86: "bad user name or password (check mqtt.username and mqtt.password_file)",
    0x87: "not authorised (check mqtt.username, mqtt.password_file and the broker ACL)",
    0x85: "client identifier not valid (check mqtt.client_id)",
    2: "client identifier rejected (check mqtt.client_id)",
}


def backoff_delays(initial: float, cap: float, jitter: float, rng: random.Random | None = None):
    """Capped exponential backoff with proportional jitter, as an endless generator."""
    rng = rng or random.Random()
    delay = initial
    while True:
        yield delay * (1 - jitter + 2 * jitter * rng.random())
        delay = min(cap, delay * 2)


class _AckStorage(PersistentStorage):
    """gmqtt's in-flight store, used only to learn packet ids and their acknowledgements."""

    def __init__(self, link: MqttLink) -> None:
        super().__init__()
        self.link = link
        self.last_mid = 0

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self.last_mid = mid
        super().push_message(mid, raw_package)


class _Client(gmqtt.Client):
    link: MqttLink

    async def reconnect(self, delay: bool = False) -> None:  # noqa: ARG002 - gmqtt's signature
        # gmqtt calls this on connection loss, refusal and protocol downgrade; the supervisor
        # decides what happens next.
        self.link._lost_event().set()


class MqttLink:
    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        on_message: Callable[[str, bytes, int, dict[str, Any]], None],
        on_connected: Callable[[], Awaitable[None]],
        on_disconnected: Callable[[], None],
        on_ack: Callable[[int, int], None],
        will: tuple[str, bytes] | Callable[[], tuple[str, bytes, int, bool]] | None = None,
        on_oversize: Callable[[str, int], None] | None = None,
        max_packet_bytes: int = 0,
        before_connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.on_ack = on_ack
        # (topic, payload): retained QoS 1; or a function giving (topic, payload, qos, retain)
        # afresh for every CONNECT (a Sparkplug NDEATH carries the connection's bdSeq).
        self.will = will
        self.before_connect = before_connect
        self.on_oversize = on_oversize
        self.max_packet_bytes = max_packet_bytes
        self.subscriptions: list[tuple[str, int]] = []
        self.client: _Client | None = None
        self.connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self._wake = asyncio.Event()
        self.version: int = MQTTv311 if cfg.protocol == "3.1.1" else MQTTv50
        self.receive_maximum = 65535
        # The broker's Maximum Packet Size from its last CONNACK (MQTT 5); MQTT's own limit
        # when it advertises none. Nothing larger is ever written to the socket.
        self.max_packet = self._configured_max_packet()
        # Reason code of the broker's last DISCONNECT (MQTT 5), None for a plain socket loss.
        self.disconnect_reason: int | None = None
        self.connect_times: deque[float] = deque(maxlen=64)  # monotonic, for flapping detection
        self.reconnects = 0
        self.connects = 0
        self.last_error: str | None = None
        self.password = read_secret(cfg.password_file)
        self.ack_gate: Callable[[], bool] = lambda: True
        self._acks: list[bytes] = []
        self._ack_conn: Any = None
        self._ack_since = 0.0
        self._ack_scheduled = False
        self._ack_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_event_loop()

    def _configured_max_packet(self) -> int:
        # mqtt.max_packet_bytes: for brokers that enforce a limit without advertising it
        # (MQTT 3.1.1 has no way to); 0 leaves it to the broker's CONNACK and MQTT's limit.
        return min(self.cfg.max_packet_bytes or MAX_PACKET_BYTES, MAX_PACKET_BYTES)

    def _lost_event(self) -> asyncio.Event:
        return self._lost

    def _on_disconnect_packet(self, packet: Any = None, *_: Any) -> None:
        # A broker's DISCONNECT carries a reason code (MQTT 5): 0x95 "packet too large" and
        # 0x90 "topic name invalid" blame the message just sent (see Agent.on_disconnected).
        if isinstance(packet, (bytes, bytearray)) and packet:
            self.disconnect_reason = packet[0]
        self._lost.set()

    def recent_connects(self, window_s: float) -> int:
        """Successful connects within the last ``window_s`` seconds."""
        now = time.monotonic()
        return sum(1 for t in self.connect_times if now - t <= window_s)

    @property
    def protocol(self) -> str:
        return "5" if self.version == MQTTv50 else "3.1.1"

    @property
    def inflight_window(self) -> int:
        # gmqtt refuses to allocate the last id below receive maximum; stay under it.
        return max(1, min(self.cfg.max_inflight, self.receive_maximum - 2))

    # ---- connection ----------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext | bool:
        tls = self.cfg.tls
        if not tls.enabled:
            return False
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        ctx.check_hostname = tls.verify_hostname
        if not tls.verify_hostname:
            # Hostname checks off is an explicit config choice; the chain is still verified.
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _new_client(self) -> _Client:
        props: dict[str, Any] = {}
        if self.version == MQTTv50:
            props["session_expiry_interval"] = int(self.cfg.session_expiry_s)
        will = None
        if callable(self.will):
            w_topic, w_payload, w_qos, w_retain = self.will()
            will = gmqtt.Message(w_topic, w_payload, qos=w_qos, retain=w_retain)
        elif self.will is not None:
            will = gmqtt.Message(self.will[0], self.will[1], qos=1, retain=True)
        client = _Client(
            self.client_id,
            clean_session=self.cfg.clean_start,
            optimistic_acknowledgement=True,
            will_message=will,
            persistent_storage=_AckStorage(self),
            logger=logging.getLogger("edge_agent.gmqtt"),
            **props,
        )
        client.link = self
        if self.cfg.username:
            client.set_auth_credentials(self.cfg.username, self.password)
        client.on_message = self._dispatch
        client.on_disconnect = self._on_disconnect_packet
        handler = client._package_handler
        original = handler._handle_puback_packet

        def puback(cmd: int, packet: bytes) -> None:
            (mid,) = struct.unpack("!H", packet[:2])
            reason = packet[2] if len(packet) > 2 else 0
            original(cmd, packet)
            self.on_ack(mid, reason)

        handler._handle_puback_packet = puback
        self._install_fast_publish(client)
        return client

    def _install_fast_publish(self, client: _Client) -> None:
        """A lean path for the packets that matter: plain QoS 0/1 PUBLISH (sensor readings).

        gmqtt handles each PUBLISH with several layers of generic code and answers every
        QoS 1 message with its own PUBACK write, i.e. one syscall per reading: a third of
        the receive cost. Here the packet is parsed in place, dispatched, and the PUBACKs of
        one read burst are written together, in order, after the burst was processed — and
        only once ``ack_gate()`` says every alarm those readings raised is committed (see
        ``release_acks``). Anything unusual (QoS 2, MQTT 5 properties such as response
        topics or topic aliases, a topic that is not UTF-8) goes through gmqtt's own
        handler, after the pending acks, to keep their order.
        """
        handler = client._package_handler
        original = handler._handle_publish_packet
        unpack_from = struct.unpack_from
        dispatch = self.on_message
        pack_ack = struct.Struct("!BBH").pack
        self._acks = acks = []
        self._ack_conn = None

        def queue_ack(mid: int) -> None:
            if not acks:
                self._ack_conn = handler._connection
                self._ack_since = time.monotonic()
            acks.append(pack_ack(0x40, 2, mid))
            if not self._ack_scheduled:
                self._ack_scheduled = True
                self._loop.call_soon(self._flush_acks)

        def fast(cmd: int, raw: bytes) -> None:
            qos = (cmd & 0x06) >> 1
            try:
                (slen,) = unpack_from("!H", raw, 0)
                pos = 2 + slen
                if qos == 1:
                    (mid,) = unpack_from("!H", raw, pos)
                    pos += 2
                elif qos:
                    raise ValueError("QoS 2")
                if client._connection_state.protocol_version >= MQTTv50:
                    if raw[pos] != 0:  # properties present: let gmqtt parse them
                        raise ValueError("properties")
                    pos += 1
                topic = raw[2:2 + slen].decode("utf-8")
                if not topic:
                    raise ValueError("topic alias")
            except (ValueError, IndexError, struct.error, UnicodeDecodeError):
                self._flush_acks(force=True)
                original(cmd, raw)
                return
            dispatch(topic, raw[pos:], qos, _NO_PROPS)
            if qos == 1:
                queue_ack(mid)

        handler._handle_publish_packet = fast

        def oversize(topic: bytes, qos: int, mid: int, size: int) -> None:
            # Called by mqtt_framing for a PUBLISH too big to read: its payload is discarded
            # unread, but it is still counted, and acknowledged like any other reading.
            if self.on_oversize is not None:
                self.on_oversize(topic.decode("utf-8", "replace"), size)
            if qos == 1:
                queue_ack(mid)

        if self.max_packet_bytes and self.on_oversize is not None:
            handler.edge_max_packet = self.max_packet_bytes
            handler.edge_oversize = oversize

    def release_acks(self) -> None:
        """Called when the outbox committed: held PUBACKs may go now."""
        if self._acks:
            self._flush_acks()

    def _flush_acks(self, force: bool = False) -> None:
        self._ack_scheduled = False
        acks = self._acks
        if not acks:
            return
        if not force and not self.ack_gate() and time.monotonic() - self._ack_since < _ACK_HOLD_MAX_S:
            # Alarms from these readings are still being committed; the outbox's commit
            # callback releases the acks. The timer is a backstop should the outbox stall.
            if self._ack_timer is None or self._ack_timer.cancelled():
                self._ack_timer = self._loop.call_later(_ACK_HOLD_MAX_S, self._flush_acks)
            return
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        conn = self._ack_conn
        data = b"".join(acks)
        acks.clear()
        # Acks belong to the connection that delivered the readings; on a new connection the
        # broker redelivers them instead (persistent session), which is what we want.
        if conn is not None and self.client is not None and self.client._package_handler._connection is conn:
            try:
                conn.send_package(data)
            except Exception as exc:
                log.debug("could not send PUBACKs: %r", exc)

    def _dispatch(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        self.on_message(topic, payload, qos, properties)
        return 0

    async def _connect_once(self) -> None:
        self._lost.clear()
        if self.before_connect is not None:
            await self.before_connect()
        client = self._new_client()
        self.client = client
        ctx = self._ssl_context()
        connect = asyncio.ensure_future(
            client.connect(self.cfg.host, self.cfg.port, ssl=ctx, keepalive=self.cfg.keepalive_s, version=self.version)
        )
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({connect, lost}, timeout=self.cfg.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if connect not in done:
            connect.cancel()
            downgraded = client._connection_state.protocol_version == MQTTv311 and self.version == MQTTv50
            await self._close_client(client)
            reason = "connection closed by the broker" if self._lost.is_set() else f"no CONNACK within {self.cfg.connect_timeout_s:g} s"
            if self.cfg.protocol == "auto":
                if self.version == MQTTv50:
                    # Some 3.1.1-only brokers refuse v5 with CONNACK 1 (gmqtt downgrades), others
                    # close the socket or never answer: all mean "try 3.1.1", at once.
                    log.info("broker did not accept MQTT 5 (%s); falling back to MQTT 3.1.1", "refused" if downgraded else reason)
                    self.version = MQTTv311
                    raise _RetryNow()
                # 3.1.1 failed the same way: the broker may be a slow v5 one; alternate.
                self.version = MQTTv50
            raise ConnectionError(reason)
        connect.result()  # raises the broker's refusal or the socket error
        props = client._package_handler._connack_properties
        rm = props.get("receive_maximum")
        self.receive_maximum = (rm[0] if isinstance(rm, list) else rm) if rm else 65535
        mp = props.get("maximum_packet_size")
        mp = (mp[0] if isinstance(mp, list) and mp else mp) if mp else None
        configured = self._configured_max_packet()
        self.max_packet = min(int(mp), configured) if isinstance(mp, int) and mp > 0 else configured
        self.disconnect_reason = None
        if self.subscriptions:
            for topic, qos in self.subscriptions:
                client.subscribe(topic, qos=qos)

    async def _close_client(self, client: _Client | None) -> None:
        if client is None:
            return
        client._is_active = False  # stop gmqtt from touching the socket again
        try:
            conn = client._connection
            if conn is not None:
                await asyncio.wait_for(conn.close(), 1.0)
        except Exception:
            pass

    async def run(self) -> None:
        """Connect, keep connected, and reconnect forever until ``stop()``."""
        delays = backoff_delays(self.cfg.reconnect.initial_delay_s, self.cfg.reconnect.max_delay_s, self.cfg.reconnect.jitter)
        while not self._stopping:
            try:
                await self._connect_once()
            except _RetryNow:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = self._describe(exc)
                log.error("cannot connect to broker %s:%s: %s", self.cfg.host, self.cfg.port, self.last_error)
                await self._close_client(self.client)
                await self._sleep(next(delays))
                continue
            connected_at = time.monotonic()
            self.connects += 1
            self.connect_times.append(time.monotonic())
            if self.connects > 1:
                self.reconnects += 1
            self.last_error = None
            self.connected.set()
            log.info("connected to %s:%s (MQTT %s, client id %s)", self.cfg.host, self.cfg.port, self.protocol, self.client_id)
            try:
                await self.on_connected()
            except Exception:
                log.exception("on-connect hook failed")
            await self._lost.wait()
            self.connected.clear()
            if self._stopping:
                break
            log.warning("lost connection to broker %s:%s", self.cfg.host, self.cfg.port)
            self.last_error = "connection lost"
            self.on_disconnected()
            await self._close_client(self.client)
            if time.monotonic() - connected_at >= STABLE_S:
                # A connection that held is a fresh start; one dropped at once (a broker that
                # refuses what we send, a session taken over) keeps backing off.
                delays = backoff_delays(self.cfg.reconnect.initial_delay_s, self.cfg.reconnect.max_delay_s, self.cfg.reconnect.jitter)
            await self._sleep(next(delays))

    def _describe(self, exc: BaseException) -> str:
        code = getattr(exc, "_code", None)
        if isinstance(exc, gmqtt.mqtt.handler.MQTTConnectError) and code in _CONNACK_HINTS:
            return f"broker refused the connection: {_CONNACK_HINTS[code]}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {exc.verify_message} (check mqtt.tls.ca_file)"
        if isinstance(exc, ssl.SSLError):
            return f"TLS error: {exc}"
        return str(exc) or type(exc).__name__

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    def drop(self) -> None:
        """Close the current connection (the broker publishes the will); the supervisor reconnects."""
        if self.connected.is_set():
            self._lost.set()

    async def stop(self, timeout: float = 2.0, reason_code: int = 0) -> None:
        """Disconnect for good. ``reason_code`` (MQTT 5 only): 0x04 asks the broker to publish the will."""
        self._stopping = True
        self._wake.set()
        client = self.client
        if client is not None and self.connected.is_set():
            try:
                code = reason_code if self.version == MQTTv50 else 0
                await asyncio.wait_for(client.disconnect(reason_code=code), timeout)
            except Exception:
                pass
        self._lost.set()
        self.connected.clear()

    # ---- traffic -------------------------------------------------------------------------
    def subscribe(self, topic: str, qos: int) -> None:
        self.subscriptions.append((topic, qos))
        if self.client is not None and self.connected.is_set():
            self.client.subscribe(topic, qos=qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **props: Any) -> int | None:
        """Send one PUBLISH; returns its packet id (QoS > 0), or None when it could not be sent
        now (not connected, transport closing). Raises ``Unsendable`` for a message that can
        never be sent on this connection: invalid topic, or larger than the broker allows."""
        client = self.client
        if client is None or not self.connected.is_set():
            return None
        transport = getattr(getattr(client, "_connection", None), "_transport", None)
        if transport is None or transport.is_closing():
            return None  # lost, and the supervisor has not noticed yet: the outbox keeps it
        if self.version != MQTTv50:
            props = {}
        corr = props.get("correlation_data")
        check_publish(topic, len(payload), qos, properties_bytes("message_expiry_interval" in props, corr), self.max_packet)
        storage: _AckStorage = client._persistent_storage  # type: ignore[assignment]
        try:
            client.publish(gmqtt.Message(topic, payload, qos=qos, retain=retain, **props))
        except Exception as exc:  # closing transport, id exhaustion: the outbox retries
            log.debug("publish failed: %r", exc)
            return None
        return storage.last_mid if qos > 0 else 0


_NO_PROPS: dict[str, Any] = {}
# A connection that lasted this long resets the reconnect backoff; a shorter one does not.
STABLE_S = 10.0
# Longest a PUBACK waits for the outbox to commit the alarms its reading raised.
_ACK_HOLD_MAX_S = 1.0


class _RetryNow(Exception):
    pass
