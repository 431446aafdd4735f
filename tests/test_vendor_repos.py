"""playbooks/tasks/vendor_repos.yml, run for real on this machine inside a private mount namespace
(its own /etc/apt, apt lists and cache bound over the real ones, so the machine's APT is untouched).

Grafana's and Elastic's repositories are not reachable here, so what is run is the path up to the
point where a package would be fetched: the signing key is served from loopback (a key made by the
test, its fingerprint pinned in place of the vendor's), checked, written as a keyring under
/etc/apt/keyrings, the deb822 sources name the vendors' real URIs, and then `apt-get update` fails
exactly on fetching from those repositories. With the real pinned data the play stops at downloading
the vendor's key. A key that is not the pinned one never becomes a keyring."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from assistantctl.apply import debian_packages, vendor_repos
from assistantctl.renderers import supervisor
from assistantctl.schema.loader import load_spec
from assistantctl.targets import targets
from cli_helpers import REPO

SERVICES = REPO / "playbooks" / "vars" / "services.yml"
PACKAGES = ["filebeat", "grafana", "logstash"]
ELASTIC = "https://artifacts.elastic.co/packages/8.x/apt"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


def gpg(home: Path, *args: str) -> str:
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_key(home: Path, name: str) -> tuple[str, str]:
    """(armored public key, fingerprint) of a new signing key."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.invalid>", "ed25519", "sign", "never")
    fingerprint = fingerprints(gpg(home, "--with-colons", "--list-keys", name))[0]
    return gpg(home, "--armor", "--export", fingerprint), fingerprint


def fingerprints(colons: str) -> list[str]:
    """Primary-key fingerprints in gpg's --with-colons output."""
    found, primary = [], False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            primary = True
        elif fields[0] == "fpr" and primary:
            found.append(fields[9])
            primary = False
    return found


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[str, str]]:
    home = tmp_path_factory.mktemp("gnupg")
    return {name: make_key(home / name, name) for name in ("vendor", "intruder")}


@pytest.fixture
def key_server(tmp_path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server for files the test puts in the yielded folder."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def run_packages(tmp_path: Path, vendor_repos: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """packages.yml with every ELK and Grafana package wanted, in a private mount namespace whose
    /etc/apt is a copy of this machine's without its sources. Returns the run and that /etc/apt."""
    if shutil.which("unshare") is None or shutil.which("gpg") is None:
        pytest.fail("these tests need util-linux's unshare and gpg (apt-get install util-linux gpg)")
    etc_apt, lists, cache = tmp_path / "etc-apt", tmp_path / "lists", tmp_path / "cache"
    shutil.copytree("/etc/apt", etc_apt, symlinks=True)
    for source in (etc_apt / "sources.list.d").iterdir():
        source.unlink()
    (etc_apt / "sources.list").unlink(missing_ok=True)
    shutil.rmtree(etc_apt / "keyrings", ignore_errors=True)
    (lists / "partial").mkdir(parents=True)
    (cache / "archives" / "partial").mkdir(parents=True)
    playbook = tmp_path / "play.yml"
    play = {
        "hosts": "all",
        "gather_facts": False,
        "vars_files": [str(SERVICES)],
        "tasks": [{"ansible.builtin.include_tasks": str(REPO / "playbooks" / "tasks" / "packages.yml")}],
    }
    playbook.write_text(yaml.safe_dump([play]))
    extra = {
        "assistant_packages": PACKAGES,
        "assistant_vendor_repos": ["elastic", "grafana"],
        "ansible_python_interpreter": sys.executable,
    }
    if vendor_repos is not None:
        extra["vendor_repos"] = vendor_repos
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    script = (
        'mount --bind "$1" /etc/apt && mount --bind "$2" /var/lib/apt/lists && mount --bind "$3" /var/cache/apt '
        '&& exec "$4" -i localhost, -c local -e "@$5" "$6"'
    )
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    command += [str(etc_apt), str(lists), str(cache), ANSIBLE_PLAYBOOK, str(tmp_path / "extra.json"), str(playbook)]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ANSIBLE_NOCOLOR": "1", "HOME": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, env=env)
    return result, etc_apt


def failed_task(output: str) -> str:
    """The name of the task the play failed in."""
    failure = re.search(r"^(\[ERROR\]: Task failed|fatal: \[localhost\]|failed: \[localhost\])", output, re.MULTILINE)
    assert failure is not None, output
    return re.findall(r"^TASK \[(.*)\]", output[: failure.start()], re.MULTILINE)[-1]


def served_repos(base: str, fingerprint: str) -> dict:
    """The pinned repositories with only the keys swapped: served from loopback, pinned to ours."""
    repos = yaml.safe_load(SERVICES.read_text())["vendor_repos"]
    return {name: {**repo, "key_url": f"{base}/{name}.asc", "fingerprint": fingerprint} for name, repo in repos.items()}


def test_repos_get_pinned_keyrings_and_apt_fails_exactly_on_the_vendor_repositories(tmp_path, keys, key_server):
    base, folder = key_server
    armored, fingerprint = keys["vendor"]
    for name in ("grafana", "elastic"):
        (folder / f"{name}.asc").write_text(armored)
    result, etc_apt = run_packages(tmp_path, served_repos(base, fingerprint))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert failed_task(output).startswith("Install missing Debian packages"), output
    check_home = tmp_path / "gnupg-check"
    check_home.mkdir(mode=0o700)

    for name, uri in (("grafana", "https://apt.grafana.com"), ("elastic", ELASTIC)):
        keyring = etc_apt / "keyrings" / f"{name}.gpg"
        assert oct(keyring.stat().st_mode & 0o777) == "0o644"
        assert fingerprints(gpg(check_home, "--with-colons", "--show-keys", str(keyring))) == [fingerprint]
        sources = (etc_apt / "sources.list.d" / f"{name}.sources").read_text()
        fields = dict(line.split(": ", 1) for line in sources.splitlines() if not line.startswith("#"))
        assert fields == {
            "Types": "deb",
            "URIs": uri,
            "Suites": "stable",
            "Components": "main",
            "Signed-By": f"/etc/apt/keyrings/{name}.gpg",
        }
        assert f"E: Failed to fetch {uri}/dists/stable/InRelease" in output, output
    assert sorted(p.name for p in (etc_apt / "keyrings").iterdir()) == ["elastic.gpg", "grafana.gpg"]
    # apt failed on fetching, before any install was tried
    assert "Failed to fetch" in output and "E: Unable to locate package" not in output
    assert re.search(r'"stdout": "[^"]*installed:', output) is None


def test_a_key_that_is_not_the_pinned_one_never_becomes_a_keyring(tmp_path, keys, key_server):
    base, folder = key_server
    vendor, intruder = keys["vendor"][0], keys["intruder"][0]
    (folder / "grafana.asc").write_text(intruder)
    (folder / "elastic.asc").write_text(vendor + intruder)  # the pinned key plus one more
    result, etc_apt = run_packages(tmp_path, served_repos(base, keys["vendor"][1]))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert failed_task(output) == "Check each key against its pinned fingerprint and write its keyring", output
    assert f"pinned: {keys['vendor'][1]}" in output
    assert list((etc_apt / "keyrings").iterdir()) == []
    assert list((etc_apt / "sources.list.d").iterdir()) == []


def test_with_the_real_pinned_data_the_play_stops_at_downloading_the_vendor_key(tmp_path):
    result, etc_apt = run_packages(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert failed_task(output) == "Download the vendors' signing keys", output
    assert "artifacts.elastic.co" in output or "apt.grafana.com" in output
    assert list((etc_apt / "keyrings").iterdir()) == []
    assert list((etc_apt / "sources.list.d").iterdir()) == []


def test_each_host_gets_the_vendor_packages_repositories_and_programs_of_what_it_runs():
    production = REPO / "examples" / "production.yaml"
    hosts = {t.host.name: t for t in targets(load_spec(production), production.parent)}
    wanted = {
        "monitor-1": (["filebeat", "grafana", "logstash"], ["elastic", "grafana"]),
        "edge-1": (["filebeat"], ["elastic"]),
        "engine-1": (["filebeat"], ["elastic"]),
    }
    for name, (packages, repos) in wanted.items():
        target = hosts[name]
        vendor_packages = [p for p in debian_packages(target) if p in {"filebeat", "grafana", "logstash"}]
        assert (vendor_packages, vendor_repos(target)) == (packages, repos), name
        assert set(packages) <= {p.name for p in supervisor.programs(target)}, name
        # every package wanted comes from a repository the host gets
        served = yaml.safe_load(SERVICES.read_text())["vendor_repos"]
        assert set(packages) <= {p for repo in repos for p in served[repo]["packages"]}
    assert not {"grafana", "logstash"} & {p.name for p in supervisor.programs(hosts["edge-1"])}
