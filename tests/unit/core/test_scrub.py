"""Credentials never reach an output: the scrubber's patterns, the secret values a kubeconfig
yields, and Kubernetes objects recorded as evidence.

Every secret here is made up at run time (random, or assembled from parts), so nothing
key- or token-shaped is committed.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path

import pytest
import yaml
from fleetcheck.core import evidence as ev
from fleetcheck.core.kubeconfig import load
from fleetcheck.core.scrub import REDACTED, Scrubber
from kubernetes import client as k8s


def fake(prefix: str = "") -> str:
    """A random credential-like value."""
    return prefix + secrets.token_urlsafe(18)


def b64url(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fake_jwt() -> str:
    """A JWT-shaped token (header.payload.signature) signed by nobody."""
    header = b64url({"alg": "RS256", "kid": fake()})
    payload = b64url({"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:x:y",
                      "exp": int(time.time()) + 3600})
    return f"{header}.{payload}.{secrets.token_urlsafe(32)}"


# --- patterns --------------------------------------------------------------------------------

@pytest.mark.parametrize("template", [
    "access_token={v}&expires_in=3600",
    "https://example.invalid/cb?code=1&access_token={v}",
    '{{"access_token": "{v}", "token_type": "Bearer"}}',
    '{{"refresh_token":"{v}"}}',
    "id_token: {v}",
    "id-token: {v}",
    "idToken: {v}",
    "accessToken={v}",
    "client_secret={v}",
    '"client-secret": "{v}"',
    "api_key: {v}",
    "apiKey={v}",
    "X-Api-Key: {v}",
    "x-api-key={v}",
    "password: {v}",
    "GITHUB_TOKEN={v}",
    "--token={v}",
    "Cookie: session={v}; theme=dark",
    "Set-Cookie: sid={v}; Path=/; HttpOnly",
    '{{"cookie": "sid={v}; x=1"}}',
    "Authorization: Basic {v}",
    "authorization: Bearer {v}",
])
def test_credential_key_value_pairs_are_redacted(template: str) -> None:
    value = fake()
    out = Scrubber()(template.format(v=value))
    assert value not in out
    assert REDACTED in out


def test_quoted_values_with_spaces_are_redacted_whole() -> None:
    words = " ".join(fake() for _ in range(3))
    out = Scrubber()(f'{{"password": "{words}", "user": "alice"}}')
    assert out == f'{{"password": "{REDACTED}", "user": "alice"}}'


def test_the_key_and_the_structure_around_the_value_are_kept() -> None:
    value = fake()
    scrub = Scrubber()
    assert scrub(f"access_token={value}&state=ok") == f"access_token={REDACTED}&state=ok"
    assert scrub(f'"id_token": "{value}",') == f'"id_token": "{REDACTED}",'
    assert scrub(f"Cookie: a={value}; b=c") == f"Cookie: {REDACTED}"


def test_password_in_url() -> None:
    password = fake()
    scrub = Scrubber()
    assert (scrub(f"GET https://alice:{password}@proxy.example.invalid:3128/x")
            == f"GET https://alice:{REDACTED}@proxy.example.invalid:3128/x")
    assert password not in scrub(f"socks5://:{password}@10.0.0.1")
    # a URL without credentials is left alone
    assert scrub("https://10.0.0.1:6443/readyz") == "https://10.0.0.1:6443/readyz"


def test_raw_jwt_is_redacted() -> None:
    token = fake_jwt()
    out = Scrubber()(f"the service account presented {token} to the API server")
    assert token not in out and token.split(".")[2] not in out
    assert out == f"the service account presented {REDACTED} to the API server"


@pytest.mark.parametrize("text", [
    "the tokenizer splits words",
    "a token is issued per service account",
    "tokens: 3 issued",
    "tokenFile: /var/run/secrets/token",
    "automountServiceAccountToken: false",
    "secretName: registry-credentials",
    "kind: Secret",
    "type: kubernetes.io/service-account-token",
    "rbac/expected-deny [lab-a]: expected list secrets denied; observed allowed",
    '"token_type": "Bearer", "expires_in": 3600',
    "volumes:\n- name: certs\n  secret:\n    secretName: tls",
    "https://10.0.0.1:6443/api/v1/namespaces/default/secrets",
    "password: ***REDACTED***",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert Scrubber()(text) == text


def test_scrubbing_is_idempotent() -> None:
    scrub = Scrubber()
    once = scrub(f'access_token={fake()} "password": "{fake()}" Cookie: x={fake()}')
    assert scrub(once) == once


def test_patterns_are_linear_on_long_input() -> None:
    """No catastrophic backtracking on long runs of key-like characters."""
    scrub = Scrubber()
    for text in ("a-" * 40_000, "token" * 20_000, "http://" * 20_000, "x: " * 30_000):
        started = time.monotonic()
        scrub(text)
        assert time.monotonic() - started < 2.0, text[:20]


def test_known_multiline_values_are_found_line_by_line() -> None:
    label = "EC " + "PRIVATE KEY"  # assembled here: no key-shaped text is committed
    body = [secrets.token_hex(24) for _ in range(3)]
    key = "\n".join([f"-----BEGIN {label}-----", *body, f"-----END {label}-----"])
    scrub = Scrubber([key])
    assert body[1] not in scrub(f"a fragment: {body[1]}")


# --- secret values a kubeconfig yields -------------------------------------------------------

def _kubeconfig(path: Path, users: list[dict[str, object]]) -> Path:
    data = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": users,
        "contexts": [{"name": f"ctx-{u['name']}", "context": {"cluster": "c", "user": u["name"]}}
                     for u in users],
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_secret_values_include_exec_env_token_file_and_auth_provider(tmp_path: Path) -> None:
    env_value, file_token, access, refresh, client_secret, proxy_password = (
        fake() for _ in range(6))
    opaque = fake("k7") + "9"  # credential-shaped: letters and digits
    (tmp_path / "token.txt").write_text(file_token + "\n")
    key_body = secrets.token_hex(32)
    (tmp_path / "client.key").write_text(f"key material\n{key_body}\n")
    path = _kubeconfig(tmp_path / "kubeconfig.yaml", [
        {"name": "exec-user", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "get-token",
            "env": [{"name": "VAULT_TOKEN_VALUE", "value": env_value},
                    {"name": "OPAQUE_SETTING", "value": opaque},
                    {"name": "AWS_PROFILE", "value": "default"},
                    {"name": "AWS_REGION", "value": "eu-west-1"}]}}},
        {"name": "file-user", "user": {"tokenFile": "token.txt", "client-key": "client.key"}},
        {"name": "oidc-user", "user": {"auth-provider": {"name": "oidc", "config": {
            "client-id": "kubernetes", "idp-issuer-url": "https://issuer.example.invalid",
            "id-token": fake_jwt(), "refresh-token": refresh, "client-secret": client_secret}}}},
        {"name": "gcp-user", "user": {"auth-provider": {"name": "gcp", "config": {
            "access-token": access, "cmd-path": "/usr/bin/gcloud", "expiry": "2030-01-01T00:00:00Z",
            "custom-credential": "cc-" + fake()}}}},
        {"name": "proxy-user", "user": {
            "token": fake(), "proxy-url": f"http://bob:{proxy_password}@proxy.invalid:3128"}},
    ])
    values = load([path]).secret_values()
    for secret in (env_value, opaque, file_token, access, refresh, client_secret,
                   proxy_password):
        assert secret in values, secret
    assert any(key_body in v for v in values)
    assert any(v.startswith("cc-") for v in values)
    # public settings are not redacted everywhere they appear
    for public in ("kubernetes", "https://issuer.example.invalid", "/usr/bin/gcloud",
                   "get-token", "VAULT_TOKEN_VALUE", "default", "eu-west-1"):
        assert public not in values
    scrub = Scrubber(values)
    out = scrub(f"plugin said {env_value}; file {file_token}; key {key_body}; pw {proxy_password}")
    for secret in (env_value, file_token, key_body, proxy_password):
        assert secret not in out


def test_secret_values_survive_a_missing_token_file(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "kubeconfig.yaml", [
        {"name": "u", "user": {"tokenFile": "does-not-exist", "exec": {"command": "x", "env": None}}},
    ])
    assert load([path]).secret_values() == set()


# --- evidence: Kubernetes objects ------------------------------------------------------------

def _plain_text(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def test_secrets_from_list_calls_are_redacted_model_and_dict() -> None:
    data_value, string_value = _plain_text(fake()), fake()
    listed = k8s.V1SecretList(items=[k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name="db", namespace="app"), type="Opaque",
        data={"password": data_value}, string_data={"extra": string_value})])
    untyped = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="bare"), data={"k": data_value})
    as_dict = {"kind": "SecretList", "items": [{"metadata": {"name": "db"},
                                                "data": {"password": data_value}}]}
    kindless = [{"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                 "data": {"tls.key": data_value}},
                {"metadata": {"name": "release"}, "type": "helm.sh/release.v1",
                 "data": {"release": data_value}}]
    for obj in (listed, untyped, as_dict, kindless, {"nested": {"secret": untyped}}):
        text = ev.to_yaml(obj)
        assert data_value not in text and string_value not in text, text
        assert REDACTED in text
    # names and keys are kept: they are what an auditor needs
    text = ev.to_yaml(listed)
    assert "name: db" in text and "password:" in text and "extra:" in text


def test_other_objects_keep_their_data() -> None:
    config_map = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "value"}}
    assert "k: value" in ev.to_yaml(config_map)
    event = {"type": "Warning", "reason": "Failed", "message": "pull failed"}
    assert ev.to_plain(event) == event
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"),
                    status=k8s.V1PodStatus(phase="Running"))
    assert ev.to_plain(pod) == {"metadata": {"name": "p"}, "status": {"phase": "Running"}}


def test_last_applied_configuration_is_redacted() -> None:
    value = fake()
    applied = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                          "stringData": {"password": value}})
    annotations = {ev.LAST_APPLIED: applied, "team": "platform"}
    for obj in (
        {"kind": "Secret", "metadata": {"name": "s", "annotations": annotations}},
        {"kind": "Deployment", "metadata": {"name": "d", "annotations": annotations}},
        k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="m", annotations=annotations)),
    ):
        plain = ev.to_plain(obj)
        assert plain["metadata"]["annotations"] == {ev.LAST_APPLIED: REDACTED, "team": "platform"}
        assert value not in ev.to_yaml(obj)


def test_evidence_json_and_object_go_through_the_same_cleaning() -> None:
    value = _plain_text(fake())
    secret = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="s"), data={"k": value})
    e = ev.Evidence(Scrubber())
    e.object("listed secret", k8s.V1SecretList(items=[secret]))
    e.json("raw", {"items": [{"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": value}}]})
    for item in e:
        assert value not in item.content, item


# --- printable: what reaches a terminal or a CI log -------------------------------------------

@pytest.mark.parametrize(("raw", "shown"), [
    ("plain text, tabs\tand\nnewlines stay", "plain text, tabs\tand\nnewlines stay"),
    ("\x1b[2Jcleared", "\\x1b[2Jcleared"),                      # erase screen
    ("\x1b]0;pwned\x07title", "\\x1b]0;pwned\\x07title"),      # OSC window title, BEL
    ("\x1b]8;;https://x.invalid\x1b\\link\x1b]8;;\x1b\\",      # OSC 8 hyperlink
     "\\x1b]8;;https://x.invalid\\x1b\\link\\x1b]8;;\\x1b\\"),
    ("ok\rFAILED", "ok\\x0dFAILED"),                            # carriage return rewrites
    ("line one\r\nline two", "line one\nline two"),             # CRLF is a line end
    ("\x1b[31mred\x1b[0m and \x1b[1;38;5;196mbold\x1b[m", "red and bold"),  # colours dropped
    ("\x1b[8mconcealed\x1b[28m", "concealed"),
    ("back\x08\x08\x08", "back\\x08\\x08\\x08"),
    ("nul\x00 vt\x0b ff\x0c del\x7f", "nul\\x00 vt\\x0b ff\\x0c del\\x7f"),
    ("c1 csi\x9b2J nel\x85", "c1 csi\\x9b2J nel\\x85"),
    ("admin\u202egnp.exe", "admin\\u202egnp.exe"),               # bidi override
    ("ünïcödé, 日本語, emoji 🚀", "ünïcödé, 日本語, emoji 🚀"),
    ("", ""),
])
def test_printable(raw: str, shown: str) -> None:
    from fleetcheck.core.scrub import printable

    assert printable(raw) == shown


def test_printable_output_has_no_control_character_but_newline_and_tab() -> None:
    from fleetcheck.core.scrub import printable

    every = "".join(chr(c) for c in [*range(0xa0), 0x202a, 0x202e, 0x2066, 0x2069])
    out = printable(every)
    assert all(c in "\n\t" or (0x20 <= ord(c) < 0x7f) for c in out), repr(out)
    assert printable(out) == out  # once is enough: printing it again changes nothing
