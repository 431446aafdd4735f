"""`monitoring:` metrics, alerts and logs."""

from __future__ import annotations

from ipaddress import IPv4Network
from typing import Literal

from pydantic import Field, HttpUrl, model_validator

from ..types import IPNetwork, Name, Percent, Port, PositiveSeconds, SecretRef, UrlPath
from .base import Strict


class Metrics(Strict):
    enabled: bool = Field(True, description="Serve Prometheus metrics at `path`.")
    path: UrlPath = Field("/metrics", description="URL path of the metrics endpoint.")
    allow_networks: list[IPNetwork] = Field(
        default_factory=lambda: [IPv4Network("127.0.0.0/8")],
        description="Networks that may read the metrics; default: 127.0.0.0/8 only.",
    )


class Alerts(Strict):
    error_rate_percent: Percent = Field(5, description="Alert when more than this % of requests answer 5xx.")
    slow_request_seconds: PositiveSeconds = Field(
        2, description="A request slower than this many seconds counts as slow."
    )
    slow_request_percent: Percent = Field(10, description="Alert when more than this % of requests are slow.")
    p99_latency_seconds: PositiveSeconds = Field(
        2, description="Alert when the 99th percentile latency exceeds this (s)."
    )
    model_failure_percent: Percent = Field(
        5, description="Alert when more than this % of a model's calls fail, time out or are rejected."
    )
    disk_used_percent: Percent = Field(85, description="Alert when a filesystem is fuller than this %.")
    memory_used_percent: Percent = Field(85, description="Alert when more than this % of memory is in use.")
    cpu_used_percent: Percent = Field(
        85, description="Alert when a host's CPUs are busy (not idle) more than this % of the time, on average."
    )
    for_minutes: int = Field(
        5, ge=0, le=1440, description="Minutes a threshold must stay crossed before its alert fires; 0: at once."
    )
    instance_down_minutes: int = Field(
        1, ge=0, le=1440, description="Minutes a scrape target may be unreachable before InstanceDown fires."
    )


class Receiver(Strict):
    name: Name = Field(description="The receiver's name in Alertmanager.")
    kind: Literal["webhook", "email", "telegram"] = Field(
        description="webhook needs url; email needs email; telegram needs chat_id and bot_token."
    )
    url: HttpUrl | None = Field(None, description="Where a webhook receiver posts alerts.")
    email: str | None = Field(
        None, pattern=r"^[^@\s\"'{};]+@[A-Za-z0-9.-]+$", description="Address an email receiver writes to."
    )
    chat_id: int | None = Field(None, description="Telegram chat a telegram receiver posts to.")
    bot_token: SecretRef | None = Field(None, description="Token of the bot a telegram receiver posts as.")

    @model_validator(mode="after")
    def _kind_fields(self) -> Receiver:
        need = {"webhook": ("url",), "email": ("email",), "telegram": ("chat_id", "bot_token")}[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"receiver of kind '{self.kind}' needs: {', '.join(missing)}")
        return self


class Smtp(Strict):
    smarthost: str = Field(
        "localhost:25",
        pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}$",
        description="host:port of the SMTP server email receivers send through; default: the host's own MTA.",
    )
    sender: str | None = Field(
        None,
        alias="from",
        pattern=r"^[^@\s\"'{};]+@[A-Za-z0-9.-]+$",
        description="From address of alert mails; unset: alertmanager@<deploy.server_name>.",
    )
    auth_username: str | None = Field(None, description="User to log in to the SMTP server as; unset: no login.")
    auth_password: SecretRef | None = Field(
        None, description="Password of `auth_username`; kept in a 0600 file, never in the config."
    )
    require_tls: bool = Field(
        False, description="Insist on STARTTLS; off by default because the default smarthost is loopback."
    )

    @model_validator(mode="after")
    def _login_pair(self) -> Smtp:
        if (self.auth_username is None) != (self.auth_password is None):
            raise ValueError("smtp needs both auth_username and auth_password, or neither")
        return self


class ServiceToggle(Strict):
    enabled: bool = Field(False, description="Run this service on the hosts with the monitoring role.")
    port: Port = Field(description="TCP port the service listens on.")


class Prometheus(ServiceToggle):
    port: Port = Field(9090, description="TCP port Prometheus listens on.")
    scrape_interval_seconds: int = Field(15, ge=1, le=3600, description="Seconds between two scrapes.")
    retention_days: int = Field(15, ge=1, description="Days of samples Prometheus keeps.")


class Alertmanager(ServiceToggle):
    port: Port = Field(9093, description="TCP port Alertmanager listens on.")
    receivers: list[Receiver] = Field(
        default_factory=list, description="Where alerts go, every alert to every receiver; empty: nowhere."
    )
    smtp: Smtp = Field(Smtp(), description="How email receivers send: server, sender and login.")
    group_wait_seconds: int = Field(
        30, ge=0, le=3600, description="Seconds a new group of alerts is gathered before its first notification."
    )
    group_interval_seconds: int = Field(
        300,
        ge=1,
        le=86400,
        description="Seconds between two notifications of a group: an alert joining a notified group waits this long.",
    )


class Grafana(ServiceToggle):
    port: Port = Field(3000, description="TCP port Grafana listens on.")
    admin_password: SecretRef | None = Field(
        None, description="Password of Grafana's admin user; unset: Grafana's own."
    )


class BeatsTls(Strict):
    certificate: SecretRef = Field(
        description="PEM certificate Logstash presents to Filebeat; it must name the address of the "
        "`logging` host (Filebeat checks the name)."
    )
    key: SecretRef = Field(
        description="PEM private key of `certificate`, PKCS#8 (`BEGIN PRIVATE KEY`): Logstash's beats input "
        "reads no other form."
    )
    certificate_authority: SecretRef | None = Field(
        None, description="PEM CA certificate Filebeat trusts for Logstash; unset: `certificate` itself."
    )


class Elk(Strict):
    enabled: bool = Field(False, description="Ship logs through Filebeat and Logstash to Elasticsearch.")
    tls: BeatsTls | None = Field(
        None,
        description="TLS from Filebeat to Logstash; required when a `logging` host takes other hosts' logs, "
        "optional when each host ships to its own Logstash on loopback.",
    )
    elasticsearch_hosts: list[HttpUrl] = Field(
        default_factory=lambda: [HttpUrl("http://127.0.0.1:9200")],
        description="Elasticsearch URLs Logstash writes to; default: http://127.0.0.1:9200.",
    )
    index_prefix: Name = Field("assistant", description="Indices are named <prefix>-<log type>-<YYYY.MM.dd>.")


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe engine log line kept."
    )
    format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event; json: one JSON object per line."
    )
    elk: Elk = Field(Elk(), description="Central logging with the ELK stack; off by default.")


class Monitoring(Strict):
    metrics: Metrics = Field(Metrics(), description="The engine's Prometheus metrics endpoint.")
    alerts: Alerts = Field(Alerts(), description="Thresholds of the rendered alert rules.")
    prometheus: Prometheus = Field(Prometheus(), description="A Prometheus server scraping every host; off by default.")
    alertmanager: Alertmanager = Field(Alertmanager(), description="Alertmanager routing alerts; off by default.")
    grafana: Grafana = Field(Grafana(), description="Grafana with the assistant's dashboards; off by default.")
    logging: Logging = Field(Logging(), description="Log level, format and shipping.")
