"""`assistantctl chat`: a terminal client for a deployed assistant, like `ollama run`.

It speaks the assistant's own API: each turn is one POST /api/v1/chat/stream (server-sent events:
`delta` text, `tool` events, then `done` with the conversation id, or `error`), and the next turn
sends that conversation id back, so the engine keeps the conversation. Where to connect comes from
the spec (an edge host's nginx) or `--url`; the credential from $ASSISTANT_API_KEY only, never a
flag that would land in shell history (without one, loopback callers are the anonymous user).

With a MESSAGE, or with stdin not a terminal, it answers once and exits (1 on any error): the reply
goes to stdout, tool lines and the conversation id to stderr. httpx and readline are imported inside
the command so that the rest of the CLI starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import click

from .cli_common import EXIT_ERROR, EXIT_OK, fail

KEY_ENV = "ASSISTANT_API_KEY"
PROMPT = ">>> "
_HELP = "/new: start another conversation   /exit (or Ctrl-D): leave   Ctrl-C: stop a reply"


class ChatError(Exception):
    """A turn that failed; its message is the one line the user sees."""


def spec_url(spec_path: str, host_name: str | None) -> str:
    """The URL a client reaches the spec's assistant at: an edge host's nginx (HTTPS when TLS is on).

    A local host is reached on loopback, where the default `security.anonymous: loopback` needs no key;
    without --host, the HA pair's virtual IP when there is one, else the first edge host."""
    from .cli_common import load

    spec = load(spec_path)
    deploy = spec.deploy
    tls = spec.security.tls.enabled
    port = deploy.ports.https if tls else deploy.ports.http
    scheme = "https" if tls else "http"
    if host_name is None and deploy.ha is not None:
        return f"{scheme}://{deploy.ha.virtual_ip}:{port}"
    hosts = [h for h in deploy.hosts if host_name in (None, h.name)]
    if host_name and not hosts:
        raise click.UsageError(f"unknown host: {host_name}")
    edges = [h for h in hosts if "edge" in h.roles]
    if not edges:
        # An engine-only host answers only its edges (security.edge_secret): a client cannot talk to it.
        fail(f"{host_name or 'the spec'} has no edge host (nginx) to chat through: name one with --host, or use --url")
    host = edges[0]
    address = "127.0.0.1" if host.connection == "local" else host.address
    return f"{scheme}://{f'[{address}]' if ':' in address else address}:{port}"


def events(lines: Iterator[str]) -> Iterator[dict]:
    """The JSON events of a server-sent event stream (one `data:` line per event)."""
    for line in lines:
        if line.startswith("data:"):
            try:
                value = json.loads(line[5:])
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def _refusal(response) -> str:
    """One line for an HTTP error answer: status, the API's message, and what to do about it."""
    try:
        error = response.json().get("error", {})
        message = error.get("message") or error.get("code") or ""
    except (ValueError, AttributeError):
        message = response.reason_phrase
    line = f"HTTP {response.status_code}: {message}"
    if response.status_code == 401:
        line += f" (the key in ${KEY_ENV} was refused)" if os.environ.get(KEY_ENV) else f" (set ${KEY_ENV})"
    elif response.status_code in (429, 503) and response.headers.get("Retry-After"):
        line += f" (retry after {response.headers['Retry-After']} s)"
    return line


class ToolLines:
    """Tool events as short lines on stderr: `⚙ calculator ... ✓ 3 ms`, the mark on the same line
    when nothing came between the start and the end (parallel calls get a line each)."""

    def __init__(self) -> None:
        self.open: str | None = None  # the call id whose `⚙ name ...` line waits for its mark

    def show(self, tool: dict) -> None:
        kind, name, call = tool.get("event"), tool.get("name") or "tool", tool.get("call_id")
        if kind == "started":
            self.close()
            self._write(f"⚙ {name} ...")
            self.open = call
        elif kind in ("finished", "failed"):
            ok = kind == "finished" and tool.get("outcome", "ok") == "ok"
            mark = "✓" if ok else f"✗ {tool.get('outcome') or 'failed'}"
            took = f" {tool['duration_ms']:.0f} ms" if isinstance(tool.get("duration_ms"), int | float) else ""
            if self.open is not None and self.open == call:
                self._write(f" {mark}{took}\n")
                self.open = None
            else:
                self.close()
                self._write(f"{mark} {name}{took}\n")
        elif kind == "approval":
            self.close()
            self._write(f"? {name}: approval {tool.get('state', '')}\n")
        elif kind == "sent":
            self.close()
            self._write(f"→ sent: {tool.get('text', '')}\n")

    def close(self) -> None:
        if self.open is not None:
            self._write("\n")
            self.open = None

    @staticmethod
    def _write(text: str) -> None:
        sys.stdout.flush()  # stdout and stderr share the terminal: keep them in order
        sys.stderr.write(text)
        sys.stderr.flush()


class Session:
    """One conversation with the engine at `url`; `conversation_id` is None until the first reply."""

    def __init__(self, url: str, model: str | None, conversation_id: str | None, timeout: float) -> None:
        import httpx

        headers = {"Accept": "text/event-stream"}
        if key := os.environ.get(KEY_ENV):
            headers["Authorization"] = f"Bearer {key}"
        self.url = url.rstrip("/")
        self.model = model
        self.conversation_id = conversation_id
        # read: the longest silence between two events (a model thinking, a tool running)
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10))

    def turn(self, message: str) -> str:
        """Send `message`, write the reply to stdout as it streams; the whole reply. Raises ChatError.

        A KeyboardInterrupt while it streams closes the stream (the engine stops the model call) and
        propagates; the conversation stays where it was."""
        import httpx

        body: dict = {"message": message}
        if self.model:
            body["model"] = self.model
        if self.conversation_id:
            body["conversation_id"] = self.conversation_id
        try:
            with self.client.stream("POST", f"{self.url}/api/v1/chat/stream", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise ChatError(_refusal(response))
                return self._relay(response.iter_lines())
        except httpx.TimeoutException:
            raise ChatError(f"no answer from {self.url} within {self.client.timeout.read:g} s") from None
        except httpx.TransportError as exc:
            raise ChatError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None

    def _relay(self, lines: Iterator[str]) -> str:
        tools, text = ToolLines(), []
        for item in events(lines):
            if "tool" in item:
                tools.show(item["tool"])
            elif "delta" in item:
                tools.close()
                text.append(item["delta"])
                sys.stdout.write(item["delta"])
                sys.stdout.flush()
            elif "error" in item:
                tools.close()
                error = item["error"]
                raise ChatError(f"{error.get('code', 'error')}: {error.get('message', '')}")
            elif item.get("done"):
                tools.close()
                self.conversation_id = item.get("conversation_id") or self.conversation_id
                return "".join(text)
        tools.close()
        raise ChatError("the stream ended before the reply was complete")

    def close(self) -> None:
        self.client.close()


def _line(text: str) -> None:
    sys.stdout.flush()
    click.echo(text, err=True)


def _once(session: Session, message: str) -> int:
    try:
        reply = session.turn(message)
    except ChatError as exc:
        click.echo()
        _line(f"error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo()
        _line("stopped")
        return 130
    if not reply.endswith("\n"):
        click.echo()
    _line(f"conversation: {session.conversation_id}")
    return EXIT_OK


def _interactive(session: Session) -> int:
    try:
        import readline  # noqa: F401  (line editing and this session's history for input())
    except ImportError:  # not every Python has it; input() works without
        pass
    _line(f"{session.url}  ({_HELP})")
    while True:
        try:
            message = input(PROMPT).strip()
        except EOFError:
            click.echo()
            return EXIT_OK
        except KeyboardInterrupt:  # like a shell: drop the line, ask again
            click.echo()
            continue
        if not message:
            continue
        if message in ("/exit", "/bye", "/quit"):
            return EXIT_OK
        if message == "/new":
            session.conversation_id = None
            _line("(a new conversation)")
            continue
        if message.startswith("/") and " " not in message:
            _line(_HELP)
            continue
        try:
            reply = session.turn(message)
            if not reply.endswith("\n"):
                click.echo()
        except ChatError as exc:
            click.echo()
            _line(f"error: {exc}")
        except KeyboardInterrupt:
            click.echo()
            _line("(stopped)")


@click.command()
@click.argument("message", nargs=-1)
@click.option("--host", "host", help="The edge host of the spec to connect to (default: the first).")
@click.option("--url", help="The assistant's URL instead of the spec's, e.g. https://assistant.example.org.")
@click.option("--model", help="A model of the spec instead of the default.")
@click.option("--conversation", "conversation_id", help="Continue this conversation (an id `chat` printed).")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the next part of a reply.")
@click.pass_obj
def chat(
    spec_path: str,
    message: tuple[str, ...],
    host: str | None,
    url: str | None,
    model: str | None,
    conversation_id: str | None,
    timeout: float,
) -> None:
    """Talk to the deployed assistant; with MESSAGE (or piped input), answer once and exit.

    The API key (or a JWT) comes from $ASSISTANT_API_KEY; on loopback none is needed by default."""
    if url and host:
        raise click.UsageError("--url and --host are alternatives")
    session = Session(url or spec_url(spec_path, host), model, conversation_id, timeout)
    try:
        if message:
            code = _once(session, " ".join(message))
        elif not sys.stdin.isatty():
            text = sys.stdin.read().strip()
            if not text:
                fail("nothing to send: stdin was empty")
            code = _once(session, text)
        else:
            code = _interactive(session)
    finally:
        session.close()
    sys.exit(code)
