"""``twibridge call``: the Typer command against the fake Twilio REST API (served from a thread:
the command runs ``trio.run`` itself, so these tests are synchronous)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer
from typer.testing import CliRunner

from fakes.twilio_rest import ACCOUNT_SID, AUTH_TOKEN, OWNED_NUMBER, FakeTwilioRest
from twibridge.cli.call import call_command

CUSTOMER = "+15557654321"
PUBLIC_URL = "https://bridge.example.com/tb"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.callback()(lambda: None)  # a group, as in twibridge/cli.py: "call" is a subcommand
app.command("call")(call_command)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("TWIBRIDGE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no ./twibridge.toml picked up by accident


@pytest.fixture
def fake() -> Iterator[tuple[FakeTwilioRest, str]]:
    fake = FakeTwilioRest()
    with fake.running_in_thread() as url:
        yield fake, url


def write_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    path = tmp_path / "twibridge.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def full_config(tmp_path: Path, url: str, **twilio: Any) -> Path:
    return write_config(tmp_path, server={"public_url": PUBLIC_URL},
                        twilio={"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "api_base_url": url,
                                "rest_timeout_s": 5, "from_number": OWNED_NUMBER, **twilio})


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["call", *args])


def test_places_the_call_and_prints_only_the_call_sid(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    result = invoke(CUSTOMER, "--config", str(full_config(tmp_path, url)))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"CA[0-9a-f]{32}\n", result.stdout)
    (req,) = server.requests
    assert req.form == {"To": [CUSTOMER], "From": [OWNED_NUMBER], "Url": [PUBLIC_URL + "/voice"],
                        "Method": ["POST"]}
    assert result.stdout.strip() in server.calls
    assert AUTH_TOKEN not in result.output


def test_from_option_and_ring_timeout(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    server.numbers.add("+15550002222")
    result = invoke(CUSTOMER, "--from", "+15550002222", "--ring-timeout", "25",
                    "--config", str(full_config(tmp_path, url)))
    assert result.exit_code == 0, result.output
    assert server.requests[0].form["From"] == ["+15550002222"] and server.requests[0].form["Timeout"] == ["25"]


def test_default_config_file_in_the_working_directory(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    full_config(tmp_path, url)  # ./twibridge.toml
    result = invoke(CUSTOMER)
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 1


def test_missing_config_is_exit_2_with_every_problem(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    result = invoke(CUSTOMER, "--config", str(write_config(tmp_path, twilio={"api_base_url": url})))
    assert result.exit_code == 2
    for key in ("server.public_url", "twilio.account_sid", "twilio.auth_token", "twilio.from_number"):
        assert key in result.stderr
    assert not server.requests and not result.stdout


def test_no_config_at_all_is_exit_2() -> None:
    result = invoke(CUSTOMER)
    assert result.exit_code == 2 and "server.public_url" in result.stderr


@pytest.mark.parametrize("to", ["5551234567", "+1 555 123 4567", "sales"])
def test_bad_number_is_exit_2(tmp_path: Path, fake: tuple[FakeTwilioRest, str], to: str) -> None:
    server, url = fake
    result = invoke(to, "--config", str(full_config(tmp_path, url)))
    assert result.exit_code == 2 and "E.164" in result.stderr and not server.requests


def test_invalid_config_file_is_exit_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, twilio={"rest_timeout_s": "soon"})
    result = invoke(CUSTOMER, "--config", str(path))
    assert result.exit_code == 2 and "twilio.rest_timeout_s" in result.stderr


def test_twilio_refusing_is_exit_2_with_its_code(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    result = invoke(CUSTOMER, "--from", "+15550009999", "--config", str(full_config(tmp_path, url)))
    assert result.exit_code == 2 and "21210" in result.stderr and not result.stdout


def test_bad_credentials_are_exit_2_without_the_token(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    result = invoke(CUSTOMER, "--config", str(full_config(tmp_path, url, auth_token="not-the-token-0123456789")))
    assert result.exit_code == 2 and "20003" in result.stderr
    assert "not-the-token" not in result.output


def test_twilio_unreachable_is_exit_1(tmp_path: Path) -> None:
    result = invoke(CUSTOMER, "--config", str(full_config(tmp_path, "http://127.0.0.1:1")))
    assert result.exit_code == 1 and "unreachable" in result.stderr


def test_machine_detection_asks_twilio_to_wait_for_the_beep(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    result = invoke(CUSTOMER, "--machine-detection", "--config", str(full_config(tmp_path, url)))
    assert result.exit_code == 0, result.output
    assert server.requests[0].form["MachineDetection"] == ["DetectMessageEnd"]


def test_machine_detection_from_the_config_and_its_opt_out(tmp_path: Path, fake: tuple[FakeTwilioRest, str]) -> None:
    server, url = fake
    path = full_config(tmp_path, url)
    path.write_text(path.read_text() + "[outbound]\nmachine_detection = true\n")
    assert invoke(CUSTOMER, "--config", str(path)).exit_code == 0
    assert invoke(CUSTOMER, "--no-machine-detection", "--config", str(path)).exit_code == 0
    assert server.requests[0].form["MachineDetection"] == ["DetectMessageEnd"]
    assert "MachineDetection" not in server.requests[1].form
