"""The pydantic models of assistant.yaml: the whole spec, one module per section.

Cross-section rules (a channel naming an undeclared model, two services on one port...) live in
`schema.checks`; these modules only describe shapes and per-field constraints. Every model is
re-exported here, so callers import from `schema.spec` whichever module holds it.
"""

from .base import Strict
from .channels import (
    Channel,
    Channels,
    TelegramChannel,
    WebChannel,
    WebSocketChannel,
    WeComChannel,
    WhatsAppChannel,
)
from .deploy import Deploy, HighAvailability, Host, Ports, Role, SharedState
from .document import Spec
from .kubernetes import ExternalService, KubeIngress, KubeResources, Kubernetes
from .limits import Concurrency, GlobalRateLimit, Limits, RateLimit, Timeouts
from .models import Models, ModelSpec, Provider
from .monitoring import (
    Alertmanager,
    Alerts,
    Elk,
    Grafana,
    Logging,
    Metrics,
    Monitoring,
    Prometheus,
    Receiver,
    ServiceToggle,
)
from .security import Audit, HistoryEncryption, HistoryKey, Jwt, PiiMasking, Security, Tls
from .skills import Skill
from .tools import Tools

__all__ = [
    "Alertmanager",
    "Alerts",
    "Audit",
    "Channel",
    "Channels",
    "Concurrency",
    "Deploy",
    "Elk",
    "ExternalService",
    "GlobalRateLimit",
    "Grafana",
    "HighAvailability",
    "HistoryEncryption",
    "HistoryKey",
    "Host",
    "Jwt",
    "KubeIngress",
    "KubeResources",
    "Kubernetes",
    "Limits",
    "Logging",
    "Metrics",
    "ModelSpec",
    "Models",
    "Monitoring",
    "PiiMasking",
    "Ports",
    "Prometheus",
    "Provider",
    "RateLimit",
    "Receiver",
    "Role",
    "Security",
    "ServiceToggle",
    "SharedState",
    "Skill",
    "Spec",
    "Strict",
    "TelegramChannel",
    "Timeouts",
    "Tls",
    "Tools",
    "WeComChannel",
    "WebChannel",
    "WebSocketChannel",
    "WhatsAppChannel",
]
