"""The ``[mqtt]`` config section (fleet control). Kept apart from ``mqtt.py`` so that the config model
imports it without the MQTT client library."""

from __future__ import annotations

import re
import socket

from pydantic import Field, field_validator, model_validator

from common.settings import Section

_TOPIC_PART = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"  # no wildcards, no empty levels


class MqttConfig(Section):
    """Fleet control over MQTT. No inline password: it comes from ``password_file`` or the environment
    variable named by ``password_env``, so that the config (readable over the API) holds no secret."""

    enabled: bool = Field(False, title="Connect to the fleet's MQTT broker")
    host: str = Field("localhost", min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.:-]+$", title="Broker host")
    port: int = Field(1883, ge=1, le=65535, title="Broker port", description="Usually 8883 with TLS.")
    box_id: str = Field(
        "",
        max_length=64,
        title="This box's id in topics",
        description="Empty: the host name.",
    )
    topic_prefix: str = Field("roombox", max_length=100, pattern=_TOPIC_PART, title="Topic prefix")
    username: str = Field("", max_length=200, title="User name", description="Empty: no authentication.")
    password_file: str = Field("", max_length=4096, title="File holding the password")
    password_env: str = Field(
        "ROOMBOX_MQTT_PASSWORD",
        max_length=200,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        title="Environment variable holding the password",
        description="Used when password_file is empty.",
    )
    tls: bool = Field(False, title="Use TLS")
    ca_file: str = Field("", max_length=4096, title="CA certificates (PEM)", description="Empty: the system's CAs.")
    cert_file: str = Field("", max_length=4096, title="Client certificate (PEM)")
    key_file: str = Field("", max_length=4096, title="Client key (PEM)")
    keepalive_s: int = Field(
        30,
        ge=5,
        le=3600,
        title="Keep-alive (s)",
        description="The broker declares the box offline about 1.5 keep-alives after it last heard from it.",
    )
    telemetry_s: float = Field(10.0, ge=1.0, le=3600.0, title="Telemetry period (s)")
    retry_max_s: float = Field(60.0, ge=1.0, le=3600.0, title="Longest wait between reconnections (s)")
    ha_discovery: bool = Field(True, title="Announce to Home Assistant (MQTT discovery)")
    ha_prefix: str = Field(
        "homeassistant", max_length=100, pattern=_TOPIC_PART, title="Home Assistant discovery prefix"
    )

    @field_validator("box_id")
    @classmethod
    def _one_topic_level(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]*", v):
            raise ValueError(
                f"{v!r}: letters, digits, '_' and '-' only (it is one level of the box's MQTT topics: no '/', '+', "
                "'#', '.' or spaces)"
            )
        return v

    @model_validator(mode="after")
    def _tls_files(self) -> MqttConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (a client certificate needs its key)")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ValueError("ca_file, cert_file and key_file need tls = true")
        return self

    def resolved_box_id(self) -> str:
        """``box_id``, or this machine's host name made topic-safe."""
        if self.box_id:
            return self.box_id
        return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "roombox"
